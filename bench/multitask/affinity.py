"""Task-affinity heatmap: the mean per-pair task gradient cosine over a run, over trials.

The cosine is recorded on the shared parameters during training (``method.gradient_cosines``),
averaged over the steps between records; here it is averaged over every record of every
trial of one method (hard sharing by default), so the figure shows how much the tasks
agreed along the whole trajectory, not only at its end, where gradients are mostly noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from bench.multitask.results import Run
from bench.multitask.tasks import TASK_SETS


def affinity_matrix(names: list[str], runs: list[Run]) -> np.ndarray | None:
    """Symmetric matrix of mean cosines (1 on the diagonal); None when no run recorded any."""
    sums, counts = np.zeros((len(names), len(names))), np.zeros((len(names), len(names)))
    index = {n: i for i, n in enumerate(names)}
    for run in runs:
        for record in run.records:
            for pair, value in record["train"].get("grad_cos", {}).items():
                a, b = (index[n] for n in pair.split("|"))
                for i, j in ((a, b), (b, a)):
                    sums[i, j] += value
                    counts[i, j] += 1
    if not counts.any():
        return None
    matrix = np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
    np.fill_diagonal(matrix, 1.0)
    return matrix


def affinity_figure(
    tasks: str, rows: dict[str, dict[int, Run]], methods: Sequence[str], folder: Path
) -> tuple[Path, str] | None:
    """``folder/affinity_<tasks>.png`` of the first of ``methods`` (board rows) with recorded
    cosines, and that method; None when none has any."""
    names = TASK_SETS.get(tasks).task_names()
    for method in methods:
        matrix = affinity_matrix(names, list(rows.get(method, {}).values()))
        if matrix is not None:
            return _draw(tasks, names, matrix, method, folder), method
    return None


def _draw(tasks: str, names: list[str], matrix: np.ndarray, method: str, folder: Path) -> Path:
    side = 0.6 * len(names)  # wide enough for the title with two tasks
    fig = Figure(figsize=(max(3.6, 1.6 + side), 1.4 + side))  # no pyplot state
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="RdBu", vmin=-1.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            dark = abs(matrix[i, j]) > 0.6  # white on the saturated ends of the colour map
            colour = "white" if dark else "black"
            text = f"{matrix[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(f"{tasks}\ngradient cosine ({method})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"affinity_{tasks}.png"
    fig.savefig(path, dpi=120, metadata={"Software": None})  # same bytes across versions
    return path
