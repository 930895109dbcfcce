"""Training diagnostics of the selected runs (e.g. ``grad_cos``) as tables for a board.

Reading the runs a selection rule chose, not every run, keeps a diagnostic tied to the
numbers in the accuracy table beside it.
"""

from __future__ import annotations

import numpy as np

from bench.report import Report, Table

DIAGNOSTIC = "grad_cos"


def diagnostic_curves(
    report: Report, dataset: str, rule: str, key: str = DIAGNOSTIC
) -> dict[str, dict[int, list[float]]]:
    """algorithm -> record step -> ``train[key]`` of the runs ``rule`` selected (one per cell
    trial).

    Reading the selected runs, not every run, keeps the curve tied to the numbers in the
    accuracy table: it shows how the reported models trained, e.g. whether Fish's
    per-environment gradients became more aligned than ERM's.
    """
    by_id = {r.run_id: r for r in report.runs}
    chosen = {
        s.run_id: s.algorithm
        for s in report.selected[rule]
        if s.dataset == dataset and s.run_id is not None
    }
    curves: dict[str, dict[int, list[float]]] = {}
    for run_id, algorithm in chosen.items():  # a run holding out several test envs counts once
        for rec in by_id[run_id].records:
            value = rec.get("train", {}).get(key)
            if value is not None:
                curves.setdefault(algorithm, {}).setdefault(rec["step"], []).append(float(value))
    return curves


def diagnostic_table(
    report: Report, dataset: str, rule: str, key: str = DIAGNOSTIC, max_steps: int = 8
) -> Table | None:
    """Mean ± std over the selected runs of a training diagnostic at up to ``max_steps`` evenly
    spaced record steps."""
    curves = diagnostic_curves(report, dataset, rule, key)
    if not curves:
        return None
    steps = sorted({step for curve in curves.values() for step in curve})
    shown = [
        steps[i]
        for i in sorted(
            set(np.linspace(0, len(steps) - 1, min(max_steps, len(steps))).round().astype(int))
        )
    ]

    def fmt(values: list[float] | None) -> str:
        if not values:
            return "–"
        return (
            f"{np.mean(values):+.2f}"
            + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")
            + f" ({len(values)})"
        )

    rows = [
        [a, *(fmt(curves[a].get(step)) for step in shown)]
        for a in report.algorithms(dataset)
        if a in curves
    ]
    note = (
        f"`{key}` recorded by the training loop (averaged over the steps since the "
        "previous record) in the runs selected by "
        f"`{rule}` (one per test environment and trial; a run holding out several test "
        "environments counts once): mean ± std (ddof=1) over them (n)."
    )
    return Table(
        f"{dataset} — {key} — {rule}", ["algorithm", *(f"step {s}" for s in shown)], rows, [note]
    )
