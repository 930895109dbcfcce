"""The multi-task method contract: ``update(batches)`` with one batch per task, ``predict(x, j)``.

The base holds what every method shares: the hparams of the trunk (an MLP; depth 0 is a
linear model), Adam, the uniform objective (the mean of the task losses, so ``lr`` means the
same for any number of tasks), the step counter and the per-pair task gradient cosine on
the parameters the tasks share (``shared_parameters``; none for methods that share none).
A method file holds only what its paper adds: its networks, objective or gradient rule.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import UserError
from bench.hparams import (
    NON_NEGATIVE,
    POSITIVE,
    Choice,
    Domain,
    IntLogUniform,
    LogUniform,
    Param,
    Setting,
)
from bench.multitask.tasks import Task
from bench.networks import MLP, build_featurizer
from bench.registry import Registry

METHODS: Registry["MultiTaskMethod"] = Registry("mtl method", "bench.multitask.methods")
register_method = METHODS.register

Batches = list[tuple[Tensor, Tensor]]  # one (x, y) per task, in the task set's order


def build_trunk(input_shape: Sequence[int], hparams: Mapping[str, Any]) -> nn.Module:
    """An MLP of ``depth`` hidden layers (attribute ``n_outputs``); depth 0 flattens only.

    ``trunk`` names another bench featurizer instead (e.g. ``seq_cnn`` for DNA), built at
    its own defaults (``bench/networks.py``); ``width`` and ``depth`` are the MLP's.
    """
    if hparams["trunk"] != "mlp":
        return build_featurizer(tuple(input_shape), {"featurizer": hparams["trunk"]})
    n_inputs = math.prod(input_shape)
    if hparams["depth"] == 0:
        trunk = nn.Flatten()
        trunk.n_outputs = n_inputs
        return trunk
    return MLP(n_inputs, hparams["width"], hparams["depth"], 0.0)


def flat_gradients(losses: Sequence[Tensor], params: Sequence[Tensor]) -> list[Tensor]:
    """Each loss's gradient w.r.t. ``params``, flattened; graphs are kept for a later backward."""
    out = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for p, g in zip(params, grads)
                ]
            )
        )
    return out


def pairwise_cosines(vectors: Sequence[Tensor], names: Sequence[str]) -> dict[str, float]:
    """``{"a|b": cos(v_a, v_b)}`` for every pair a before b (a zero vector has cosine 0)."""
    unit = F.normalize(torch.stack([v.detach() for v in vectors]), dim=1)
    gram = unit @ unit.T
    return {
        f"{names[i]}|{names[j]}": float(gram[i, j])
        for i in range(len(names))
        for j in range(i + 1, len(names))
    }


class MultiTaskMethod(nn.Module):
    """Base class; a subclass builds its networks in ``build`` and defines ``predict``."""

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    SCORED: ClassVar[str] = "all"  # "main": only the main task's numbers mean something
    HPARAMS: ClassVar[dict[str, Param]] = {
        "lr": LogUniform(1e-3, "Adam learning rate", low=1e-4, high=10**-1.5, domain=POSITIVE),
        "weight_decay": LogUniform(
            0.0, "Adam weight decay", low=1e-6, high=1e-2, domain=NON_NEGATIVE
        ),
        "batch_size": IntLogUniform(
            64,
            "examples per task per step (0 = whole split)",
            low=16,
            high=256,
            domain=NON_NEGATIVE,
        ),
        "width": IntLogUniform(256, "trunk hidden width", low=64, high=512, domain=Domain(1)),
        "trunk": Setting("mlp", "trunk network", options=("mlp", "seq_cnn")),
        "depth": Choice(
            2, "trunk hidden layers (0 = linear model)", options=(1, 2, 3), domain=Domain(0)
        ),
    }

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        hparams: Mapping[str, Any],
        steps: int,
        main_task: int = 0,
    ) -> None:
        super().__init__()
        self.tasks, self.input_shape = tuple(tasks), tuple(input_shape)
        self.hparams, self.steps, self.main_task = dict(hparams), steps, main_task
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        problem = self.incompatible(self.tasks)
        if problem:
            raise UserError(f"{self.NAME}: {problem}")
        self.build()
        self.optimizer = self.make_optimizer()

    @classmethod
    def incompatible(cls, tasks: Sequence[Task]) -> str | None:
        """Why this method cannot run these tasks (a sweep skips the pair), or None."""
        return None

    def main_phase_start(self) -> int:
        """The step from which the main task is trained as in the end (0; pretraining: later)."""
        return 0

    def enter_main_phase(self) -> None:
        """What happens at ``main_phase_start`` before its update (pretraining: the rescaling)."""

    def build(self) -> None:
        raise NotImplementedError

    def predict(self, x: Tensor, task: int) -> Tensor:
        raise NotImplementedError

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on: where task gradients meet (and conflict)."""
        return []

    def task_losses(self, batches: Batches) -> list[Tensor]:
        return [
            t.loss(self.predict(x, j), y) for j, (t, (x, y)) in enumerate(zip(self.tasks, batches))
        ]

    def objective(self, losses: list[Tensor]) -> Tensor:
        """Uniform weighting: the mean of the task losses."""
        return torch.stack(losses).mean()

    def update(self, batches: Batches) -> dict[str, Any]:
        losses = self.task_losses(batches)
        cosines = self.gradient_cosines(losses)
        total = self.objective(losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        return self.summary(total, losses, cosines)

    def gradient_cosines(
        self, losses: list[Tensor], grads: list[Tensor] | None = None
    ) -> dict[str, float]:
        """Per-pair cosine of the task gradients on the shared parameters (empty if none)."""
        params = self.shared_parameters()
        if not params or len(losses) < 2:
            return {}
        grads = flat_gradients(losses, params) if not grads else grads
        return pairwise_cosines(grads, [t.name for t in self.tasks])

    def summary(
        self, total: Tensor, losses: list[Tensor], cosines: dict[str, float]
    ) -> dict[str, Any]:
        return {
            "loss": float(total.detach()),
            "task_loss": {t.name: float(l.detach()) for t, l in zip(self.tasks, losses)},
            "grad_cos": cosines,
        }


class PerTaskNetworks(MultiTaskMethod):
    """One trunk and head per task (single-task baselines, soft sharing)."""

    def build(self) -> None:
        self.trunks = nn.ModuleList(build_trunk(self.input_shape, self.hparams) for _ in self.tasks)
        self.heads = nn.ModuleList(
            nn.Linear(trunk.n_outputs, t.n_outputs) for trunk, t in zip(self.trunks, self.tasks)
        )

    def predict(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self.trunks[task](x))


class SharedTrunk(MultiTaskMethod):
    """One trunk, one linear head per task (hard parameter sharing and its variants)."""

    def build(self) -> None:
        self.trunk = build_trunk(self.input_shape, self.hparams)
        self.heads = nn.ModuleList(nn.Linear(self.trunk.n_outputs, t.n_outputs) for t in self.tasks)

    def predict(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self.trunk(x))

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())
