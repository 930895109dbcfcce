"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): learned task weights.

Each task j has a learned ``s_j = log sigma_j^2`` (initialised at 0) and contributes
``exp(-s_j) L_j / 2 + s_j / 2`` for regression (a Gaussian likelihood) and
``exp(-s_j) L_j + s_j / 2`` for classification (the paper's approximation of a scaled
softmax); the objective is their mean over tasks, on a hard-shared network.
"""

import torch
from torch import Tensor, nn

from bench.multitask.method import SharedTrunk, register_method


@register_method("uncertainty_weighting")
class UncertaintyWeighting(SharedTrunk):
    VERSION = 1

    def build(self) -> None:
        super().build()
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        self.register_buffer(
            "loss_scale",
            torch.tensor([0.5 if t.kind == "regression" else 1.0 for t in self.tasks]),
        )

    def objective(self, losses: list[Tensor]) -> Tensor:
        precision = torch.exp(-self.log_vars)
        terms = self.loss_scale * precision * torch.stack(losses) + 0.5 * self.log_vars
        return terms.mean()
