"""The side-by-side benchmarks' bookkeeping (benchmarks/_side_by_side.py, _timed_child.py): which
optimiser-step gaps are training alone, what one checkpoint's evaluation cost, and stand-ins
for a reference's unused imports that never shadow an installed module."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("_side_by_side"), importlib.import_module("_timed_child")


def test_evaluated_gaps_are_not_steps_and_a_checkpoint_sums_its_calls(helpers):
    side_by_side, _ = helpers
    # six Adam.step calls one second apart, but 10 s between the 3rd and 4th: the evaluation
    # after step 3 (two calls, one per split); one more after the last step (no gap follows)
    stamps = [[t, t / 2] for t in (0.0, 1.0, 2.0, 12.0, 13.0, 14.0)]
    evals = [[3, 4.0, 2.0, 100], [3, 5.0, 2.5, 200], [6, 8.0, 4.0, 300]]
    timing = side_by_side.Timing(stamps, evals, cpu_main=7.0, cpu_all=9.0, wall=20.0)
    assert timing.gaps()[2] == [10.0, 5.0]
    assert timing.step_gaps() == [[1.0, 0.5]] * 4
    assert timing.checkpoints() == [[9.0, 4.5, 300], [8.0, 4.0, 300]]
    assert side_by_side.medians(timing.checkpoints()) == (8.5, 4.25)


def test_stand_ins_only_for_missing_modules_and_they_raise_when_used(helpers, monkeypatch):
    _, child = helpers
    names = ["no_such_pkg_xyz", "no_such_pkg_xyz.a", "no_such_pkg_xyz.b"]
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", real_loads)  # restored even if a stand-in replaced it
    try:
        child.stub_missing(
            {"no_such_pkg_xyz.a": ["A"], "no_such_pkg_xyz.b": ["B"], "json": ["loads"]}
        )
        from no_such_pkg_xyz.a import A
        from no_such_pkg_xyz.b import B

        for stand_in in (A, B):
            with pytest.raises(RuntimeError, match="stand-in"):
                stand_in()
        assert json.loads is real_loads
    finally:
        for name in names:
            sys.modules.pop(name, None)
