"""Selection rules on hand-made records, including DomainBed's worked examples."""

import pytest
from handmade import record, run

from bench.errors import UserError
from bench.selection import dataset_labels, rule_names, select

ENVS3 = ("e0", "e1", "e2")


def only(selected):
    assert len(selected) == 1
    return selected[0]


def test_train_val_domainbed_two_checkpoint_example():
    # DomainBed test_model_selection.TestIIDAccuracySelectionMethod: picks val 0.75, test 0.3.
    recs = [
        record(0, {"e0": (0.1, 0.2), "e1": (0.5, 0.6), "e2": (0.6, 0.7)}),
        record(1, {"e0": (0.3, 0.4), "e1": (0.6, 0.7), "e2": (0.7, 0.8)}),
    ]
    s = only(select([run("erm", ("e0",), 0, 0, recs)], "train_val"))
    assert s.val == pytest.approx(0.75) and s.acc == pytest.approx(0.3)
    assert s.step == 1 and s.train_acc == pytest.approx(0.65)


def test_train_val_picks_best_validation_across_hparams_not_best_test():
    good_val = [record(0, {"e0": (0.7, 0.1), "e1": (0.5, 0.8)})]
    good_test = [record(0, {"e0": (0.9, 0.9), "e1": (0.5, 0.5)})]
    s = only(
        select(
            [run("erm", ("e0",), 0, 0, good_val), run("erm", ("e0",), 0, 1, good_test)], "train_val"
        )
    )
    assert (s.acc, s.hparams_seed, s.n_runs) == (0.7, 0, 2)
    assert s.hparams == {"lr": 0.01}


def test_train_val_early_stops_on_validation():
    recs = [
        record(0, {"e0": (0.2, 0.0), "e1": (0.0, 0.9)}),
        record(5, {"e0": (0.8, 0.0), "e1": (0.0, 0.3)}),
    ]
    assert only(select([run("erm", ("e0",), 0, 0, recs)], "train_val")).step == 0


@pytest.mark.parametrize(
    "first,last,expected",
    [((0.75, 0.70), (0.65, 0.60), (0.60, 0.65)), ((0.75, 0.70), (0.85, 0.80), (0.80, 0.85))],
)
def test_oracle_takes_last_checkpoint(first, last, expected):
    # DomainBed TestOracleSelectionMethod: best-first and best-last runs both report the last
    # checkpoint.
    recs = [record(0, {"e0": first, "e1": (0.5, 0.5)}), record(1, {"e0": last, "e1": (0.5, 0.5)})]
    s = only(select([run("erm", ("e0",), 0, 0, recs)], "oracle"))
    assert (s.val, s.acc) == pytest.approx(expected)


def test_oracle_picks_hparams_by_test_out_accuracy():
    a = run("erm", ("e0",), 0, 0, [record(0, {"e0": (0.9, 0.2), "e1": (0.5, 0.9)})])
    b = run("erm", ("e0",), 0, 1, [record(0, {"e0": (0.4, 0.6), "e1": (0.5, 0.1)})])
    assert only(select([a, b], "oracle")).acc == 0.4


def loo_runs(with_second_pair=True):
    zero = (0.0, 0.0)
    runs = [
        run("erm", ("e0",), 0, 0, [record(0, {"e0": (0.1, 0.0), "e1": zero, "e2": zero})]),
        run("erm", ("e0", "e1"), 0, 0, [record(0, {"e0": zero, "e1": (0.5, 0.0), "e2": zero})]),
    ]
    if with_second_pair:
        runs.append(
            run("erm", ("e0", "e2"), 0, 0, [record(0, {"e0": zero, "e1": zero, "e2": (0.6, 0.0)})])
        )
    return runs


def test_loo_domainbed_example():
    # DomainBed TestLeaveOneOutSelectionMethod: val = mean(0.5, 0.6), test 0.1.
    s = only(select(loo_runs(), "loo"))
    assert s.val == pytest.approx(0.55) and s.acc == pytest.approx(0.1)


def test_loo_missing_pair_is_explicitly_missing():
    s = only(select(loo_runs(with_second_pair=False), "loo"))
    assert s.acc is None and "pair" in s.reason


def test_pair_runs_are_not_cells_of_other_rules():
    assert [s.test_env for s in select(loo_runs(), "train_val")] == ["e0"]


def test_last_reports_default_hparams_run_even_without_validation_data():
    # cmnist_irm style: holdout 0 -> empty out splits, so validation-based rules have nothing to
    # use.
    recs = [
        record(0, {"train": (0.6, None), "test": (0.5, None)}),
        record(9, {"train": (0.8, None), "test": (0.2, None)}),
    ]
    runs = [
        run("erm", ("test",), 0, 0, recs),
        run("erm", ("test",), 0, 1, [record(9, {"train": (0.1, None), "test": (0.9, None)})]),
    ]
    s = only(select(runs, "last"))
    assert (s.acc, s.step, s.hparams_seed, s.train_acc, s.val) == (0.2, 9, 0, 0.8, None)
    missing = only(select(runs, "train_val"))
    assert missing.acc is None and "holdout" in missing.reason


def test_diverged_and_partial_runs_are_counted_never_selected():
    fine = run("erm", ("e0",), 0, 0, [record(0, {"e0": (0.5, 0.5), "e1": (0.5, 0.5)})])
    diverged = run(
        "erm", ("e0",), 0, 1, [record(0, {"e0": (0.9, 0.9), "e1": (0.9, 0.99)})], status="diverged"
    )
    partial = run(
        "erm", ("e0",), 0, 2, [record(0, {"e0": (0.9, 0.9), "e1": (0.9, 0.99)})], status="partial"
    )
    s = only(select([fine, diverged, partial], "train_val"))
    assert (s.acc, s.n_runs, s.n_diverged, s.n_partial) == (0.5, 3, 1, 1)
    lost = only(select([diverged], "oracle"))
    assert lost.acc is None and lost.reason == "no finished run (1 diverged)"


def test_cells_are_separate_per_algorithm_env_and_trial():
    runs = [
        run(a, (e,), t, 0, [record(0, {"e0": (0.1 * t, 0.5), "e1": (0.2, 0.5), "e2": (0.3, 0.5)})])
        for a in ("erm", "irm")
        for e in ENVS3
        for t in (0, 1)
    ]
    chosen = select(runs, "train_val")
    assert len(chosen) == 12
    assert {(s.algorithm, s.test_env, s.trial_seed) for s in chosen} == {
        (a, e, t) for a in ("erm", "irm") for e in ENVS3 for t in (0, 1)
    }


def test_protocols_of_one_dataset_never_mix():
    tiny = run("erm", ("e0",), 0, 0, [record(0, {"e0": (0.1, 0.5), "e1": (0.2, 0.5)})])
    full = run("erm", ("e0",), 0, 0, [record(0, {"e0": (0.9, 0.5), "e1": (0.2, 0.5)})], size="full")
    full = type(full)(
        full.run_id + "-full", *[getattr(full, f) for f in ("spec", "hparams", "records", "status")]
    )
    labels = dataset_labels([tiny, full])
    assert labels[tiny.run_id] != labels[full.run_id] and "size=full" in labels[full.run_id]
    assert sorted(s.acc for s in select([tiny, full], "train_val")) == [0.1, 0.9]


def test_rule_names_validated():
    assert rule_names("train_val,oracle") == ["train_val", "oracle"]
    with pytest.raises(UserError, match="unknown selection rule"):
        rule_names("train_val,best_test")


def test_protocol_with_several_test_envs_gives_a_cell_per_env_and_loo_pairs_extend_it():
    # CDSprites-style: the protocol holds out "val" and "test" together; both are cells.
    accs = {"d0": (0.9, 0.8), "d1": (0.9, 0.6), "val": (0.55, 0.5), "test": (0.45, 0.4)}
    cell = run("erm", ("val", "test"), 0, 0, [record(0, accs)])
    chosen = select([cell], "train_val")
    assert [(s.test_env, s.acc, s.val) for s in chosen] == [
        ("test", 0.45, pytest.approx(0.7)),
        ("val", 0.55, pytest.approx(0.7)),
    ]
    pairs = [
        run("erm", ("d0", "val", "test"), 0, 0, [record(0, {**accs, "d0": (0.7, 0.0)})]),
        run("erm", ("d1", "val", "test"), 0, 0, [record(0, {**accs, "d1": (0.5, 0.0)})]),
    ]
    loo = select([cell, *pairs], "loo")
    assert len(loo) == 2 and all(s.val == pytest.approx(0.6) for s in loo)


def test_val_env_selects_on_the_declared_validation_environment_and_reports_test():
    """CDSprites declares ``val`` (the Fish code's rule): best whole-``val`` checkpoint, then
    ``test``'s in accuracy."""

    def rec(step, val_in, val_out, test_in):
        return {
            "step": step,
            "eval": {
                "d0": {"in": {"acc": 0.9, "n": 80}, "out": {"acc": 0.9, "n": 20}},
                "val": {"in": {"acc": val_in, "n": 80}, "out": {"acc": val_out, "n": 20}},
                "test": {"in": {"acc": test_in, "n": 80}, "out": {"acc": 0.5, "n": 20}},
            },
        }

    runs = [
        run(
            "fish",
            ("val", "test"),
            0,
            0,
            [rec(0, 0.6, 0.6, 0.61), rec(5, 0.8, 0.4, 0.72), rec(9, 0.7, 0.7, 0.55)],
            dataset="cdsprites_n2",
        ),
        run(
            "fish",
            ("val", "test"),
            0,
            1,
            [rec(0, 0.5, 0.5, 0.50), rec(5, 0.5, 0.5, 0.99), rec(9, 0.5, 0.5, 0.50)],
            dataset="cdsprites_n2",
        ),
    ]
    chosen = {s.test_env: s for s in select(runs, "val_env")}
    assert (
        chosen["test"].acc == 0.72 and chosen["test"].step == 5 and chosen["test"].hparams_seed == 0
    )
    assert chosen["test"].val == pytest.approx(
        0.8 * 0.8 + 0.4 * 0.2
    )  # whole-environment accuracy, weighted by n
    assert chosen["val"].acc is None and "validation environment" in chosen["val"].reason
    assert all(
        s.acc is None
        for s in select([run("erm", ("test",), 0, 0, [rec(0, 0.6, 0.6, 0.6)])], "val_env")
    )


def test_selection_reads_the_metric_recorded_with_the_records():
    """GUE records say ``metric: mcc``: the checkpoint and the reported value are MCC, not
    accuracy."""

    def rec(step, val_acc, val_mcc, test_mcc):
        return {
            "step": step,
            "metric": "mcc",
            "eval": {
                "d0": {
                    "in": {"acc": 0.9, "mcc": 0.8, "n": 80},
                    "out": {"acc": val_acc, "mcc": val_mcc, "n": 20},
                },
                "test": {
                    "in": {"acc": 0.5, "mcc": test_mcc, "n": 80},
                    "out": {"acc": 0.5, "mcc": 0.0, "n": 20},
                },
            },
        }

    runs = [run("erm", ("test",), 0, 0, [rec(0, 0.9, 0.1, 0.11), rec(5, 0.6, 0.4, 0.33)])]
    [chosen] = select(runs, "train_val")
    assert (chosen.step, chosen.acc, chosen.val) == (5, 0.33, 0.4)


def test_a_val_env_board_reports_test_alone_not_the_validation_environment():
    """Under ``val_env`` the validation environment picks the checkpoint and gets no value, so it
    is no column of the board (nor part of an Avg that would then always be missing)."""
    from bench.report import build_report, cells, dataset_table

    def rec(step, val, test):
        env = {"in": {"acc": 0.9, "n": 80}, "out": {"acc": 0.9, "n": 20}}
        return {
            "step": step,
            "eval": {
                "d0": env,
                "val": {"in": {"acc": val, "n": 80}, "out": {"acc": val, "n": 20}},
                "test": {"in": {"acc": test, "n": 80}, "out": {"acc": 0.5, "n": 20}},
            },
        }

    runs = [
        run(
            "erm",
            ("val", "test"),
            t,
            0,
            [rec(0, 0.6, 0.5), rec(5, 0.8, 0.7)],
            dataset="cdsprites_n2",
        )
        for t in (0, 1)
    ]
    table = cells(build_report(runs, ["val_env", "oracle"]), "cdsprites_n2", "val_env")
    assert list(table) == ["test"]
    assert table["test"]["erm"].values == {0: 0.7, 1: 0.7}
    both = cells(build_report(runs, ["val_env", "oracle"]), "cdsprites_n2", "oracle")
    assert {"val", "test", "Avg"} <= set(both)  # other rules keep every test environment
    rendered = dataset_table(build_report(runs, ["val_env"]), "cdsprites_n2", "val_env")
    assert not any("Missing" in note for note in rendered.notes)  # val is not missing, it selects
