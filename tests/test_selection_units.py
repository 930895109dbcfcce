"""Selection edge cases: ties, the ``last`` rule, and why a cell is empty.

Written against surviving mutants of bench/selection.py (docs/testing.md).
"""

from __future__ import annotations

import pytest
from handmade import record, run

from bench.errors import UserError
from bench.selection import RULES, rule_names, select


def only(selected):
    assert len(selected) == 1
    return selected[0]


def test_train_val_tie_keeps_the_earliest_checkpoint_and_hparams_seed():
    same = [
        record(0, {"e0": (0.1, 0.0), "e1": (0.0, 0.5)}),
        record(5, {"e0": (0.9, 0.0), "e1": (0.0, 0.5)}),
    ]
    runs = [run("erm", ("e0",), 0, 0, same), run("erm", ("e0",), 0, 1, same)]
    s = only(select(runs, "train_val"))
    assert (s.step, s.hparams_seed, s.acc) == (0, 0, 0.1)


def test_last_rule_reports_the_default_runs_last_checkpoint_and_no_validation_value():
    recs = [
        record(0, {"e0": (0.1, 0.0), "e1": (0.0, 0.9)}),
        record(5, {"e0": (0.4, 0.0), "e1": (0.0, 0.2)}),
    ]
    s = only(select([run("erm", ("e0",), 0, 1, recs), run("erm", ("e0",), 0, 0, recs)], "last"))
    assert (s.hparams_seed, s.step, s.acc, s.val) == (0, 5, 0.4, None)


def test_last_rule_without_a_default_run_says_so():
    recs = [record(0, {"e0": (0.1, 0.0), "e1": (0.0, 0.9)})]
    s = only(select([run("erm", ("e0",), 0, 2, recs)], "last"))
    assert s.acc is None and s.reason == "no default-hparams run (hparams_seed 0)"


def test_a_cell_with_no_finished_run_counts_diverged_and_partial_runs():
    recs = [record(0, {"e0": (0.1, 0.0), "e1": (0.0, 0.9)})]
    runs = [
        run("erm", ("e0",), 0, 0, recs, status="diverged"),
        run("erm", ("e0",), 0, 1, recs, status="partial"),
    ]
    assert only(select(runs, "train_val")).reason == "no finished run (1 diverged, 1 partial)"
    assert only(select(runs[1:], "last")).reason == "no finished run (1 partial)"


@pytest.mark.parametrize("text, shown", [("", "(none)"), ("oracle,nope, bad", "nope, bad")])
def test_unknown_rules_are_named_with_the_list_of_rules(text, shown):
    with pytest.raises(UserError) as err:
        rule_names(text)
    assert f"unknown selection rule(s) {shown}; rules: {', '.join(RULES)}" == str(err.value)
