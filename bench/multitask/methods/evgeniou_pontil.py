"""Regularised multi-task learning (Evgeniou & Pontil, KDD 2004): linear tasks ``w_j = w0 + v_j``.

Objective: ``mean_j L_j(w0 + v_j) + lambda1 / T * sum_j ||v_j||^2 + lambda2 * ||w0||^2``,
with ``L_j`` the task's mean loss (squared error or logistic). A large ``lambda1 / lambda2``
ties every task to the shared ``w0``; a small one leaves T independent ridge problems. The
paper writes the data term as a sum; the mean over tasks here only rescales both lambdas
(by T). No intercept, weights start at zero; tasks need one output each. The gradient cosine
is measured on ``w0``, where the tasks meet.
"""

from typing import Sequence

import torch
from torch import Tensor, nn

from bench.hparams import NON_NEGATIVE, LogUniform
from bench.multitask.method import MultiTaskMethod, register_method
from bench.multitask.tasks import Task


@register_method("evgeniou_pontil")
class EvgeniouPontil(MultiTaskMethod):
    VERSION = 1
    HPARAMS = {
        "lambda1": LogUniform(
            1.0,
            "weight of the task deviations lambda1/T sum ||v_j||^2",
            low=1e-2,
            high=1e2,
            domain=NON_NEGATIVE,
        ),
        "lambda2": LogUniform(
            1e-3,
            "weight of the shared part lambda2 ||w0||^2",
            low=1e-4,
            high=1.0,
            domain=NON_NEGATIVE,
        ),
    }

    @classmethod
    def incompatible(cls, tasks: Sequence[Task]) -> str | None:
        if any(t.n_outputs != 1 for t in tasks):
            return "needs single-output tasks (regression or binary), one weight vector each"
        return None

    def build(self) -> None:
        dim = 1
        for d in self.input_shape:
            dim *= d
        self.w0 = nn.Parameter(torch.zeros(dim))
        self.v = nn.Parameter(torch.zeros(len(self.tasks), dim))

    def predict(self, x: Tensor, task: int) -> Tensor:
        return (x.flatten(1) @ (self.w0 + self.v[task]))[:, None]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.w0]

    def objective(self, losses: list[Tensor]) -> Tensor:
        penalty = self.hparams["lambda1"] / len(self.tasks) * self.v.pow(2).sum()
        return super().objective(losses) + penalty + self.hparams["lambda2"] * self.w0.pow(2).sum()
