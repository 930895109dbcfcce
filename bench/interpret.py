"""What a result means, in a few lines: chance level, oracle (upper bound) and one generated
sentence.

For datasets built to show a spurious correlation (those declaring ``ORACLE``, the variant
with the spurious feature removed, or ``ORACLE_OF``, being that variant), e.g. the default
benchmark's ``spurious_toy``. Every number comes from the report or the data:

- chance: the majority-class rate of the test environment, from the data of every trial
  in the report (generated data: built again, which is cheap), or the dataset's ``CHANCE``;
- oracle: the mean of ERM's cell on the ``ORACLE`` dataset under the same rule, if it ran;
- the sentence compares ERM with the best invariance method (IRM, V-REx, Fishr) on the test
  environment and says which reading the numbers support.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench import report as rp
from bench.datasets import DATASETS

INVARIANCE = {"irm": "IRM", "vrex": "V-REx", "fishr": "Fishr"}
# points (as a fraction) between the best invariance method and ERM that count as a clear separation
CLEAR_GAP = 0.20
BELOW_CHANCE = (
    0.05  # ERM this far below chance means it used a feature whose relation to the label flipped
)


def _dataset_class(report: rp.Report, label: str):
    runs = report.dataset_runs(label)
    if not runs:
        return None, []
    name = runs[0].spec["dataset"]
    return (DATASETS.get(name) if name in DATASETS.names() else None), runs


def applies(report: rp.Report, label: str) -> bool:
    cls, _ = _dataset_class(report, label)
    return cls is not None and bool(getattr(cls, "ORACLE", None) or getattr(cls, "ORACLE_OF", None))


def chance(report: rp.Report, label: str) -> float | None:
    """Majority-class rate of the (first) test environment, mean over the report's trials (data seed
    = trial seed)."""
    cls, runs = _dataset_class(report, label)
    if cls is None:
        return None
    if getattr(cls, "CHANCE", None) is not None:
        return float(cls.CHANCE)
    if cls.data_paths(None):
        return None  # a dataset that reads files: declare CHANCE instead of loading it here
    spec = runs[0].spec
    rates = []
    for trial in sorted({r.spec["trial_seed"] for r in runs}):
        data = cls(None, trial, size=spec["size"])
        y = data.envs[spec["test_envs"][0]].y
        rates.append(float(np.bincount(y.numpy(), minlength=cls.NUM_CLASSES).max() / len(y)))
    return float(np.mean(rates))


def _column(report: rp.Report, label: str, rule: str) -> tuple[str, dict[str, rp.Cell]] | None:
    if not report.has_values(label, rule):
        return None
    table = rp.cells(report, label, rule)
    name = next(iter(table))
    return name, table[name]


def _mean(cell: rp.Cell | None) -> float | None:
    return None if cell is None else cell.summary()["mean"]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def oracle(report: rp.Report, label: str, rule: str) -> tuple[str, float] | None:
    """(oracle dataset label, ERM's mean test accuracy there) when the report holds it."""
    cls, _ = _dataset_class(report, label)
    target = getattr(cls, "ORACLE", None)
    if not target:
        return None
    for other in report.datasets:
        other_cls, _ = _dataset_class(report, other)
        if other_cls is not None and other_cls.NAME == target:
            found = _column(report, other, rule)
            value = _mean(found[1].get(rp.BASELINE)) if found else None
            if value is not None:
                return other, value
    return None


def sentence(
    report: rp.Report, label: str, rule: str, chance_level: float | None, upper: float | None
) -> str | None:
    """One sentence generated from the numbers: ERM vs the best invariance method on the test
    environment."""
    found = _column(report, label, rule)
    if found is None:
        return None
    env, column = found
    erm = _mean(column.get(rp.BASELINE))
    methods = {a: _mean(c) for a, c in column.items() if a in INVARIANCE and _mean(c) is not None}
    if erm is None or not methods:
        return None
    best = max(methods, key=lambda a: (methods[a], a))
    gap = methods[best] - erm
    p = column[best].p_vs_baseline
    head = (
        f"ERM {_pct(erm)} vs best invariance method {INVARIANCE[best]} {_pct(methods[best])} "
        f"on the shifted test environment `{env}`"
    )
    test = (
        f" (paired t-test, Holm-adjusted p = {p:.2g}, n = {column[best].n})"
        if p is not None
        else ""
    )
    below = chance_level is not None and erm < chance_level - BELOW_CHANCE
    if gap >= CLEAR_GAP:
        why = (
            "ERM used the spurious feature, whose relation to the label flips at test"
            if below
            else "ERM relied on features that do not transfer"
        )
        reach = (
            f" and reaches {methods[best] / upper:.0%} of the oracle's {_pct(upper)}"
            if upper
            else ""
        )
        return f"{head}{test}: {why}; {INVARIANCE[best]} did not{reach}."
    if gap > 0:
        return (
            f"{head}{test}: {INVARIANCE[best]} is ahead by {100 * gap:.1f} points, less than "
            f"the {100 * CLEAR_GAP:.0f} that would make the separation clear."
        )
    return f"{head}{test}: no invariance method beats ERM here" + (
        " (ERM is below chance: every method used the spurious feature)." if below else "."
    )


def lines(report: rp.Report, label: str, rule: str) -> list[str]:
    """The interpretation of one dataset under one rule (empty for datasets it does not apply
    to)."""
    if not applies(report, label) or not report.has_values(label, rule):
        return []
    cls, _ = _dataset_class(report, label)
    level = chance(report, label)
    out = [
        "chance (majority class of the test environment): "
        f"{_pct(level) if level is not None else 'unknown'}"
    ]
    if getattr(cls, "ORACLE_OF", None):
        found = _column(report, label, rule)
        erm = _mean(found[1].get(rp.BASELINE)) if found else None
        if erm is not None:
            out.append(
                f"oracle: this is {cls.ORACLE_OF} with its spurious feature removed; ERM "
                f"here, {_pct(erm)}, is that dataset's upper bound"
            )
        return out
    top = oracle(report, label, rule)
    out.append(
        f"oracle (ERM on {top[0]}, the spurious feature removed): {_pct(top[1])}"
        if top
        else f"oracle: ERM on {cls.ORACLE} was not run"
    )
    text = sentence(report, label, rule, level, top[1] if top else None)
    if text:
        out.append(text)
    return out


def render(report: rp.Report, rules: Sequence[str] | None = None) -> str:
    """The block ``bench run`` prints under the tables (empty when no dataset has an
    interpretation)."""
    parts = []
    for rule in rules or report.rules:
        for label in report.datasets:
            found = lines(report, label, rule)
            if found:
                parts.append(f"{label} — {rule}:\n" + "\n".join(f"  {line}" for line in found))
    return ("what it means\n" + "\n".join(parts)) if parts else ""
