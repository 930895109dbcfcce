"""Aggregation, statistics, tables and the leaderboard, from hand-made runs (golden markdown)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from handmade import record, run, write_run_dir
from scipy import stats

from bench import cli, leaderboard, report_diagnostics
from bench.report import (
    Cell,
    build_report,
    cells,
    dataset_table,
    mean_ranks,
    render_tables,
    summary_table,
)
from bench.report_files import load_runs, selected_rows

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
TOY = ("e0", "e1", "e2")
IRM_ENVS = ("train_0.2", "train_0.1", "test")


def toy_accs(gen, test_env, boost, envs=TOY):
    """Checkpoints whose validation and test accuracies are seeded draws; ``boost`` lifts the test
    env."""
    recs = []
    for step in (0, 5, 9):
        accs = {
            e: (round(float(gen.uniform(0.5, 0.9)), 3), round(float(gen.uniform(0.5, 0.9)), 3))
            for e in envs
        }
        accs[test_env] = (
            round(float(gen.uniform(0.3, 0.5)) + boost, 3),
            round(float(gen.uniform(0.3, 0.5)) + boost, 3),
        )
        recs.append(record(step, accs))
    return recs


def golden_runs():
    """Three algorithms on a 3-env toy (LOO pairs for erm only, a diverged and a partial run) and a
    cmnist_irm-like protocol."""
    gen = np.random.default_rng(0)
    runs = []
    for alg, boost in (("erm", 0.0), ("irm", 0.15), ("vrex", 0.02)):
        for trial in range(3):
            for test in TOY:
                for h in range(2):
                    status = (
                        "diverged"
                        if (alg, trial, test) == ("irm", 2, "e2")
                        else "partial"
                        if (alg, trial, test, h) == ("vrex", 1, "e1", 1)
                        else "ok"
                    )
                    runs.append(
                        run(alg, (test,), trial, h, toy_accs(gen, test, boost), status=status)
                    )
                    if alg == "erm":
                        for other in TOY:
                            if other != test and test < other:
                                pair = tuple(e for e in TOY if e in (test, other))
                                runs.append(run(alg, pair, trial, h, toy_accs(gen, test, 0.0)))
    for alg, boost in (("erm", -0.2), ("irm", 0.2)):
        for trial in range(3):
            recs = [
                record(
                    s,
                    {
                        "train_0.2": (0.8 - boost / 4, None),
                        "train_0.1": (0.85 - boost / 4, None),
                        "test": (0.3 + boost + 0.01 * trial + 0.0001 * s, None),
                    },
                )
                for s in (0, 250, 500)
            ]
            runs.append(
                run(
                    alg,
                    ("test",),
                    trial,
                    0,
                    recs,
                    dataset="cmnist_irm",
                    holdout_fraction=0.0,
                    steps=501,
                    eval_every=250,
                    size="full",
                )
            )
    return runs


def test_golden_leaderboard_markdown():
    rep = build_report(golden_runs(), ["train_val", "loo", "oracle", "last"])
    text = leaderboard.markdown(
        rep,
        "GOLDEN-COMMIT",
        "python -m bench leaderboard --runs RUNS --out OUT --selection train_val,loo,oracle,last",
        "Golden leaderboard",
    )
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "leaderboard markdown changed; if intended, regenerate with BENCH_UPDATE_GOLDEN=1"
    )


def test_leaderboard_shows_missing_diverged_published_and_commands():
    rep = build_report(golden_runs(), ["train_val", "loo", "last"])
    text = leaderboard.markdown(rep, "C0MM1T", "CMD")
    assert "C0MM1T" in text and "\nCMD\n" in text
    assert "python -m bench sweep --algorithms erm" in text  # recorded as `run`: today's syntax
    assert "(2/3)" in text  # irm's e2 lost trial 2 to divergence
    published = [
        line
        for line in text.splitlines()
        if line.startswith("| ERM (published: Arjovsky et al. 2019")
    ]
    assert len(published) == 1 and "87.4 ± 0.2" in published[0] and "17.1 ± 0.6" in published[0]
    assert "missing leave-one-out pair run(s)" in text
    assert "Selected hyperparameters" in text and "lr=0.001" in text


def test_cell_statistics_and_format():
    values = {0: 0.70, 1: 0.74, 2: 0.75}
    cell = Cell(values, expected=3)
    s = cell.summary()
    v = np.array(list(values.values()))
    assert s["mean"] == pytest.approx(v.mean()) and s["std"] == pytest.approx(v.std(ddof=1))
    assert s["se"] == pytest.approx(stats.sem(v))
    lo, hi = stats.t.interval(0.95, 2, loc=v.mean(), scale=stats.sem(v))
    assert (s["ci_lo"], s["ci_hi"]) == pytest.approx((lo, hi))
    assert cell.format() == "73.0 ± 2.6 (3)"
    assert cell.format("se") == "73.0 ± 1.5 (3)"
    assert cell.format(ci=True).endswith(f"[{100 * lo:.1f}, {100 * hi:.1f}]")
    assert Cell({0: 0.5, 2: 0.7}, expected=3).format() == "60.0 ± 14.1 (2/3)"
    assert Cell({0: 0.5}, expected=3).format() == "50.0 (1/3)"
    assert Cell({}, expected=3).format() == "– (0/3)"


def test_paired_test_flags_consistent_improvement_only():
    def runs_with(gap_by_trial):
        out = []
        for trial, gap in enumerate(gap_by_trial):
            for alg, acc in (("erm", 0.5 + 0.05 * trial), ("irm", 0.5 + 0.05 * trial + gap)):
                out.append(
                    run(alg, ("e0",), trial, 0, [record(0, {"e0": (acc, 0.5), "e1": (0.9, 0.9)})])
                )
        return out

    flagged = dataset_table(build_report(runs_with([0.10, 0.11, 0.12, 0.10])), "toy", "train_val")
    assert flagged.rows[1][2].endswith("*") and not flagged.rows[0][2].endswith("*")
    noisy = dataset_table(build_report(runs_with([0.05, -0.04, 0.03, -0.05])), "toy", "train_val")
    assert not noisy.rows[1][2].endswith("*")


def test_average_column_uses_trials_complete_in_every_env_and_ranks():
    rep = build_report(golden_runs(), ["train_val"])
    table = cells(rep, "toy", "train_val")
    assert list(table) == ["e0", "e1", "e2", "Avg", "Worst"]
    assert table["Worst"]["erm"].values[0] == pytest.approx(
        min(table[e]["erm"].values[0] for e in ("e0", "e1", "e2"))
    )
    irm = table["Avg"]["irm"]
    assert sorted(irm.values) == [0, 1]  # trial 2 of e2 diverged
    assert irm.values[0] == pytest.approx(np.mean([table[e]["irm"].values[0] for e in TOY]))
    ranks = mean_ranks(table)
    assert ranks["irm"] == 1.0 and set(ranks) == {"erm", "irm", "vrex"}
    row = dataset_table(rep, "toy", "train_val").rows[1]
    assert (
        row[0] == "irm" and row[-1] == "2 / 0 / 0"
    )  # both hparams samples of the lost cell trial diverged
    assert (
        dataset_table(rep, "toy", "train_val").rows[2][-1] == "0 / 1 / 0"
    )  # vrex's unfinished run


def test_summary_and_formats():
    rep = build_report(golden_runs(), ["train_val", "last"])
    summary = summary_table(rep, "last")
    assert summary.headers == ["algorithm", "cmnist_irm", "toy", "rank"]
    assert "\\begin{tabular}" in render_tables(rep, "latex")
    assert "| algorithm" in render_tables(rep, "markdown")
    plain = render_tables(rep, "plain")
    assert "summary — train_val" in plain and "toy — last" in plain


def test_runs_round_trip_through_disk_and_cli(tmp_path, capsys):
    runs = golden_runs()
    for r in runs:
        write_run_dir(tmp_path / "out", r)
    loaded = load_runs(tmp_path / "out")
    assert sorted(r.run_id for r in loaded) == sorted(r.run_id for r in runs)
    assert {r.run_id: r.status for r in loaded} == {r.run_id: r.status for r in runs}
    assert selected_rows(build_report(loaded)) == selected_rows(build_report(runs))

    assert (
        cli.main(
            [
                "leaderboard",
                "--runs",
                str(tmp_path / "out"),
                "--out",
                str(tmp_path / "lb"),
                "--selection",
                "train_val,last",
            ]
        )
        == 0
    )
    page = (tmp_path / "lb" / "README.md").read_text()
    assert "## toy" in page and "## cmnist_irm" in page
    assert "--selection train_val,last" in page
    rows = json.loads((tmp_path / "lb" / "selected.json").read_text())
    assert {r["rule"] for r in rows} == {"train_val", "last"}
    assert (tmp_path / "lb" / "selected.csv").read_text().count("\n") == len(rows) + 1
    assert (tmp_path / "lb" / "toy_train_val_train_test.png").stat().st_size > 1000
    assert cli.main(["leaderboard", "--runs", str(tmp_path / "nothing")]) == 2


def test_accuracy_vs_number_of_domains_figure(tmp_path):
    runs = [
        run(
            a,
            ("test",),
            t,
            0,
            [record(0, {"d0": (0.9, 0.9), "test": (0.5 + 0.05 * n, 0.5)})],
            dataset=f"shapes_n{n}",
        )
        for a in ("erm", "irm")
        for t in (0, 1)
        for n in (2, 5, 10)
    ]
    assert build_report(runs).datasets == [
        "shapes_n2",
        "shapes_n5",
        "shapes_n10",
    ]  # natural order in tables
    files = leaderboard.plot(build_report(runs), tmp_path, "train_val")
    assert files["domains"] == "domains_train_val.png" and (tmp_path / files["domains"]).exists()


def test_grad_cos_diagnostic_table_and_figure_follow_the_selected_runs(tmp_path):
    """The diagnostic section averages train.grad_cos over the runs selection picked, per record
    step."""

    def rec(step, cos, acc):
        return {**record(step, {"e0": (0.8, acc), "test": (0.5, 0.5)}), "train": {"grad_cos": cos}}

    runs = []
    for trial in (0, 1):
        runs.append(
            run("erm", ("test",), trial, 0, [rec(s, 0.1 + 0.1 * trial, 0.8) for s in (0, 5, 9)])
        )
        runs.append(
            run(
                "fish", ("test",), trial, 0, [rec(s, 0.1 * s + 0.1 * trial, 0.9) for s in (0, 5, 9)]
            )
        )
        # a worse hparams sample whose (different) diagnostic must not enter the table
        runs.append(run("fish", ("test",), trial, 1, [rec(s, -1.0, 0.6) for s in (0, 5, 9)]))
    rep = build_report(runs, ["train_val"])
    table = report_diagnostics.diagnostic_table(rep, "toy", "train_val")
    assert table.headers == ["algorithm", "step 0", "step 5", "step 9"]
    assert table.rows == [
        ["erm", "+0.15 ± 0.07 (2)", "+0.15 ± 0.07 (2)", "+0.15 ± 0.07 (2)"],
        ["fish", "+0.05 ± 0.07 (2)", "+0.55 ± 0.07 (2)", "+0.95 ± 0.07 (2)"],
    ]
    files = leaderboard.plot(rep, tmp_path, "train_val")
    assert (tmp_path / files["grad_cos:toy"]).stat().st_size > 1000
    page = leaderboard.markdown(rep, "c", "cmd", figures=files)
    assert (
        "### Training diagnostic: `grad_cos`" in page
        and "+0.95 ± 0.07 (2) |" in page
        and files["grad_cos:toy"] in page
    )
    assert (
        report_diagnostics.diagnostic_table(
            build_report(golden_runs(), ["train_val"]), "toy", "train_val"
        )
        is None
    )


def test_grad_cos_counts_a_run_holding_out_two_test_envs_once():
    recs = [
        {
            **record(s, {"e0": (0.8, 0.8), "val": (0.5, 0.5), "test": (0.5, 0.5)}),
            "train": {"grad_cos": 0.1 * t},
        }
        for t in (1, 3)
        for s in (0, 9)
    ]
    runs = [
        run("erm", ("val", "test"), t, 0, recs[2 * i : 2 * i + 2]) for i, t in enumerate((0, 1))
    ]
    table = report_diagnostics.diagnostic_table(
        build_report(runs, ["train_val"]), "toy", "train_val"
    )
    assert table.rows == [["erm", "+0.20 ± 0.14 (2)", "+0.20 ± 0.14 (2)"]]


def _cmnist_m90_runs(steps: int) -> list:
    """ERM and IRM, 2 trials, on DomainBed's cmnist at ``steps`` (5001 = DomainBed's protocol)."""
    accs = {"+90%": (0.7, 0.7), "+80%": (0.7, 0.7), "-90%": (0.1, 0.1)}
    return [
        run(
            a,
            ("-90%",),
            t,
            0,
            [record(0, accs)],
            dataset="cmnist",
            size="full",
            steps=steps,
            eval_every=100,
        )
        for a in ("erm", "irm")
        for t in (0, 1)
    ]


def test_published_rows_only_where_they_have_a_value_in_the_table():
    """DomainBed's cmnist train_val rows: ERM has a -90% value, IRM only an Avg, which a -90%-only
    table lacks."""
    runs = _cmnist_m90_runs(steps=5001)
    page = leaderboard.markdown(build_report(runs, ["train_val"]), "c", "cmd")
    assert "ERM (published: Gulrajani" in page and "| 10.0 " in page
    assert "IRM (published: Gulrajani" not in page


def test_published_rows_are_hidden_beside_another_protocol_and_the_difference_is_named():
    """DomainBed's 5001-step numbers never sit beside a reduced-budget or tiny run."""
    runs = _cmnist_m90_runs(steps=500)
    page = leaderboard.markdown(build_report(runs, ["train_val"]), "c", "cmd")
    assert "(published: Gulrajani" not in page
    assert "their protocol differs (steps 5001 vs 500)" in page


def test_holm_adjustment_by_hand():
    from bench.statistics import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([]) == []


def test_stars_use_holm_adjusted_p_values_and_both_are_in_selected_rows():
    rules = ["train_val", "oracle", "last"]
    rep = build_report(golden_runs(), rules)
    found = [
        (rule, col, a, c)
        for rule in rules
        for col, column in cells(rep, "toy", rule).items()
        for a, c in column.items()
        if c.p_raw is not None and c.p_raw < 0.05 <= c.p_vs_baseline
    ]
    assert found, (
        "the golden runs should hold a cell significant alone but not after correcting "
        "for its table"
    )
    rule, col, a, cell = found[0]
    assert cell.format().endswith(")") and cell.p_vs_baseline > cell.p_raw
    if col not in ("Avg", "Worst"):
        row = next(
            r
            for r in selected_rows(rep)
            if (r["rule"], r["algorithm"], r["test_env"]) == (rule, a, col)
        )
        assert row["p_vs_erm"] == cell.p_raw and row["p_vs_erm_holm"] == cell.p_vs_baseline


def test_protocol_card_is_recorded_with_each_run_and_printed_on_the_board(tmp_path):
    from bench import records as rec
    from bench import runner
    from bench.spec import RuntimeOptions, make_spec

    spec = make_spec("erm", "cmnist_irm_gray", size="tiny", steps=2)
    outcome = runner.run(spec, RuntimeOptions(output_dir=tmp_path, progress=False, threads=1))
    card = rec.read_json(outcome.run_dir / rec.SPEC)["protocol"]
    assert (
        card["reference"].startswith("IRM paper")
        and card["selection"] == ["last"]
        and card["batch_size"] == "full environment"
    )
    assert card["input"] == "1x14x14" and card["metric"] == "acc" and card["steps"] == 2
    page = leaderboard.markdown(build_report(load_runs(tmp_path), ["last"]), "c", "cmd")
    assert "**Protocol**: task DG; reference IRM paper" in page


def test_tables_state_the_chance_level_of_each_test_environment(tmp_path):
    """Read from the records' confusion counts: what a constant predictor would score."""
    from bench import runner
    from bench.spec import RuntimeOptions, make_spec

    options = RuntimeOptions(output_dir=tmp_path, progress=False, threads=1)
    for env in ("e0", "e1"):
        runner.run(make_spec("erm", "debug", test_envs=[env], size="tiny", steps=2), options)
    rep = build_report(load_runs(tmp_path), ["oracle"])
    [note] = [n for n in dataset_table(rep, "debug", "oracle").notes if n.startswith("Chance")]
    run = next(r for r in rep.runs if r.spec["test_envs"] == ["e0"])
    counts = {}
    for true, _, count in run.records[0]["eval"]["e0"]["in"]["confusion"]:
        counts[true] = counts.get(true, 0) + count
    assert f"e0 {100 * max(counts.values()) / sum(counts.values()):.1f}%" in note and "e1 " in note
