import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import records, runner, sampling
from bench.spec import RuntimeOptions, make_spec

REPO = Path(__file__).resolve().parents[1]


def _options(tmp_path, name="out"):
    return RuntimeOptions(output_dir=tmp_path / name, progress=False, threads=1)


def _numbers(path):
    """Records without wall time (the only field that may differ between identical runs)."""
    out = []
    for rec in records.read_records(path):
        rec.pop("wall_s")
        out.append(rec)
    return out


def test_run_records_every_env_by_name_and_is_reproducible(tmp_path):
    spec = make_spec("erm", "debug", test_envs=["e2"], size="tiny", steps=41)
    a = runner.run(
        spec,
        RuntimeOptions(output_dir=tmp_path / "a", progress=False, threads=1, eval_splits="all"),
    )
    b = runner.run(
        spec,
        RuntimeOptions(output_dir=tmp_path / "b", progress=False, threads=1, eval_splits="all"),
    )
    assert a.status == b.status == "ok"
    recs = records.read_records(a.run_dir / "results.jsonl")
    assert [r["step"] for r in recs] == [0, 20, 40]
    assert set(recs[-1]["eval"]) == {"e0", "e1", "e2"}
    assert recs[-1]["eval"]["e0"]["in"]["n"] == 80 and recs[-1]["eval"]["e0"]["out"]["n"] == 20
    assert recs[-1]["eval"]["e0"]["in"]["acc"] > 0.75, "ERM learns the linear debug signal"
    assert _numbers(a.run_dir / "results.jsonl") == _numbers(b.run_dir / "results.jsonl")
    info = json.loads((a.run_dir / "spec.json").read_text())
    assert (
        info["run_id"] == spec.run_id
        and info["hparams"]["batch_size"] == 32
        and info["meta"]["torch"] == torch.__version__
    )
    assert json.loads((a.run_dir / "done").read_text())["status"] == "ok"


def test_finished_run_is_skipped(tmp_path):
    spec = make_spec("erm", "debug", size="tiny", steps=5)
    first = runner.run(spec, _options(tmp_path))
    mtime = (first.run_dir / "results.jsonl").stat().st_mtime_ns
    second = runner.run(spec, _options(tmp_path))
    assert second.status == "skipped" and second.last_record == first.last_record
    assert (first.run_dir / "results.jsonl").stat().st_mtime_ns == mtime


def test_spec_hash_changes_with_results_relevant_fields_only():
    base = make_spec("erm", "debug", size="tiny")
    assert base.run_id == make_spec("erm", "debug", size="tiny").run_id
    for other in (
        make_spec("erm", "debug", size="tiny", trial_seed=1),
        make_spec("erm", "debug", size="tiny", overrides={"lr": 0.01}),
        make_spec("erm", "debug", size="tiny", test_envs=["e1"]),
    ):
        assert other.run_id != base.run_id


def test_minibatches_are_a_pure_function_of_seed_env_step():
    a = sampling.MinibatchSampler(100, 32, 0, "e0")
    b = sampling.MinibatchSampler(100, 32, 0, "e0")
    forward = [a.indices(t) for t in range(10)]
    assert all(torch.equal(b.indices(t), forward[t]) for t in reversed(range(10)))
    epoch0 = torch.cat([a.indices(t) for t in range(3)])[:96]
    assert len(set(epoch0.tolist())) == 96, "sampling is without replacement within an epoch"
    assert not torch.equal(sampling.MinibatchSampler(100, 32, 1, "e0").indices(0), forward[0])
    assert sampling.MinibatchSampler(100, 0, 0, "e0").indices(5) is None  # full batch


def test_nonfinite_loss_ends_run_as_diverged(tmp_path):
    import tests.plugins.slow_erm  # noqa: F401  (registers nan_erm)

    out = runner.run(
        make_spec("nan_erm", "debug", size="tiny", steps=20, eval_every=1), _options(tmp_path)
    )
    done = json.loads((out.run_dir / "done").read_text())
    assert out.status == done["status"] == "diverged" and done["step"] == 2
    assert [r["step"] for r in records.read_records(out.run_dir / "results.jsonl")] == [0, 1]


def _cli(out_dir, *extra):
    return [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--import",
        "tests.plugins.slow_erm",
        "--algorithm",
        "slow_erm",
        "--dataset",
        "debug",
        "--size",
        "tiny",
        "--steps",
        "150",
        "--eval-every",
        "20",
        "--output-dir",
        str(out_dir),
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_identical_records(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        _cli(killed_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        found = list(killed_dir.glob("runs/*/results.jsonl"))
        if (
            found
            and len(records.read_records(found[0])) >= 2
            and (found[0].parent / "checkpoint.pt").exists()
        ):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = found[0].parent
    assert not (run_dir / "done").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(
        _cli(killed_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    subprocess.run(_cli(clean_dir), cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    assert _numbers(run_dir / "results.jsonl") == _numbers(
        clean_dir / "runs" / run_dir.name / "results.jsonl"
    )
    again = subprocess.run(
        _cli(killed_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "already done" in again.stdout
