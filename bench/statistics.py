"""Paired tests against the baseline, Holm-adjusted across one table's comparisons.

Each non-baseline cell is compared with the baseline row (ERM for DG tables, a named recipe,
``scratch`` by default, for transfer tables) over the trials both have; a table's comparisons
are one family, so the ``*`` controls the family-wise error rate.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np
from scipy import stats as st

if TYPE_CHECKING:
    from bench.report import Cell

BASELINE = "erm"  # DG tables; a transfer report names its baseline recipe


def paired_p(values: dict[int, float], baseline: dict[int, float]) -> float | None:
    shared = sorted(set(values) & set(baseline))
    if len(shared) < 2:
        return None
    diff = np.array([values[t] - baseline[t] for t in shared])
    if np.allclose(diff, diff[0]):  # t undefined; exact ties are not evidence either way
        return None if diff[0] == 0 else 0.0
    return float(st.ttest_rel([values[t] for t in shared], [baseline[t] for t in shared]).pvalue)


def with_test(cells: dict[str, Cell], baseline: str = BASELINE) -> dict[str, Cell]:
    """Attach each algorithm's raw paired p-value against the baseline in the same column."""
    base = cells.get(baseline)
    return {
        a: c
        if base is None or a == baseline
        else dataclasses.replace(c, p_raw=paired_p(c.values, base.values))
        for a, c in cells.items()
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: controls the family-wise error rate over all the comparisons."""
    order = np.argsort(pvalues, kind="stable")
    m, running, adjusted = len(pvalues), 0.0, [0.0] * len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def holm_table(table: dict[str, dict[str, Cell]]) -> dict[str, dict[str, Cell]]:
    """Every comparison with the baseline in one table is one family."""
    keys = [
        (col, a) for col, column in table.items() for a, c in column.items() if c.p_raw is not None
    ]
    adjusted = dict(zip(keys, holm([table[col][a].p_raw for col, a in keys])))
    return {
        col: {
            a: dataclasses.replace(c, p_vs_baseline=adjusted.get((col, a)))
            for a, c in column.items()
        }
        for col, column in table.items()
    }
