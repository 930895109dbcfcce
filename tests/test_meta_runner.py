"""The meta-learning runner, board and CLI: identity, exact resume, selection, one-line errors."""

from __future__ import annotations

import pytest
import torch

from bench import records
from bench.execution import cpu_model
from bench.meta import board, runner
from bench.meta.cli import main
from bench.meta.spec import make_meta_spec

QUICK = dict(steps=6, eval_every=2, val_episodes=3, test_episodes=5, size="tiny")


def _records(directory) -> list[dict]:
    """Records without what may differ between equal runs (timing, host)."""
    return [
        {k: v for k, v in r.items() if k not in ("wall_s", "meta")}
        for r in records.read_records(directory / records.RESULTS)
    ]


def test_every_result_changing_setting_changes_the_run_id():
    base = make_meta_spec("protonet", "subspace", 5, 1, **QUICK)
    assert make_meta_spec("protonet", "subspace", 5, 1, **QUICK).run_id == base.run_id
    changed = [
        make_meta_spec("protonet", "subspace", 5, 5, **QUICK),
        make_meta_spec("protonet", "subspace", 4, 1, **QUICK),
        make_meta_spec("protonet", "subspace", 5, 1, 10, **QUICK),
        make_meta_spec("protonet", "subspace", 5, 1, trial_seed=1, **QUICK),
        make_meta_spec("protonet", "subspace", 5, 1, overrides={"lr": 0.01}, **QUICK),
        make_meta_spec("protonet", "subspace", 5, 1, **{**QUICK, "test_episodes": 6}),
        make_meta_spec("maml", "subspace", 5, 1, **QUICK),
    ]
    assert len({s.run_id for s in changed} | {base.run_id}) == len(changed) + 1


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_a_resumed_run_writes_the_records_of_an_uninterrupted_one(
    tmp_path, monkeypatch, method, one_thread
):
    spec = make_meta_spec(method, "subspace", 3, 1, 3, **QUICK)
    whole = runner.run(spec, tmp_path / "whole")
    assert whole.status == "ok"
    written = records.read_records(whole.run_dir / records.RESULTS)
    assert all(r["meta"]["cpu"] == cpu_model() for r in written)  # the board names the CPU

    save, calls = runner._save_checkpoint, []

    def crash_after_second(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_save_checkpoint", crash_after_second)
    with pytest.raises(KeyboardInterrupt):
        runner.run(spec, tmp_path / "cut")
    monkeypatch.undo()
    cut = runner.run_dir(tmp_path / "cut", spec.run_id)
    state = torch.load(cut / records.CHECKPOINT, weights_only=True)  # no pickled code
    assert state["step"] == 2 and not (cut / records.DONE).exists()
    resumed = runner.run(spec, tmp_path / "cut")
    assert resumed.status == "ok"
    assert _records(cut) == _records(whole.run_dir)
    assert [r["split"] for r in _records(cut)] == ["val"] * 4 + ["test"]
    assert runner.run(spec, tmp_path / "cut").status == "skipped"


def _test_record(method: str, shot: int, trial: int, hseed: int, acc: float, val: float) -> dict:
    spec = {"dataset": "d", "way": 5, "shot": shot, "method": method, "trial_seed": trial}
    spec |= {"hparams_seed": hseed, "query": 15, "steps": 10, "eval_every": 5}
    spec |= {"val_episodes": 10, "test_episodes": 100, "size": "full"}
    return {"spec": spec, "eval": {"acc": acc, "ci95": 0.02}, "val_acc": val}


def test_board_selects_hparams_on_meta_validation_and_reports_both_intervals():
    made = [
        _test_record("maml", 1, 0, 0, 0.50, 0.60),
        _test_record("maml", 1, 0, 1, 0.90, 0.40),  # best test, worse validation: not chosen
        _test_record("maml", 1, 1, 0, 0.70, 0.60),
        _test_record("protonet", 5, 0, 0, 0.80, 0.70),
    ]
    results = board.select(made)
    assert [(r.method, r.trial, r.hparams_seed) for r in results] == [
        ("maml", 0, 0),
        ("maml", 1, 0),
        ("protonet", 0, 0),
    ]
    episodes = board.table(results, "d", "episodes")
    trials = board.table(results, "d", "trials")
    assert "| maml     | 60.0 ± 2.0     |" in episodes
    assert "60.0 ± 14.1 (2)" in trials  # std of 50 and 70, ddof=1
    assert "80.0 ± — (1)" in trials


def test_board_refuses_to_mix_protocols_in_one_cell():
    other = _test_record("maml", 1, 1, 0, 0.7, 0.6)
    other["spec"]["steps"] = 20
    with pytest.raises(ValueError, match="keep one protocol"):
        board.select([_test_record("maml", 1, 0, 0, 0.5, 0.6), other])


SWEEP = "python -m bench.meta sweep --methods scratch maml --dataset mnist --output-dir sweeps/meta"
BOARD = "python -m bench.meta board --output-dir sweeps/meta"


def _mnist_run(method: str, steps: int, every: int, val: int, test: int) -> dict:
    spec = {"dataset": "mnist", "way": 5, "shot": 1, "method": method, "trial_seed": 0}
    spec |= {"hparams_seed": 0, "query": 15, "size": "full"}
    spec |= {"steps": steps, "eval_every": every, "val_episodes": val, "test_episodes": test}
    meta = {"git": "abc123", "torch": "2.4", "numpy": "1.26", "python": "3.11"}
    return {"spec": spec, "eval": {"acc": 0.6, "ci95": 0.02}, "val_acc": 0.6, "meta": meta}


def test_board_states_a_reduced_budget_beside_the_default_and_the_commands_and_commits():
    runs = [_mnist_run("maml", 100, 50, 20, 60), _mnist_run("scratch", 1, 1, 20, 60)]
    runs = [{**r, "command": SWEEP} for r in runs]
    text = board.board(board.select(runs), runs, BOARD, "def456")
    assert (
        "**CPU budget: 100 meta-training steps, meta-validation every 50 steps on 20 episodes, "
        "60 meta-test episodes, 15 queries per class.** The package default is 2000 steps, "
        "meta-validation every 250 steps on 100 episodes, 600 meta-test episodes" in text
    )
    assert f"```\n{SWEEP}\n```" in text and f"```\n{BOARD}\n```" in text
    assert "2 runs, trained at git commit `abc123`; board written at `def456`" in text
    assert "Not reproducible" not in text


def test_board_names_the_package_default_when_the_runs_used_it():
    runs = [_mnist_run("maml", 2000, 250, 100, 600), _mnist_run("scratch", 1, 1, 100, 600)]
    text = board.board(board.select(runs), runs)
    assert "Protocol: 2000 meta-training steps" in text and "(the package default)" in text
    assert "CPU budget" not in text and "Regenerate" not in text


def test_cli_runs_a_sweep_and_writes_a_board(tmp_path, capsys, one_thread):
    flags = ["--dataset", "subspace", "--output-dir", str(tmp_path), "--steps", "2"]
    flags += ["--eval-every", "1", "--val-episodes", "2", "--test-episodes", "3", "--size", "tiny"]
    assert (
        main(["sweep", "--methods", "protonet", "--shots", "1", "2", "--trials", "1"] + flags) == 0
    )
    out = tmp_path / "board.md"
    figure = tmp_path / "shots.png"
    args = ["board", "--output-dir", str(tmp_path), "--out", str(out), "--figure", str(figure)]
    assert main(args) == 0
    text = out.read_text()
    assert "| protonet |" in text and "5-way 2-shot" in text and figure.stat().st_size > 0
    assert "python -m bench.meta sweep --methods protonet" in text and "CPU budget: 2 " in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--method", "mamll", "--dataset", "subspace"], "Did you mean maml"),
        (["run", "--method", "maml", "--dataset", "subspace", "--hparams", "{"], "not JSON"),
        (["run", "--method", "maml", "--dataset", "subspace", "--hparams", '{"x": 1}'], "unknown"),
        (["run", "--method", "maml", "--dataset", "subspace", "--shot", "0"], "shot >= 1"),
        (["run", "--method", "maml", "--dataset", "subspace", "--way", "30"], "30-way"),
        (["board", "--output-dir", "/nonexistent/meta"], "no meta-learning runs"),
    ],
)
def test_user_errors_end_in_one_line_and_exit_2(argv, message, capsys, tmp_path):
    if argv[0] == "run":
        argv = argv + ["--output-dir", str(tmp_path), "--size", "tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
