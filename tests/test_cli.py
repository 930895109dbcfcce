import subprocess
import sys
from pathlib import Path

import pytest

from bench import records
from bench.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--algorithm", "nope", "--dataset", "debug"], "unknown algorithm 'nope'"),
        (["run", "--dataset", "cmnist", "--test-envs", "-70%"], "unknown test environment(s) -70%"),
        (["run", "--dataset", "debug", "--hparams", "{lr: 1}"], "not valid JSON"),
        (["run", "--dataset", "debug", "--hparams", '{"lr": -1}'], "must be > 0"),
        (["run", "--dataset", "debug", "--hparams", '{"lrr": 0.1}'], "valid keys"),
        (["run", "--dataset", "debug", "--test-envs", "e0,e1,e2"], "leave no training environment"),
        (["run", "--dataset", "cmnist", "--data-dir", "/nonexistent"], "MNIST not found"),
        (["hparams", "--algorithm", "erm", "--dataset", "cmnistt"], "Did you mean cmnist"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, fragment, capsys, tmp_path):
    assert main(argv + (["--output-dir", str(tmp_path)] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_bad_input_in_subprocess_has_no_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--algorithm", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_list_and_hparams(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "erm" in text and "cmnist_irm" in text and "+90%, +80%, -90%" in text
    assert (
        main(["hparams", "--algorithm", "erm", "--dataset", "cmnist", "--hparams-seed", "3"]) == 0
    )
    text = capsys.readouterr().out
    assert "10^U(-4.5, -2.5)" in text and "hparams_seed=3" in text


@pytest.mark.slow
def test_run_cmnist_with_dash_test_env_records_all_envs_then_show(data_dir, tmp_path, capsys):
    argv = [
        "run",
        "--algorithm",
        "erm",
        "--dataset",
        "cmnist",
        "--test-envs",
        "-90%",
        "--steps",
        "3",
        "--size",
        "tiny",
        "--data-dir",
        data_dir,
        "--output-dir",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "-90% (test)" in out and "status: ok" in out
    (run_dir,) = list(records.iter_runs(tmp_path))
    rec = records.read_records(run_dir / "results.jsonl")[-1]
    assert list(rec["eval"]) == ["+90%", "+80%", "-90%"] and rec["spec"]["test_envs"] == ["-90%"]
    assert main(["show", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert "erm on cmnist" in shown and "command: python -m bench run" in shown


@pytest.mark.slow
def test_erm_uses_colour_on_cmnist_irm(data_dir, tmp_path, capsys):
    """The IRM paper's ERM baseline: high training accuracy from colour, below chance on the flipped
    test env."""
    argv = [
        "run",
        "--algorithm",
        "erm",
        "--dataset",
        "cmnist_irm",
        "--size",
        "tiny",
        "--steps",
        "150",
        "--data-dir",
        data_dir,
        "--output-dir",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    (run_dir,) = list(records.iter_runs(tmp_path))
    ev = records.read_records(run_dir / "results.jsonl")[-1]["eval"]
    train = (ev["train_0.2"]["in"]["acc"] + ev["train_0.1"]["in"]["acc"]) / 2
    assert train > 0.8 and ev["test"]["in"]["acc"] < 0.35, (train, ev["test"]["in"]["acc"])
