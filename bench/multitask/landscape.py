"""Loss landscapes of the main task for a scratch run beside a pretrained one (Li et al. 2018).

Two views of the main task's training loss, for each run: along the straight line from the
weights its main-task training starts from (initialisation for ``single_task``; the
pretrained, rescaled weights for ``pretrain_finetune``) to its final weights, and on a 2-D
slice through the final weights along two random directions, filter-normalised as in Li et
al. 2018 ("Visualizing the loss landscape of neural nets"): each filter (row of a weight
matrix) of a direction is scaled to the norm of the same filter of the weights, and
directions are zero on biases. The runs are retrained from their specs (bit-exact, see
the runner), so nothing needs checkpointing. Only parameters the main task's prediction
depends on are moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from bench.multitask.method import MultiTaskMethod
from bench.multitask.runner import build_method, fit, load_task_set
from bench.multitask.spec import MTLSpec
from bench.multitask.tasks import TaskSet
from bench.records import write_json
from bench.seeding import torch_generator

LINE = np.linspace(-0.25, 1.25, 31)
SLICE = np.linspace(-1.0, 1.0, 21)


def main_parameters(method: MultiTaskMethod, taskset: TaskSet) -> list[nn.Parameter]:
    """The parameters the main task's loss has a gradient for."""
    j = taskset.task_names().index(taskset.main_task())
    split = taskset.data[taskset.main_task()]["train"]
    params = [p for p in method.parameters() if p.requires_grad]
    loss = method.tasks[j].loss(method.predict(split.x, j), split.y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [p for p, g in zip(params, grads) if g is not None]


def filter_normalised(weights: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """A random direction with each filter's norm equal to the weights' (zero on biases)."""
    out = []
    for w in weights:
        if w.dim() <= 1:
            out.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator)
        dims = tuple(range(1, w.dim()))
        scale = w.norm(dim=dims, keepdim=True) / d.norm(dim=dims, keepdim=True).clamp_min(1e-12)
        out.append(d * scale)
    return out


@torch.no_grad()
def main_loss(method: MultiTaskMethod, taskset: TaskSet, split: str) -> float:
    j = taskset.task_names().index(taskset.main_task())
    data = taskset.data[taskset.main_task()][split]
    method.eval()
    loss = float(method.tasks[j].loss(method.predict(data.x, j), data.y))
    method.train()
    return loss


@torch.no_grad()
def _at(params: list[nn.Parameter], values: list[Tensor]) -> None:
    for p, v in zip(params, values):
        p.copy_(v)


def trained_endpoints(
    spec: MTLSpec, taskset: TaskSet
) -> tuple[MultiTaskMethod, list[Tensor], list[Tensor]]:
    """The method trained as in its run, and its main parameters at the start of the main
    phase and at the end."""
    method = build_method(spec, taskset)
    begin = method.main_phase_start()
    fit(spec, taskset, method, range(begin))
    method.enter_main_phase()
    params = main_parameters(method, taskset)
    start = [p.detach().clone() for p in params]
    fit(spec, taskset, method, range(begin, spec.steps))
    return method, start, [p.detach().clone() for p in params]


def landscape(spec: MTLSpec, taskset: TaskSet) -> dict[str, Any]:
    """``line`` (train and test loss at start + a (final - start)) and ``slice`` (train loss at
    final + a d1 + b d2) of one run's main task."""
    method, start, final = trained_endpoints(spec, taskset)
    params = main_parameters(method, taskset)
    line = {"alpha": LINE.tolist(), "train": [], "test": []}
    for a in LINE:
        _at(params, [s + float(a) * (f - s) for s, f in zip(start, final)])
        line["train"].append(main_loss(method, taskset, "train"))
        line["test"].append(main_loss(method, taskset, "test"))
    generator = torch_generator("mtl_landscape", spec.trial_seed)
    d1, d2 = filter_normalised(final, generator), filter_normalised(final, generator)
    grid = []
    for a in SLICE:
        row = []
        for b in SLICE:
            _at(params, [f + float(a) * x + float(b) * y for f, x, y in zip(final, d1, d2)])
            row.append(main_loss(method, taskset, "train"))
        grid.append(row)
    _at(params, final)
    return {
        "run_id": spec.run_id,
        "method": spec.method,
        "line": line,
        "slice": {"axis": SLICE.tolist(), "train": grid},
    }


def compare(specs: list[MTLSpec], out: Path, data_dir: str | None = None) -> dict[str, Any]:
    """Landscapes of ``specs`` (e.g. scratch, pretrained) on one task set: ``out`` (PNG) and
    ``out`` with suffix .json (the numbers)."""
    found = [landscape(s, load_task_set(s.tasks, data_dir, s.data_seed, s.size)) for s in specs]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), found)
    _figure(found, specs[0].tasks, out)
    return {"figure": str(out), "runs": found}


def _figure(found: list[dict[str, Any]], tasks: str, out: Path) -> None:
    fig = Figure(figsize=(4.0 * (1 + len(found)), 3.6))
    axes = fig.subplots(1, 1 + len(found))
    for run, colour in zip(found, ("C0", "C1", "C2", "C3")):
        line = run["line"]
        axes[0].plot(line["alpha"], line["train"], color=colour, label=f"{run['method']} train")
        axes[0].plot(
            line["alpha"], line["test"], color=colour, ls="--", label=f"{run['method']} test"
        )
    axes[0].set(xlabel="alpha (0 = start, 1 = final)", ylabel="main-task loss")
    axes[0].legend(fontsize=7)
    grids = [np.asarray(run["slice"]["train"]) for run in found]
    every = np.concatenate([g.ravel() for g in grids])
    levels = np.linspace(every.min(), np.quantile(every, 0.9), 20)  # one scale; the basins
    for ax, run, grid in zip(axes[1:], found, grids):
        axis = run["slice"]["axis"]
        contour = ax.contourf(axis, axis, grid, levels=levels, cmap="viridis", extend="max")
        fig.colorbar(contour, ax=ax, label="train loss")
        ax.set(title=f"{run['method']}: slice at final weights", xlabel="d2", ylabel="d1")
    fig.suptitle(f"{tasks}: main task", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120, metadata={"Software": None})
