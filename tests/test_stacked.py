"""Trials trained together give each run the records it gets when trained alone."""

import pytest

from bench import records, runner, stacked
from bench.spec import RuntimeOptions, make_spec


def _options(tmp_path, name):
    return RuntimeOptions(output_dir=tmp_path / name, progress=False, threads=1)


def _numbers(outcome):
    out = []
    for rec in records.read_records(outcome.run_dir / records.RESULTS):
        rec.pop("wall_s")
        out.append(rec)
    return out


def _assert_same_records(a, b):
    ra, rb = _numbers(a), _numbers(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] and ra
    for x, y in zip(ra, rb):
        assert x["eval"] == y["eval"]
        assert x["train"] == pytest.approx(y["train"], rel=1e-5, abs=1e-6)
        assert {k: v for k, v in x.items() if k != "train"} == {
            k: v for k, v in y.items() if k != "train"
        }


@pytest.mark.parametrize(
    "overrides", [{}, {"batch_size": 0, "l2": 0.01}], ids=["minibatch", "fullbatch_l2"]
)
def test_stacked_trials_equal_sequential_trials(tmp_path, overrides):
    specs = [
        make_spec(
            "erm",
            "debug",
            test_envs=[env],
            trial_seed=seed,
            size="tiny",
            steps=41,
            overrides=overrides,
        )
        for seed, env in ((0, "e0"), (1, "e0"), (2, "e1"))
    ]
    if overrides:  # full-batch runs stack only with the same test environments
        assert stacked.stack_key(specs[0]) != stacked.stack_key(specs[2])
    else:
        assert len({stacked.stack_key(s) for s in specs}) == 1
    alone = [runner.run(s, _options(tmp_path, "alone")) for s in specs]
    together = stacked.run_stacked(specs, _options(tmp_path, "together"))
    assert [o.run_id for o in together] == [s.run_id for s in specs]
    assert all(o.status == "ok" for o in together)
    for a, b in zip(alone, together):
        _assert_same_records(a, b)
        assert records.read_json(b.run_dir / records.DONE)["step"] == 40


def test_stacked_checkpoint_resumes_alone_to_the_same_records(tmp_path, monkeypatch):
    specs = [
        make_spec("erm", "debug", trial_seed=seed, size="tiny", steps=61) for seed in (0, 1, 2)
    ]
    reference = [runner.run(s, _options(tmp_path, "ref")) for s in specs]

    real_append, calls = records.append_record, []

    def crash_at_step_40(path, record):  # every trial has checkpointed steps 0 and 20
        calls.append(record["step"])
        if len(calls) == 7:
            raise KeyboardInterrupt
        real_append(path, record)

    monkeypatch.setattr(records, "append_record", crash_at_step_40)
    with pytest.raises(KeyboardInterrupt):
        stacked.run_stacked(specs, _options(tmp_path, "crash"))
    monkeypatch.setattr(records, "append_record", real_append)
    # one trial resumes alone, the other two stacked again (their Adam moments re-stacked)
    resumed = [
        runner.run(specs[0], _options(tmp_path, "crash")),
        *stacked.run_stacked(specs[1:], _options(tmp_path, "crash")),
    ]
    for a, b in zip(reference, resumed):
        _assert_same_records(a, b)


def test_done_and_unstackable_runs_go_through_the_runner(tmp_path):
    done = make_spec("erm", "debug", size="tiny", steps=21)
    runner.run(done, _options(tmp_path, "o"))
    other = make_spec("erm", "debug", size="tiny", steps=21, overrides={"mlp_dropout": 0.1})
    outcomes = stacked.run_stacked([done, other], _options(tmp_path, "o"))
    assert [o.status for o in outcomes] == ["skipped", "ok"]


def test_conv_net_with_random_augmentation_stacks_exactly(tmp_path):
    """The vmap path (a 1-D CNN) and per-trial RNG streams for reverse-complement augmentation."""
    from bench.datasets import DATASETS

    if "genomic_toy" not in DATASETS:
        pytest.skip("genomic_toy dataset not registered")
    specs = [
        make_spec("erm", "genomic_toy", trial_seed=seed, size="tiny", steps=6, eval_every=5)
        for seed in (0, 1)
    ]
    assert (
        runner.load_dataset("genomic_toy", None, 0, "tiny").augmentation(
            runner.resolve_hparams(specs[0])
        )
        is not None
    )
    alone = [runner.run(s, _options(tmp_path, "alone")) for s in specs]
    together = stacked.run_stacked(specs, _options(tmp_path, "together"))
    for a, b in zip(alone, together):
        _assert_same_records(a, b)
