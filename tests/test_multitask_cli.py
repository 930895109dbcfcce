"""`bench mtl ...`: the multi-task commands mounted on bench's CLI, torch-free until chosen."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench import records
from bench.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_bench_mtl_list_names_task_sets_and_methods(capsys):
    assert main(["mtl", "list"]) == 0
    out = capsys.readouterr().out
    assert "task set teacher_nested: main (mse), aux (mse)" in out
    assert "method pretrain_finetune" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["sweep", "--tasks", "teacher_nested", "--n-trials", "3"], "takes --trials T"),
        (["sweep", "--tasks", "teacher_nested", "--algorithms", "erm"], "takes --methods"),
        (["run", "single_task", "teacher_nested", "--test-envs", "e0"], "not test environments"),
        (["run", "nope", "teacher_nested"], "unknown mtl method 'nope'"),
        (["sweep", "--tasks", "teacher_nested", "--grid", "x"], "--grid must be KEY=V1,V2"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(argv, fragment, tmp_path, capsys):
    assert main(["mtl", *argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_run_records_the_bench_mtl_command_as_typed(tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    argv = ["mtl", "run", "single_task", "teacher_nested", "--steps", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    (run_dir,) = records.iter_runs(out)
    info = records.read_spec(run_dir)
    assert info["command"] == shlex.join(["python", "-m", "bench", *argv])
    assert info["meta"]["cpu"] and info["meta"]["torch"]


def test_parsing_other_commands_does_not_import_torch():
    probe = (
        "import sys; from bench.cli_args import parse, build_parser; parse(['list']); "
        "build_parser().format_help(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
