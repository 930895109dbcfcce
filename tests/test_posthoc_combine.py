"""Combining runs after a sweep (bench/posthoc/combine.py): ensembles and DiWA."""

from types import SimpleNamespace

import pytest

from bench import runner
from bench.errors import UserError
from bench.posthoc import combine, results
from bench.posthoc.__main__ import main
from bench.report_files import load_runs
from bench.spec import RuntimeOptions, make_spec


def _run(out, **kw):
    spec = make_spec("erm", "debug", size="tiny", steps=11, eval_every=10, **kw)
    return runner.run(spec, RuntimeOptions(output_dir=out, progress=False, threads=1))


def _strip(scores):
    return {env: {p: s.get("confusion") for p, s in parts.items()} for env, parts in scores.items()}


def test_diwa_refuses_runs_with_different_initialisations(tmp_path):
    a, b = _run(tmp_path, hparams_seed=0), _run(tmp_path, hparams_seed=1)
    with pytest.raises(UserError, match="diwa averages runs that share their initialisation"):
        combine.combine([a.run_dir, b.run_dir], "diwa", tmp_path)
    assert combine.combine([a.run_dir, b.run_dir], "ensemble", tmp_path).exists()


def test_diwa_averages_runs_that_share_their_start(tmp_path):
    a, b = _run(tmp_path), _run(tmp_path, overrides={"lr": 0.003})
    path = combine.combine([a.run_dir, b.run_dir], "diwa", tmp_path)
    (row,) = [r for r in results.derived_runs(tmp_path, load_runs(tmp_path))]
    assert path.parent == tmp_path / results.COMBINED and row.spec["algorithm"] == "diwa(erm)"
    assert row.records[0]["step"] == 10 and row.status == "ok"


@pytest.mark.parametrize("method", combine.METHODS)
def test_combining_a_run_with_itself_gives_that_run(tmp_path, method):
    a = _run(tmp_path)
    path = combine.combine([a.run_dir, a.run_dir], method, tmp_path)
    (record,) = results.read_result(path)["records"]
    assert _strip(record["eval"]) == _strip(a.last_record["eval"])


def test_runs_of_different_trials_are_not_combined(tmp_path):
    a, b = _run(tmp_path), _run(tmp_path, trial_seed=1)
    with pytest.raises(UserError, match="differ in trial_seed"):
        combine.combine([a.run_dir, b.run_dir], "ensemble", tmp_path)


def test_a_result_whose_base_run_changed_is_damaged(tmp_path):
    a, b = _run(tmp_path), _run(tmp_path, hparams_seed=1)
    combine.combine([a.run_dir, b.run_dir], "ensemble", tmp_path)
    (a.run_dir / "done").unlink()
    (row,) = results.derived_runs(tmp_path, load_runs(tmp_path))
    assert row.status == "damaged" and a.run_id in row.damage


def test_the_command_refuses_diwa_in_one_line(tmp_path, capsys):
    _run(tmp_path, hparams_seed=0)
    _run(tmp_path, hparams_seed=1)
    assert main(["combine", "--runs", str(tmp_path), "--method", "diwa"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: diwa averages runs") and err.count("\n") == 1
    assert main(["combine", "--runs", str(tmp_path), "--method", "ensemble"]) == 0


def test_diwa_refuses_runs_with_different_pretraining():
    spec = make_spec("erm", "debug", size="tiny")
    a = SimpleNamespace(spec=spec, run_id="a", info={"transfer": {"pretrained": "x"}})
    b = SimpleNamespace(spec=spec, run_id="b", info={"transfer": {"pretrained": "y"}})
    combine.check_shared_init([a, a])
    with pytest.raises(UserError, match="different pretrained weights"):
        combine.check_shared_init([a, b])
