import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli_checks as checks
from bench import records
from bench.cli import DELEGATED, check_mode, main
from bench.cli_args import parse
from bench.commands import TEST_ENV_KEYWORDS, current_syntax

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


# --- explicit modes and recorded commands --------------------------------------------------
LEGACY = [
    (  # a published board's sweep, with the removed --no-stack
        "python -m bench run --algorithms erm,irm --datasets cmnist_irm --n-trials 5 --jobs 2 "
        "--no-stack --output-dir sweeps/x",
        "python -m bench sweep --algorithms erm,irm --datasets cmnist_irm --n-trials 5 --jobs 2 "
        "--output-dir sweeps/x",
    ),
    (  # one algorithm made a sweep by a test-environment keyword
        "python -m bench run --algorithm erm --dataset cmnist --test-envs all",
        "python -m bench sweep --algorithms erm --datasets cmnist --test-envs all",
    ),
    (  # the default benchmark with options
        "python -m bench run --output-dir x --jobs 1",
        "python -m bench sweep --output-dir x --jobs 1",
    ),
    (
        "python -m bench run --task mnist_ab --recipe finetune --shots 50",
        "python -m bench transfer --task mnist_ab --recipe finetune --shots 50",
    ),
    (  # one transfer setting over trials is a transfer sweep
        "python -m bench run --task mnist_ab --recipe finetune --n-trials 3",
        "python -m bench transfer --tasks mnist_ab --recipes finetune --n-trials 3",
    ),
    (
        "python -m bench run --recipes scratch,finetune --datasets mnist_ab --shots 50",
        "python -m bench transfer --recipes scratch,finetune --tasks mnist_ab --shots 50",
    ),
    (
        "python -m bench -v run --algorithm erm --dataset debug --dry-run",
        "python -m bench -v sweep --algorithms erm --datasets debug --dry-run",
    ),
    (  # quoting kept
        "python -m bench run --algorithms erm --datasets 'csv:t.csv?env=site&label=y'",
        "python -m bench sweep --algorithms erm --datasets 'csv:t.csv?env=site&label=y'",
    ),
]
TODAY = [
    "python -m bench run",
    "python -m bench run --algorithm erm --dataset cmnist --test-envs -90% --steps 300",
    "python -m bench sweep --algorithms erm --datasets debug --test-envs=all",
    "python -m bench leaderboard --runs x --out y",
    "not a 'command",
]


@pytest.mark.parametrize("recorded, today", LEGACY + [(c, c) for c in TODAY])
def test_recorded_commands_are_shown_in_todays_syntax(recorded, today):
    assert current_syntax(recorded) == today
    assert current_syntax(today) == today


def board_commands() -> list[str]:
    """Every `python -m bench ...` line with flags in README, docs, the write-ups and the published
    boards (placeholders such as `<run_id>` or `[--shots K]` left out)."""
    texts = [REPO / "README.md", *REPO.glob("leaderboard/**/*.md"), *REPO.glob("docs/*.md")]
    found = set()
    for path in [*texts, REPO / "benchmarks" / "README.md"]:
        for match in re.findall(r"python -m bench [^`\n]*", path.read_text()):
            command = match.split("  #")[0].strip()
            mention = len(command.split()) == 4  # prose naming a command, e.g. `bench hparams`
            if not mention and not any(mark in command for mark in ("<", "[", "...", "|")):
                found.add(command)
    return sorted(found)


def test_every_command_on_a_board_passes_todays_mode_checks():
    commands = board_commands()
    assert len(commands) > 20  # legacy spellings are checked by the LEGACY cases above
    for command in commands:
        words = shlex.split(current_syntax(command))[3:]
        if words[0] in DELEGATED:  # a package's own command line: its parser must accept it
            importlib.import_module(DELEGATED[words[0]]).build_parser().parse_args(words[1:])
            continue
        check_mode(parse(words))  # raises UserError naming the flag that would be refused


def test_cli_module_imports_without_torch():
    """`bench list`, `show` and `--help` start without torch (seconds on a busy CPU)."""
    probe = "import sys, bench.cli; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_test_env_keywords_are_the_sweeps():
    from bench.sweep import TEST_ENV_MODES

    assert tuple(checks.TEST_ENV_KEYWORDS) == TEST_ENV_MODES == TEST_ENV_KEYWORDS


def test_meta_and_posthoc_are_subcommands_with_their_own_flags(capsys):
    """`bench meta ...` / `bench posthoc ...` hand the words after them to those packages."""
    assert main(["meta", "list"]) == 0
    assert "protonet" in capsys.readouterr().out
    assert main(["meta", "run", "--method", "protonet", "--dataset", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown")
    with pytest.raises(SystemExit) as exit_:
        main(["posthoc", "--help"])
    assert exit_.value.code == 0
    assert "tta" in capsys.readouterr().out
