"""Loss landscapes of a trained network (Li et al. 2018, "Visualizing the loss landscape of
neural nets"), whatever trained it.

Two views of a loss around a run: along the straight line from the weights its training
started from to its final weights (``start + alpha (final - start)``), and on a 2-D slice
through the final weights along two random directions (``final + a d1 + b d2``). The
directions are filter-normalised as in the paper: each filter (row of a weight matrix, output
channel of a convolution) of a direction is scaled to the norm of the same filter of the
weights, so the slice's scale means the same in every layer and in every network; biases and
other 1-D parameters (e.g. normalisation scales) are not moved. Buffers (BatchNorm running
statistics) stay at their final values along both views.

The callers (``bench.multitask.landscape``, ``bench.transfer.landscape``) decide which weights
are the start and the end and which loss is drawn; this module only moves parameters and
draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

LINE = np.linspace(-0.25, 1.25, 31)  # a little past both ends: is the start a ridge, a basin?
SLICE = np.linspace(-1.0, 1.0, 21)

Loss = Callable[[], float]  # the loss at the parameters' current values


def filter_normalised(weights: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """A random direction with each filter's norm equal to the weights' (zero on biases)."""
    out = []
    for w in weights:
        if w.dim() <= 1:
            out.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator).to(w)
        dims = tuple(range(1, w.dim()))
        norm = torch.linalg.vector_norm  # Tensor.norm over 3 dims fails (a 2-D conv's filters)
        scale = norm(w, dim=dims, keepdim=True) / norm(d, dim=dims, keepdim=True).clamp_min(1e-12)
        out.append(d * scale)
    return out


@torch.no_grad()
def set_parameters(params: Sequence[nn.Parameter], values: Sequence[Tensor]) -> None:
    for p, v in zip(params, values):
        p.copy_(v)


def along_line(
    params: Sequence[nn.Parameter],
    start: Sequence[Tensor],
    final: Sequence[Tensor],
    losses: dict[str, Loss],
    alphas: np.ndarray = LINE,
) -> dict[str, list[float]]:
    """``{"alpha": [...], name: [loss at start + alpha (final - start)] for each loss}``; the
    parameters are left at ``final``."""
    line: dict[str, list[float]] = {"alpha": alphas.tolist(), **{name: [] for name in losses}}
    for a in alphas:
        set_parameters(params, [s + float(a) * (f - s) for s, f in zip(start, final)])
        for name, loss in losses.items():
            line[name].append(loss())
    set_parameters(params, final)
    return line


def on_slice(
    params: Sequence[nn.Parameter],
    centre: Sequence[Tensor],
    directions: tuple[Sequence[Tensor], Sequence[Tensor]],
    loss: Loss,
    axis: np.ndarray = SLICE,
) -> list[list[float]]:
    """``grid[i][j]`` = loss at ``centre + axis[i] d1 + axis[j] d2``; the parameters are left at
    ``centre``."""
    d1, d2 = directions
    grid = []
    for a in axis:
        row = []
        for b in axis:
            set_parameters(
                params, [c + float(a) * x + float(b) * y for c, x, y in zip(centre, d1, d2)]
            )
            row.append(loss())
        grid.append(row)
    set_parameters(params, centre)
    return grid


def draw(
    found: Sequence[dict[str, Any]], labels: Sequence[str], title: str, ylabel: str, out: Path
) -> None:
    """One line panel (every run's ``line`` series: the first solid, the others dashed) and
    one slice panel per run (its ``slice["train"]`` grid), all slices on one colour scale so
    their basins compare; PNG at ``out``."""
    fig = Figure(figsize=(4.0 * (1 + len(found)), 3.6))
    axes = fig.subplots(1, 1 + len(found))
    for run, label, colour in zip(found, labels, ("C0", "C1", "C2", "C3")):
        line = run["line"]
        series = [k for k in line if k != "alpha"]
        for k, style in zip(series, ("-", "--", ":")):
            axes[0].plot(line["alpha"], line[k], color=colour, ls=style, label=f"{label} {k}")
    axes[0].set(xlabel="alpha (0 = start, 1 = final)", ylabel=ylabel)
    axes[0].legend(fontsize=7)
    grids = [np.asarray(run["slice"]["train"]) for run in found]
    every = np.concatenate([g.ravel() for g in grids])
    levels = np.linspace(every.min(), np.quantile(every, 0.9), 20)  # one scale; the basins
    for ax, run, label, grid in zip(axes[1:], found, labels, grids):
        axis = run["slice"]["axis"]
        contour = ax.contourf(axis, axis, grid, levels=levels, cmap="viridis", extend="max")
        fig.colorbar(contour, ax=ax, label="train loss")
        ax.set(title=f"{label}: slice at final weights", xlabel="d2", ylabel="d1")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, metadata={"Software": None})
