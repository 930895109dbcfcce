"""Loss landscapes of the main task for a scratch run beside a pretrained one (Li et al. 2018).

Two views of the main task's training loss, for each run: along the straight line from the
weights its main-task training starts from (initialisation for ``single_task``; the
pretrained, rescaled weights for ``pretrain_finetune``) to its final weights, and on a 2-D
slice through the final weights along two random directions, filter-normalised as in Li et
al. 2018 (``bench.landscape`` moves the weights and draws). The runs are retrained from
their specs (bit-exact, see the runner), so nothing needs checkpointing. Only parameters the
main task's prediction depends on are moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bench.landscape import LINE, SLICE, along_line, draw, filter_normalised, on_slice
from bench.multitask.method import MultiTaskMethod
from bench.multitask.runner import build_method, fit, load_task_set
from bench.multitask.spec import MTLSpec
from bench.multitask.tasks import TaskSet
from bench.records import write_json
from bench.seeding import torch_generator

__all__ = [  # LINE and filter_normalised: the shared ones, re-exported
    "LINE",
    "compare",
    "filter_normalised",
    "landscape",
    "main_parameters",
]


def main_parameters(method: MultiTaskMethod, taskset: TaskSet) -> list[nn.Parameter]:
    """The parameters the main task's loss has a gradient for."""
    j = taskset.task_names().index(taskset.main_task())
    split = taskset.data[taskset.main_task()]["train"]
    params = [p for p in method.parameters() if p.requires_grad]
    loss = method.tasks[j].loss(method.predict(split.x, j), split.y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [p for p, g in zip(params, grads) if g is not None]


@torch.no_grad()
def main_loss(method: MultiTaskMethod, taskset: TaskSet, split: str) -> float:
    j = taskset.task_names().index(taskset.main_task())
    data = taskset.data[taskset.main_task()][split]
    method.eval()
    loss = float(method.tasks[j].loss(method.predict(data.x, j), data.y))
    method.train()
    return loss


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
    line = along_line(
        params,
        start,
        final,
        {
            split: (lambda split=split: main_loss(method, taskset, split))
            for split in ("train", "test")
        },
    )
    generator = torch_generator("mtl_landscape", spec.trial_seed)
    d1, d2 = filter_normalised(final, generator), filter_normalised(final, generator)
    grid = on_slice(params, final, (d1, d2), lambda: main_loss(method, taskset, "train"))
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
    draw(
        found,
        [run["method"] for run in found],
        f"{specs[0].tasks}: main task",
        "main-task loss",
        out,
    )
    return {"figure": str(out), "runs": found}
