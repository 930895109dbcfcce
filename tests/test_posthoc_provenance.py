"""Post-hoc results say how they were made, and boards print their commands in run order."""

import shlex

import torch

from bench import records, runner, sweep
from bench.cli_args import parse
from bench.commands import current_syntax
from bench.posthoc import board, results, tta
from bench.posthoc.__main__ import main
from bench.report_files import load_runs
from bench.spec import RuntimeOptions, make_spec
from bench.sweep_cli import _grid

LEGACY_TRAIN = (
    "python -m bench.posthoc train --algorithms erm --datasets debug --n-hparams 2 "
    "--averaging swad --output-dir out"
)
SWEEP_TRAIN = (
    "python -m bench sweep --algorithms erm --datasets debug --n-hparams 2 "
    "--averaging swad --output-dir out"
)
TTA = "python -m bench.posthoc tta --runs out --method t3a"
COMBINE = "python -m bench.posthoc combine --runs out --method ensemble"


def _run(out, command, **kw):
    spec = make_spec("erm", "debug", test_envs=["e2"], size="tiny", steps=21, eval_every=10, **kw)
    options = RuntimeOptions(output_dir=out, progress=False, threads=1, command=command)
    return runner.run(spec, options)


def test_a_test_time_adaptation_records_command_commit_versions_cpu_and_seeds(tmp_path):
    torch.set_num_threads(1)
    run = _run(tmp_path, "python -m bench sweep --algorithms erm", trial_seed=1, hparams_seed=2)
    path = tta.adapt_run(run.run_dir, "t3a", command=TTA)
    made = records.read_json(path)
    assert made["command"] == TTA
    meta = made["meta"]
    assert meta["git"] == records.git_commit()  # with -dirty when the checkout has changes
    assert meta["torch"] == torch.__version__ and meta["numpy"] and meta["python"]
    assert meta["cpu"] and meta["device"] == "cpu"
    assert made["seeds"][run.run_id] == {"trial_seed": 1, "hparams_seed": 2}
    assert made["created"]
    # its records name the result's code, not the base run's copied last record's
    assert all(r["meta"] == meta for r in made["records"])
    (row,) = results.derived_runs(tmp_path, load_runs(tmp_path))
    assert (row.command, row.git) == (TTA, meta["git"])


def _result(out, run, kind, command, created):
    """A hand-made result on ``run``'s final record, made at ``created``."""
    last = records.read_records(run.run_dir / records.RESULTS)[-1]
    info = records.read_spec(run.run_dir)
    result = results.make_result(
        kind,
        {"method": kind},
        f"{kind}(erm)",
        [(run.run_id, last["step"])],
        info["spec"],
        [last],
        command,
        {},
    )
    result["created"] = created
    result["meta"]["git"] = f"commit-of-{kind}"
    results.write_result(out / results.COMBINED, result)


def _regenerate_block(page: str) -> list[str]:
    block = page.split("## Regenerate every number", 1)[1].split("```")[1]
    return block.strip().splitlines()


def test_the_board_lists_training_then_posthoc_commands_by_time_commits_and_caveat(tmp_path):
    torch.set_num_threads(1)
    run = _run(tmp_path, LEGACY_TRAIN, averaging="swad")
    # combined after the adaptation: alphabetical order would put it first
    _result(tmp_path, run, "ensemble", COMBINE, "2026-01-02T00:00:00+00:00")
    _result(tmp_path, run, "tta", TTA, "2026-01-01T00:00:00+00:00")
    page = board.write_board(tmp_path, tmp_path / "board", ["last"], "board-cmd").read_text()
    assert _regenerate_block(page) == [SWEEP_TRAIN, TTA, COMBINE]
    trained_at = page.split("runs trained at", 1)[1].split("\n", 1)[0]
    assert "`commit-of-ensemble`" in trained_at and "`commit-of-tta`" in trained_at
    assert "unknown" not in trained_at
    # the selection caveat of rows with one checkpoint per run, naming them (not the base)
    (note,) = [line for line in page.splitlines() if line.startswith("Rows from final weights")]
    assert "`ensemble(erm)`, `erm + swad`, `tta(erm)`" in note and "`erm`" not in note


def test_posthoc_train_is_refused_in_one_line_naming_the_sweep(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(shlex.split(LEGACY_TRAIN)[3:]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith(SWEEP_TRAIN), err
    assert not out.exists()


def test_a_recorded_posthoc_train_is_shown_as_the_sweep_that_trains_the_same_runs():
    assert current_syntax(LEGACY_TRAIN) == SWEEP_TRAIN
    # the runs `posthoc train` trained: a grid with averaging, as the sweep's
    legacy = sweep.Grid(("erm",), ("debug",), n_hparams=2, averaging="swad")
    args = parse(shlex.split(SWEEP_TRAIN)[3:])
    ids = [s.run_id for s in sweep.expand(_grid(args)[0])]
    assert ids == [s.run_id for s in sweep.expand(legacy)]
    assert ids and all(s.averaging["kind"] == "swad" for s in sweep.expand(legacy))
