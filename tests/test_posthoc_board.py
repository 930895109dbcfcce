"""Boards with post-hoc rows (bench/posthoc/board.py): each method is its own row beside ERM."""

from bench import report as rp
from bench import runner
from bench.posthoc import board, combine, tta
from bench.posthoc.__main__ import main
from bench.spec import RuntimeOptions, make_spec


def _run(out, **kw):
    spec = make_spec("erm", "debug", test_envs=["e2"], size="tiny", steps=21, eval_every=10, **kw)
    return runner.run(spec, RuntimeOptions(output_dir=out, progress=False, threads=1))


def test_board_shows_averaged_adapted_and_combined_rows_beside_the_base(tmp_path):
    for trial in (0, 1):
        plain = _run(tmp_path, trial_seed=trial)
        other = _run(tmp_path, trial_seed=trial, hparams_seed=1)
        _run(tmp_path, trial_seed=trial, averaging="swad")
        _run(tmp_path, trial_seed=trial, averaging={"kind": "ema", "decay": 0.9})
        tta.adapt_run(plain.run_dir, "t3a")
        tta.adapt_run(plain.run_dir, "t3a", {"filter_k": 5})
        combine.combine([plain.run_dir, other.run_dir], "ensemble", tmp_path)
    report = rp.build_report(board.board_runs(tmp_path), ["train_val", "last"])
    assert report.algorithms() == [
        "erm",
        "ensemble(erm)",
        "erm + ema [decay=0.9]",
        "erm + swad",
        "erm + t3a",
        "erm + t3a [filter_k=5]",
    ]
    cells = rp.cells(report, "debug", "train_val")["e2"]
    assert all(cell.n == 2 for cell in cells.values()), {a: c.n for a, c in cells.items()}
    # the raw models of the averaged runs are the plain runs: one erm run per hparams seed
    erm = [s for s in report.selected["train_val"] if s.algorithm == "erm"]
    assert all(s.n_runs == 2 for s in erm)
    page = board.write_board(tmp_path, tmp_path / "board", ["train_val"], "cmd").read_text()
    assert "| erm + swad " in page and "| ensemble(erm) " in page


def test_commands_without_runs_are_one_line_errors(tmp_path, capsys):
    empty = str(tmp_path / "none")
    assert main(["board", "--runs", empty, "--out", str(tmp_path / "b")]) == 2
    assert main(["tta", "--runs", empty, "--method", "t3a"]) == 2
    assert main(["tta", "--runs", empty, "--method", "t3a", "--config", "[1]"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
