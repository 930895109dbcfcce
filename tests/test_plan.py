"""Plan before spending: ``--dry-run`` lists the runs, what each rule reads, and the time."""

from __future__ import annotations

import json

import pytest

from bench import cli, plan
from bench.spec import RuntimeOptions, make_spec

SWEEP = [
    "sweep",
    "--algorithms",
    "erm,irm",
    "--datasets",
    "debug",
    "--test-envs",
    "e0",
    "--n-trials",
    "2",
    "--size",
    "tiny",
    "--steps",
    "30",
    "--jobs",
    "2",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.slow  # trains for several seconds; the fast subset leaves it out
def test_dry_run_plans_estimates_and_trains_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert cli.main([*SWEEP, "--dry-run", "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert (
        "would train 4 of 4 runs" in text
        and "erm on debug: 2" in text
        and "irm on debug: 2" in text
    )
    assert "train_val: every run's training envs' held-out splits (4 of 4 runs have one)" in text
    assert "estimate: " in text and "2 job(s) x" in text
    assert not (out / "runs").exists()

    def no_calibration(*_):
        raise AssertionError("a cached protocol is not measured again")

    monkeypatch.setattr(plan, "_calibrate", no_calibration)
    assert cli.main([*SWEEP, "--dry-run", "--output-dir", str(out)]) == 0
    assert "estimate: " in capsys.readouterr().out
    assert (
        cli.main([*SWEEP, "--output-dir", str(out)]) == 0
    )  # a real sweep: the estimate comes first
    assert capsys.readouterr().out.splitlines()[0].startswith("estimate: ")


def test_estimate_is_steps_times_step_time_plus_records_times_eval_time_over_jobs(tmp_path):
    specs = [
        make_spec("erm", "debug", size="tiny", steps=101, eval_every=50, trial_seed=t)
        for t in (0, 1)
    ]
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    key = plan.protocol_key(specs[0], 1)
    cache = {key: {"step_s": 0.01, "eval_s": 0.5, "setup_s": 2.0}}
    plan._cache_file().parent.mkdir(parents=True)
    plan._cache_file().write_text(json.dumps(cache))
    per_run = 2.0 + 101 * 0.01 + 3 * 0.5  # records at steps 0, 50, 100
    assert plan.estimate_s(specs, options, jobs=2, measure=False) == pytest.approx(per_run)
    assert plan.estimate_s(specs, options, jobs=1, measure=False) == pytest.approx(2 * per_run)
    other = make_spec("irm", "debug", size="tiny")
    assert plan.estimate_s([other], options, jobs=1, measure=False) is None  # not calibrated


def test_rule_lines_say_what_each_rule_needs():
    specs = [make_spec("erm", "debug", size="tiny", hparams_seed=h) for h in (0, 1)]
    assert plan.rule_needs("last", specs) == "last: the 1 default-hparams runs (hparams seed 0)"
    assert "sweep with --test-envs pairs" in plan.rule_needs("loo", specs)
    cds = [make_spec("erm", "cdsprites_n2", size="tiny")]
    assert plan.rule_needs("val_env", cds).endswith("(1 here)")
