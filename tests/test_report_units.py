"""Report building blocks: the summary of one cell and loading runs from disk.

Written against surviving mutants of bench/report.py (docs/testing.md).
"""

from __future__ import annotations

import json
import warnings

import pytest

from bench import records
from bench.report import Cell
from bench.report_files import load_runs

KEYS = {"mean", "std", "se", "ci_lo", "ci_hi"}


@pytest.mark.parametrize("values, mean", [({}, None), ({0: 0.5}, 0.5)])
def test_summary_of_fewer_than_two_trials_has_only_a_mean(values, mean):
    assert Cell(values, expected=3).summary() == dict.fromkeys(KEYS) | {"mean": mean}


def test_summary_of_three_trials_by_hand():
    """Sample std (ddof=1), se = std / sqrt(n), 95% t-interval with t(0.975, 2) = 4.302653."""
    s = Cell({0: 0.6, 1: 0.7, 2: 0.8}, expected=3).summary()
    assert s == pytest.approx(
        {
            "mean": 0.7,
            "std": 0.1,
            "se": 0.1 / 3**0.5,
            "ci_lo": 0.7 - 4.302653 * 0.1 / 3**0.5,
            "ci_hi": 0.7 + 4.302653 * 0.1 / 3**0.5,
        }
    )


SPEC = {
    "algorithm": "erm",
    "identity": records.IDENTITY,
    "steps": 2,
    "eval_every": 1,
}  # records at 0, 1


def _run(out, run_id, done: str | None, steps, **info):
    d = records.run_dir(out, run_id)
    d.mkdir(parents=True)
    spec = {"run_id": run_id, "spec": SPEC, "hparams": {"lr": 0.1}, **info}
    (d / records.SPEC).write_text(json.dumps(spec))
    (d / records.RESULTS).write_text(
        "".join(json.dumps({"step": s, "run_id": run_id}) + "\n" for s in steps)
    )
    if done:
        (d / records.DONE).write_text(json.dumps({"status": done}))


def test_load_runs_reads_spec_records_status_command_and_commit(tmp_path):
    _run(tmp_path, "a", "ok", [0, 1], command="python -m bench run", meta={"git": "abc"})
    _run(tmp_path, "b", None, [0])
    a, b = load_runs(tmp_path)
    assert (a.run_id, a.spec, a.hparams, a.status) == ("a", SPEC, {"lr": 0.1}, "ok")
    assert a.records == ({"step": 0, "run_id": "a"}, {"step": 1, "run_id": "a"})
    assert (a.command, a.git) == ("python -m bench run", "abc")
    assert (b.status, b.records, b.command, b.git) == (
        "partial",
        ({"step": 0, "run_id": "b"},),
        "",
        None,
    )
    assert [r.run_id for r in load_runs(tmp_path, ["b"])] == ["b"]
    assert load_runs(tmp_path, []) == []


def test_paired_p_uses_the_trials_both_have():
    """Paired t-test over shared trials; a constant difference is decisive, none is no evidence."""
    from scipy import stats

    from bench.statistics import paired_p

    base = {0: 0.5, 1: 0.6, 2: 0.7}
    assert paired_p(dict(base), base) is None
    assert paired_p({0: 0.9, 5: 0.1}, base) is None  # one shared trial
    assert paired_p({t: v + 0.1 for t, v in base.items()}, base) == 0.0
    expected = stats.ttest_rel([0.55, 0.62, 0.9], [0.5, 0.6, 0.7]).pvalue
    assert paired_p({0: 0.55, 1: 0.62, 2: 0.9, 3: 0.4}, base) == pytest.approx(expected)


def test_mcc_equals_sklearns_to_the_bit():
    """Records keep sklearn's values: the counts-based formula must not move a bit."""
    import numpy as np
    from sklearn.metrics import matthews_corrcoef

    from bench.evaluation import mcc

    rng = np.random.default_rng(0)
    cases = [[[0, 0, 7]], [[0, 1, 3], [1, 1, 4]], [[3, 3, 5], [3, 7, 2], [7, 3, 1]]]
    for _ in range(300):
        k = int(rng.integers(2, 12))
        cells = rng.integers(0, k, size=(int(rng.integers(1, 40)), 2))
        counts = rng.integers(1, 10 ** int(rng.integers(1, 7)), size=len(cells))
        merged: dict[tuple[int, int], int] = {}
        for (t, p), c in zip(cells.tolist(), counts.tolist()):
            merged[(t, p)] = merged.get((t, p), 0) + c
        cases.append([[t, p, c] for (t, p), c in merged.items()])
    for confusion in cases:
        true, pred, count = zip(*confusion)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            want = float(matthews_corrcoef(true, pred, sample_weight=count))
        assert mcc(confusion) == want, confusion
