"""Sweeps: grid expansion, state, kill -9 and resume, two launchers on one output directory, the
default benchmark."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import cli, launchers, records, runner, sweep
from bench.errors import UserError
from bench.launchers import trained_log
from bench.report import build_report, render_tables
from bench.report_files import load_runs
from bench.spec import RuntimeOptions

STEPS, EVAL_EVERY = 60, 20
N_RUNS = 8  # 2 algorithms x 2 hparams x 2 trials, test env e0


def second_algorithm():
    from bench.algorithms import ALGORITHMS

    found = [a for a in ("irm", "vrex", "group_dro", "mixup") if a in ALGORITHMS]
    if not found:
        pytest.skip("needs a second registered algorithm besides erm")
    return found[0]


def sweep_args(out, jobs=1):
    return [
        "sweep",
        "--algorithms",
        f"erm,{second_algorithm()}",
        "--datasets",
        "debug",
        "--size",
        "tiny",
        "--n-hparams",
        "2",
        "--n-trials",
        "2",
        "--test-envs",
        "e0",
        "--steps",
        str(STEPS),
        "--eval-every",
        str(EVAL_EVERY),
        "--output-dir",
        str(out),
        "--jobs",
        str(jobs),
        "--threads",
        "1",
        "--no-progress",
    ]


def bench_process(args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
    )


def run_dirs(out):
    return sorted((Path(out) / "runs").iterdir())


def tables(out):
    return render_tables(build_report(load_runs(out), ["train_val", "oracle", "last"]), "markdown")


def assert_same_runs(out, reference, unmarked=0):
    """Same run ids, none trained twice, with exactly the reference's records (no loss, no
    duplicates).

    ``unmarked``: runs allowed without a trained.jsonl line (killed between ``done`` and the mark).
    """
    assert [d.name for d in run_dirs(out)] == [d.name for d in run_dirs(reference)]
    marks = [len(trained_log(d)) for d in run_dirs(out)]
    assert max(marks) == 1 and marks.count(0) <= unmarked, marks
    for d in run_dirs(out):
        assert (d / records.DONE).exists()
        mine, theirs = (
            records.read_records(d / records.RESULTS),
            records.read_records(Path(reference) / "runs" / d.name / records.RESULTS),
        )
        assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [0, 20, 40, 59]
        assert [r["eval"] for r in mine] == [r["eval"] for r in theirs]
    assert tables(out) == tables(reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep, in this process."""
    out = tmp_path_factory.mktemp("reference")
    assert cli.main(sweep_args(out)) == 0
    assert len(run_dirs(out)) == N_RUNS
    return out


def test_expand_grid_and_test_env_modes():
    grid = sweep.Grid(("erm",), ("debug",), n_hparams=2, n_trials=3, size="tiny", steps=5)
    specs = sweep.expand(grid)
    assert len(specs) == 2 * 3 * 3 and len({s.run_id for s in specs}) == len(specs)
    assert {(s.trial_seed, s.hparams_seed, s.test_envs) for s in specs} == {
        (t, h, (e,)) for t in range(3) for h in range(2) for e in ("e0", "e1", "e2")
    }
    assert [s.trial_seed for s in specs] == sorted(s.trial_seed for s in specs)  # trial-major
    assert sweep.test_env_choices("debug", "pairs") == [
        ("e0",),
        ("e1",),
        ("e2",),
        ("e0", "e1"),
        ("e0", "e2"),
        ("e1", "e2"),
    ]
    assert sweep.test_env_choices("cmnist_irm", "single") == [("test",)]
    assert sweep.test_env_choices("cmnist_irm", "all") == [
        ("train_0.2",),
        ("train_0.1",),
        ("test",),
    ]
    assert sweep.test_env_choices("debug", "e1,e2") == [("e1", "e2")]


@pytest.mark.parametrize(
    "grid,match",
    [
        (sweep.Grid(("erm", "ermm"), ("debug",)), "unknown algorithm 'ermm'"),
        (sweep.Grid(("erm",), ("debug",), n_trials=0), "--n-trials must be >= 1"),
        (sweep.Grid(("erm",), ("debug",), test_envs="e9"), "unknown test environment"),
    ],
)
def test_bad_grids_are_user_errors(grid, match):
    with pytest.raises(UserError, match=match):
        sweep.expand(grid)


def test_state_comes_from_run_directories(tmp_path):
    specs = sweep.expand(
        sweep.Grid(("erm",), ("debug",), n_trials=4, test_envs="e0", size="tiny", steps=5)
    )
    records.run_dir(tmp_path, specs[0].run_id).mkdir(parents=True)
    options = RuntimeOptions(output_dir=tmp_path, progress=False, threads=1)
    runner.run(specs[1], options)
    fake = records.run_dir(tmp_path, specs[3].run_id)  # "done" without records: never trusted
    fake.mkdir(parents=True)
    records.write_json(fake / records.DONE, {"status": "ok"})
    found = {k: [s.run_id for s in v] for k, v in sweep.states(tmp_path, specs).items()}
    assert found == {
        "done": [specs[1].run_id],
        "damaged": [specs[3].run_id],
        "partial": [specs[0].run_id],
        "new": [specs[2].run_id],
    }


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_completes_without_retraining(tmp_path, reference, capsys):
    out = tmp_path / "killed"
    proc = bench_process(sweep_args(out))
    deadline = time.time() + 120
    try:
        while (
            time.time() < deadline
        ):  # kill once two runs are done and a third is mid-training (has a checkpoint)
            dirs = run_dirs(out) if (out / "runs").exists() else []
            done = [d for d in dirs if (d / records.DONE).exists()]
            if len(done) >= 2 and any(
                (d / records.CHECKPOINT).exists() and not (d / records.DONE).exists() for d in dirs
            ):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    done_before = sum((d / records.DONE).exists() for d in run_dirs(out))
    partial_before = len(run_dirs(out)) - done_before  # normally the run that was mid-training
    assert 2 <= done_before < N_RUNS and partial_before <= 1
    assert cli.main(sweep_args(out)) == 0
    printed = capsys.readouterr().out
    assert (
        f"{done_before} done / {partial_before} partial / "
        f"{N_RUNS - done_before - partial_before} new" in printed
    )
    assert f"trained {N_RUNS - done_before}," in printed
    assert_same_runs(out, reference, unmarked=1)
    assert cli.main(sweep_args(out)) == 0  # a third time: nothing left to do
    assert f"{N_RUNS} done / 0 partial / 0 new" in capsys.readouterr().out


@pytest.mark.slow
def test_two_local_launchers_at_once_share_the_grid(tmp_path, reference, capsys):
    out = tmp_path / "shared"
    other = bench_process(sweep_args(out))  # another launcher process ...
    try:
        first = next(
            line for line in other.stdout if " done / " in line
        )  # ... has started its sweep
        assert "0 done / 0 partial / 8 new" in first
        assert cli.main(sweep_args(out)) == 0  # while this one runs
        assert other.wait(180) == 0, other.stdout.read()
    finally:
        other.kill()
    trained_here = capsys.readouterr().out
    assert_same_runs(out, reference)
    assert "trained " in trained_here and "trained " in other.stdout.read()


def test_default_benchmark_runs_without_arguments_and_writes_leaderboard(
    tmp_path, monkeypatch, capsys
):
    tiny = sweep.Grid(
        ("erm", "no_such_algorithm"),
        ("debug",),
        n_hparams=1,
        n_trials=2,
        test_envs="e0",
        steps=20,
        eval_every=10,
        size="tiny",
    )
    monkeypatch.setattr(sweep, "DEFAULT_GRID", tiny)
    monkeypatch.setattr(launchers, "cores", lambda: 1)  # one job: trained in this process
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run"]) == 0
    captured = capsys.readouterr()
    assert "'no_such_algorithm' is not registered; skipped" in captured.err
    assert "default benchmark: 2 runs: 0 done / 0 partial / 2 new" in captured.out
    assert "summary — train_val" in captured.out and "(2)" in captured.out
    page = (tmp_path / "bench_output" / "default" / "leaderboard" / "README.md").read_text()
    assert "# Default benchmark" in page and "\npython -m bench run\n" in page
    # the same benchmark with options is `bench sweep` without a grid
    assert cli.main(["sweep", "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "default benchmark: 2 runs" in capsys.readouterr().out


def test_sweep_without_validation_split_prints_last_checkpoint_tables(tmp_path, capsys):
    """train_val needs a validation split; with holdout 0 (the IRM-paper protocol) the tables use
    `last`, not 'missing'."""
    args = [
        "sweep",
        "--algorithms",
        "erm",
        "--datasets",
        "debug",
        "--size",
        "tiny",
        "--steps",
        "5",
        "--holdout-fraction",
        "0",
        "--output-dir",
        str(tmp_path),
        "--no-progress",
        "--jobs",
        "1",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert (
        "tables use selection 'last'" in out
        and "summary — last" in out
        and "summary — train_val" not in out
    )
    assert cli.main([*args, "--selection", "oracle"]) == 0
    assert "summary — oracle" in capsys.readouterr().out


def test_single_run_flags_still_make_one_run(tmp_path, capsys):
    assert (
        cli.main(
            [
                "run",
                "--algorithm",
                "erm",
                "--dataset",
                "debug",
                "--size",
                "tiny",
                "--steps",
                "5",
                "--output-dir",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "status: ok" in capsys.readouterr().out and len(run_dirs(tmp_path)) == 1


def test_launch_uses_given_options(tmp_path):
    specs = sweep.expand(sweep.Grid(("erm",), ("debug",), test_envs="e0", size="tiny", steps=5))
    result = sweep.launch(
        specs, RuntimeOptions(output_dir=tmp_path, threads=1), "local", progress=False, jobs=1
    )
    assert result.before == {"done": 0, "damaged": 0, "partial": 0, "new": 1} and result.counts == {
        "ok": 1
    }
    assert trained_log(run_dirs(tmp_path)[0])[0]["launcher"] == "local"


def test_pairs_extend_a_declared_protocol_and_need_enough_envs():
    from bench.datasets import DATASETS

    assert sweep.test_env_choices("cmnist_irm", "pairs") == [
        ("test",),
        ("train_0.2", "test"),
        ("train_0.1", "test"),
    ]
    if "mnist_ab" not in DATASETS:
        pytest.skip("needs a two-environment dataset")
    with pytest.raises(UserError, match="too few environments"):
        sweep.test_env_choices("mnist_ab", "pairs")
