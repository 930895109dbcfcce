"""The multi-task board from hand-made records (no training), and the CLI end to end."""

from __future__ import annotations

import shlex

import pytest

from bench.multitask.board import render
from bench.multitask.cli import main
from bench.multitask.results import Run


def made_run(method, trial, main, aux, val=0.0, hparams_seed=0, cos=0.5, info=None, **hparams):
    """A finished teacher_nested run whose last record has these test errors."""
    spec = {
        "method": method,
        "tasks": "teacher_nested",
        "trial_seed": trial,
        "hparams_seed": hparams_seed,
        "hparams": hparams,
    }
    record = {
        "eval": {
            "main": {"train": 0.0, "val": val, "test": main},
            "aux": {"train": 0.0, "val": val, "test": aux},
        },
        "train": {"grad_cos": {"main|aux": cos}},
    }
    return Run(spec, [record], info or {})


def rows_of(markdown: str) -> dict[str, list[str]]:
    """``{first cell: cells}`` of every table row of the board (gain rows under 'gain:')."""
    out, prefix = {}, ""
    for line in markdown.splitlines():
        if line.startswith("Gain over"):
            prefix = "gain:"
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[prefix + cells[0]] = cells[1:]
    return out


def test_gain_is_positive_when_error_drops_and_selection_uses_validation(tmp_path):
    runs = [made_run("single_task", t, 0.5 + 0.01 * t, 0.3) for t in range(3)]
    runs += [
        made_run("hard_sharing", t, 0.2 + 0.01 * t, 0.4, val=0.1, hparams_seed=1) for t in range(3)
    ]
    runs += [made_run("hard_sharing", t, 0.9, 0.9, val=5.0, hparams_seed=0) for t in range(3)]
    rows = rows_of(render(runs, figures=tmp_path / "figs", links_from=tmp_path))
    assert rows["hard_sharing"][0] == "0.210 ± 0.010 (3)"  # hparams seed 1: the better val
    assert rows["gain:hard_sharing"][0] == "+0.300*"  # error 0.51 -> 0.21, same every trial
    assert rows["gain:hard_sharing"][1] == "-0.100*"  # aux got worse: negative transfer
    assert (tmp_path / "figs" / "affinity_teacher_nested.png").exists()


def test_pretrain_finetune_rows_split_by_rescale_score_the_main_task_only():
    runs = [made_run("single_task", t, 0.5, 0.3) for t in range(2)]
    for rescale, error in ((0.1, 0.2), (1.0, 0.4)):
        runs += [
            made_run("pretrain_finetune", t, error + 0.01 * t, 9.0, rescale=rescale)
            for t in range(2)
        ]
    rows = rows_of(render(runs, split_by=["rescale"]))
    assert rows["pretrain_finetune rescale=0.1"][:2] == ["0.205 ± 0.007 (2)", "–"]
    assert rows["pretrain_finetune rescale=1"][0] == "0.405 ± 0.007 (2)"
    assert rows["gain:pretrain_finetune rescale=0.1"][0].startswith("+0.295")


def test_cli_sweep_board_and_one_line_errors(tmp_path, capsys, one_thread):
    out = str(tmp_path / "out")
    common = ["--output-dir", out, "--steps", "4", "--eval-every", "2"]
    sweep = ["sweep", "--tasks", "teacher_nested", "--methods", "single_task,hard_sharing"]
    assert main([*sweep, "--trials", "2", *common]) == 0
    board = ["board", "--output-dir", out, "--figures", str(tmp_path / "figs")]
    assert main([*board, "--out", str(tmp_path / "board.md")]) == 0
    text = (tmp_path / "board.md").read_text()
    assert "## teacher_nested" in text and "](figs/affinity_teacher_nested.png)" in text
    assert f"python -m bench.multitask {shlex.join(sweep)} --trials 2" in text
    assert f"python -m bench.multitask {shlex.join(board)} --out" in text
    assert "**Not reproducible as written: absolute paths" in text  # tmp_path is absolute
    capsys.readouterr()
    for bad in (
        ["run", "nope", "teacher_nested"],
        ["sweep", "--tasks", "teacher_nested", "--grid", "x"],
    ):
        assert main([*bad, "--output-dir", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["board", "--output-dir", str(tmp_path / "empty")]) == 2
    (tmp_path / "file").write_text("")  # an output "directory" that is a file
    assert (
        main(["run", "single_task", "teacher_nested", "--output-dir", str(tmp_path / "file")]) == 2
    )
    assert capsys.readouterr().err.count("\n") == 2  # two errors, one line each


@pytest.mark.parametrize("bad", [["run", "hard_sharing", "teacher_nested", "--hparams", "{"]])
def test_malformed_hparams_are_one_line(bad, tmp_path, capsys):
    assert main([*bad, "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_affinity_falls_back_to_the_next_method_with_cosines(tmp_path):
    runs = [made_run("single_task", t, 0.5, 0.3) for t in range(2)]
    runs += [made_run("evgeniou_pontil", t, 0.4, 0.3, cos=-0.8) for t in range(2)]
    text = render(runs, figures=tmp_path, links_from=tmp_path)
    assert "(gradient cosine, `evgeniou_pontil`): ![](affinity_teacher_nested.png)" in text
    assert "hard_sharing" not in text  # no such row, and no figure claims it


def meta(git, torch="2.1.0", cpu="Some CPU"):
    return {"git": git, "torch": torch, "numpy": "1.26.4", "python": "3.11.2", "cpu": cpu}


SWEEP = "python -m bench mtl sweep --tasks teacher_nested --output-dir sweeps/x"


def test_board_ends_with_the_commands_commits_versions_and_cpu_of_its_runs():
    runs = [
        made_run("single_task", t, 0.5, 0.3, info={"command": SWEEP, "meta": meta("abc")})
        for t in range(2)
    ]
    again = {"command": SWEEP + " --trials 3", "meta": meta("abc", torch="2.2.0")}
    runs.append(made_run("hard_sharing", 0, 0.4, 0.3, info=again))
    board = "python -m bench mtl board --output-dir sweeps/x --out leaderboard/mtl/README.md"
    text = render(runs, commit="def", command=board)
    section = text[text.index("## Regenerate every number") :]
    assert "3 runs, trained at git commit `abc`; board written at `def`." in section
    assert "torch 2.1.0, 2.2.0; numpy 1.26.4; python 3.11.2; CPU Some CPU." in section
    blocks = section.split("```")
    assert blocks[1].split() == (SWEEP + "\n" + SWEEP + " --trials 3").split()  # distinct
    assert blocks[3].strip() == board
    assert "Not reproducible" not in text
    assert "Regenerate" not in render(runs)  # no command given: no section


@pytest.mark.parametrize(
    "run_git, board_git, command, flagged",
    [
        ("abc-dirty", "def", SWEEP, "abc-dirty"),
        ("abc", "def-dirty", SWEEP, "def-dirty"),
        (None, "def", SWEEP, "unknown"),
        ("abc", "def", SWEEP.replace("sweeps/x", "/home/me/x"), "absolute paths (/home/me/x)"),
        ("abc", "def", SWEEP.replace("sweeps/x", "--output-dir=/tmp/x"), "(/tmp/x)"),
    ],
)
def test_a_dirty_commit_or_an_absolute_path_is_flagged(run_git, board_git, command, flagged):
    runs = [made_run("single_task", 0, 0.5, 0.3, info={"command": command, "meta": meta(run_git)})]
    text = render(runs, commit=board_git, command="python -m bench mtl board")
    line = next(line for line in text.splitlines() if line.startswith("**Not reproducible"))
    assert flagged in line
