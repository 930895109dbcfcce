"""User-caused failures of runs, sweeps and output directories: one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Callable

import pytest

from bench import cli, records

RUN = ["run", "--algorithm", "erm", "--dataset", "debug", "--size", "tiny", "--steps", "2", "--no-progress"]
SWEEP = ["run", "--algorithms", "erm", "--datasets", "debug", "--test-envs", "e0", "--size", "tiny", "--steps", "2", "--no-progress"]


def _file_as_output(tmp: Path) -> list[str]:
    (tmp / "out").write_text("a file, not a folder")
    return ["--output-dir", str(tmp / "out")]


def _plugin(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "plug.py").write_text(text)
        return ["--import", str(tmp / "plug.py")]

    return setup


def _legacy_dir(tmp: Path) -> list[str]:
    d = tmp / "out" / "runs" / "erm-debug-e0-t0-h0"
    d.mkdir(parents=True)
    records.write_json(d / records.SPEC, {"spec": {"algorithm": "erm"}, "run_id": d.name, "hparams": {}})
    return ["--output-dir", str(tmp / "out")]


CASES = {
    "device-unknown": (RUN + ["--device", "tpu9"], "--device tpu9", None),
    "device-garbage": (RUN + ["--device", "cuda:x"], "--device cuda:x", None),
    "device-cuda-absent": (RUN + ["--device", "cuda"], "CUDA is not available", None),
    "threads-negative": (RUN + ["--threads", "-1"], "--threads must be >= 1", None),
    "threads-zero": (RUN + ["--threads", "0"], "--threads must be >= 1", None),
    "jobs-zero": (SWEEP + ["--jobs", "0"], "--jobs must be >= 1", None),
    "jobs-negative": (SWEEP + ["--jobs", "-2"], "--jobs must be >= 1", None),
    "sweep-threads-zero": (SWEEP + ["--threads", "0"], "--threads must be >= 1", None),
    "output-dir-is-a-file": (RUN, "out", _file_as_output),
    "output-dir-legacy": (RUN, "older bench", _legacy_dir),
    "plugin-syntax-error": (RUN, "syntax error", _plugin("def broken(:\n")),
    "plugin-raises": (RUN, "ZeroDivisionError", _plugin("1 / 0\n")),
    "plugin-missing-file": (RUN + ["--import", "no/such/plugin.py"], "no such file", None),
    "plugin-missing-module": (RUN + ["--import", "no_such_module_xyz"], "no_such_module_xyz", None),
    "unknown-algorithm-hint": (["run", "--algorithm", "andmask", "--dataset", "debug"], "--import", None),
    "selection-on-one-run": (RUN + ["--selection", "oracle"], "--selection", None),
    "no-stack-on-one-run": (RUN + ["--no-stack"], "--no-stack", None),
    "scheduler-without-dask": (SWEEP + ["--scheduler", "tcp://127.0.0.1:1"], "--scheduler", None),
    "jobs-with-slurm": (SWEEP + ["--launcher", "slurm", "--jobs", "2"], "--jobs", None),
    "slurm-partition-local": (SWEEP + ["--slurm-partition", "gpu"], "--slurm-partition", None),
    "shots-on-plain-dataset": (SWEEP + ["--shots", "10"], "not a transfer task", None),
    "shots-not-offered": (["run", "--task", "mnist_ab", "--recipe", "scratch", "--shots", "7"], "no 7-shot variant", None),
    "task-with-algorithms": (["run", "--task", "mnist_ab", "--recipe", "scratch", "--algorithms", "erm"], "--task/--recipe", None),
    "spread-without-format": (["leaderboard", "--runs", "x", "--spread", "se"], "--format", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(name, tmp_path, capsys, monkeypatch):
    argv, expected, setup = CASES[name]
    monkeypatch.chdir(tmp_path)
    argv = [*argv, *(setup(tmp_path) if setup else [])]
    if "--output-dir" not in argv and argv[0] == "run":
        argv += ["--output-dir", str(tmp_path / "out")]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in out + err


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "results.jsonl"))

    monkeypatch.setattr(records, "append_record", full)
    assert cli.main([*RUN, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "results.jsonl" in err[0]
