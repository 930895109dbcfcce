"""Plan before spending: ``--dry-run`` lists the runs, what each rule reads, and the time."""

from __future__ import annotations

import json

import pytest
import torch

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
    monkeypatch.setattr(plan, "_FAILED", {})


def test_the_plan_lists_runs_that_do_not_fit_and_estimates_the_rest(tmp_path, capsys, monkeypatch):
    from bench.errors import OutOfMemory

    def calibrate(spec, options, steps_only=False):
        if spec.algorithm == "irm":
            raise OutOfMemory("out of memory in irm on debug: one allocation of 9.3 GiB failed")
        return {"step_s": 0.01, "eval_s": 0.5, "setup_s": 2.0, "load": 0.5}

    monkeypatch.setattr(plan, "_calibrate", calibrate)
    out = tmp_path / "out"
    assert cli.main([*SWEEP, "--dry-run", "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "timing 2 protocol(s) first" in text
    erm = make_spec("erm", "debug", test_envs=["e0"], size="tiny", steps=30)
    per_run = 2.0 + 30 * 0.01 + len(erm.record_steps) * 0.5
    assert f"  erm on debug: 2, {plan.format_duration(2 * per_run)} one after another" in text
    assert "  irm on debug: 2, do not fit: out of memory in irm on debug: one allocation" in text
    assert f"estimate: {plan.format_duration(per_run)} for 2 run(s), 2 job(s)" in text
    assert "; 2 run(s) that do not fit in memory left out" in text
    assert "load average up to 0.5" in text
    cached = json.loads(plan._cache_file().read_text())
    assert plan.protocol_key(erm, 1) in cached
    assert not [k for k in cached if '"irm"' in k]  # not the failure: memory varies


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


def _fake_step_times(step_s: dict[str, float]):
    """_calibrate stand-in: seconds per step by precision, counting the calls."""
    calls = []

    def calibrate(spec, options, steps_only=False):
        calls.append((spec.precision, steps_only))
        return {"step_s": step_s[spec.precision or "fp32"], "load": 0.0}

    return calibrate, calls


def test_precision_advice_on_native_hardware_states_the_measured_step_speed_ups(
    tmp_path, monkeypatch
):
    calibrate, calls = _fake_step_times({"fp32": 1.0, "bf16": 0.25, "fp32-onednn": 0.5})
    monkeypatch.setattr(plan, "_calibrate", calibrate)
    monkeypatch.setattr(plan, "native_bf16", lambda device: "AMX")
    specs = [make_spec("erm", "debug", size="tiny", steps=120, trial_seed=t) for t in (0, 1)]
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    assert plan.precision_advice(specs, options, measure=False) is None  # nothing cached or timed
    line = plan.precision_advice(specs, options, measure=True)
    assert line.startswith(
        "faster here: --precision bf16 would train 4.0x faster "
        "(1 min 00 s of training steps instead of 4 min 00 s; native bf16, AMX)"
    )
    assert "--precision fp32-onednn would train 2.0x faster" in line
    assert "2 min 00 s of training steps instead of 4 min 00 s" in line
    assert sorted(calls) == [("bf16", True), ("fp32", True), ("fp32-onednn", True)]  # once each
    assert plan.precision_advice(specs, options, measure=True) == line  # cached: not timed again
    assert len(calls) == 3


def test_precision_advice_names_only_what_is_faster_and_warns_where_bf16_is_emulated(
    tmp_path, monkeypatch
):
    calibrate, calls = _fake_step_times({"fp32": 1.0, "bf16": 3.0, "fp32-onednn": 0.95})
    monkeypatch.setattr(plan, "_calibrate", calibrate)
    monkeypatch.setattr(plan, "native_bf16", lambda device: None)
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    fp32 = make_spec("erm", "debug", size="tiny", steps=120)
    bf16 = make_spec("erm", "debug", size="tiny", steps=120, precision="bf16")
    # bf16 is never offered where emulated; oneDNN, 5% faster, is within timing noise
    assert plan.precision_advice([fp32], options, measure=True) is None
    assert ("bf16", True) not in calls
    assert "bf16 is emulated on this CPU" in plan.precision_advice([bf16], options, measure=True)
    monkeypatch.setattr(plan, "native_bf16", lambda device: "AVX512_BF16")
    assert plan.precision_advice([bf16], options, measure=True) is None  # bf16 already, and fast
    assert ("bf16", True) not in calls


def test_a_short_run_prints_no_precision_advice_and_times_nothing(tmp_path, capsys, monkeypatch):
    def no_calibration(*_args, **_kwargs):
        raise AssertionError("a run shorter than ADVICE_MIN_STEPS is not worth timing both ways")

    monkeypatch.setattr(plan, "_calibrate", no_calibration)
    monkeypatch.setattr(plan, "native_bf16", lambda device: "AMX")
    argv = ["run", "--algorithm", "erm", "--dataset", "debug", "--size", "tiny", "--steps", "3"]
    assert cli.main([*argv, "--output-dir", str(tmp_path), "--no-progress"]) == 0
    assert "--precision" not in capsys.readouterr().out


def test_calibration_times_steps_in_the_spec_precision(tmp_path, monkeypatch):
    from bench.algorithms.erm import ERM

    seen = []
    update = ERM.update

    def recording_update(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return update(self, *args, **kwargs)

    monkeypatch.setattr(ERM, "update", recording_update)
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    for precision in ("fp32", "bf16"):
        spec = make_spec("erm", "debug", size="tiny", steps=20, precision=precision)
        plan._calibrate(spec, options, steps_only=True)
    n = plan.CALIBRATION_STEPS + 1
    assert seen == [False] * n + [True] * n


def test_the_plan_states_the_load_its_calibrations_were_timed_under(tmp_path):
    specs = [make_spec(a, "debug", size="tiny", steps=20) for a in ("erm", "irm")]
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    keys = [plan.protocol_key(s, 1) for s in specs]
    entry = {"step_s": 0.01, "eval_s": 0.5, "setup_s": 2.0}
    plan._cache_file().parent.mkdir(parents=True)
    cache = {keys[0]: {**entry, "load": 3.5}, keys[1]: {**entry, "load": 1.0}}
    plan._cache_file().write_text(json.dumps(cache))
    assert plan.calibration_load(specs, options) == 3.5  # the busiest one
    plan._cache_file().write_text(json.dumps({keys[0]: {**entry, "load": 3.5}, keys[1]: entry}))
    assert plan.calibration_load(specs, options) is None  # unknown for one: no claim


def test_a_calibration_timed_on_a_busier_machine_is_timed_again(tmp_path, capsys, monkeypatch):
    timed = []

    def calibrate(spec, options, steps_only=False):
        timed.append(spec.algorithm)
        return {"step_s": 0.01, "eval_s": 0.5, "setup_s": 2.0, "load": 0.3}

    monkeypatch.setattr(plan, "_calibrate", calibrate)
    monkeypatch.setattr(plan.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    specs = [make_spec(a, "debug", size="tiny", steps=20) for a in ("erm", "irm")]
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    keys = [plan.protocol_key(s, 1) for s in specs]
    busy = {"step_s": 0.04, "eval_s": 2.0, "setup_s": 8.0}  # inflated by a sweep beside it
    plan._cache_file().parent.mkdir(parents=True)
    plan._cache_file().write_text(json.dumps({keys[0]: {**busy, "load": 3.5}, keys[1]: busy}))
    assert plan.missing_calibrations(specs, options) == 2  # one busier, one load unknown
    stale = plan.estimate_s(specs, options, jobs=1, measure=False)  # a real sweep's first line
    fresh = plan.estimate_s(specs, options, jobs=1, measure=True)  # a dry run times again
    assert sorted(timed) == ["erm", "irm"] and fresh == pytest.approx(stale / 4)
    assert plan.missing_calibrations(specs, options) == 0
    monkeypatch.setattr(plan.os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # busier now: kept
    assert plan.estimate_s(specs, options, jobs=1, measure=True) == fresh and len(timed) == 2


def test_a_precision_that_does_not_fit_is_not_offered_and_the_others_still_are(
    tmp_path, monkeypatch
):
    from bench.errors import OutOfMemory

    def calibrate(spec, options, steps_only=False):
        if spec.precision == "bf16":
            raise OutOfMemory("out of memory in erm on debug: one allocation of 1.0 GiB failed")
        return {"step_s": {"fp32": 1.0, "fp32-onednn": 0.5}[spec.precision], "load": 0.0}

    monkeypatch.setattr(plan, "_calibrate", calibrate)
    monkeypatch.setattr(plan, "native_bf16", lambda device: "AMX")
    spec = make_spec("erm", "debug", size="tiny", steps=120)
    line = plan.precision_advice([spec], RuntimeOptions(output_dir=tmp_path, threads=1), True)
    assert line.startswith("faster here: --precision fp32-onednn would train 2.0x faster")
    assert "bf16" not in line


def test_a_worker_start_up_is_timed_once_per_cpu_then_read_from_the_cache(monkeypatch):
    started = []
    monkeypatch.setattr(plan.subprocess, "run", lambda *a, **k: started.append(a[0]))
    assert plan.worker_start_s(measure=False) == 0.0 and not started  # not measured yet
    first = plan.worker_start_s(measure=True)
    assert first > 0.0 and len(started) == 1 and "import bench.launchers" in started[0]
    assert plan.worker_start_s(measure=True) == first and len(started) == 1
