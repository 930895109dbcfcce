"""Soft parameter sharing (Duong et al. 2015): one network per task, an L2 penalty pulling
corresponding trunk weights together.

Penalty ``soft_weight * sum_j ||theta_j - mean_k theta_k||^2`` over the trunks, which is
``soft_weight / T * sum_{j<k} ||theta_j - theta_k||^2``: the pairwise distances of the paper,
written around the mean. Heads are not tied (tasks may have different output sizes).
"""

import torch
from torch import Tensor

from bench.hparams import NON_NEGATIVE, LogUniform
from bench.multitask.method import PerTaskNetworks, register_method


@register_method("soft_sharing")
class SoftSharing(PerTaskNetworks):
    VERSION = 1
    HPARAMS = {
        "soft_weight": LogUniform(
            1e-2,
            "weight of the L2 distance between task trunks",
            low=1e-4,
            high=1.0,
            domain=NON_NEGATIVE,
        )
    }

    def objective(self, losses: list[Tensor]) -> Tensor:
        return super().objective(losses) + self.hparams["soft_weight"] * self.trunk_distance()

    def trunk_distance(self) -> Tensor:
        total = torch.zeros(())
        for tied in zip(*(trunk.parameters() for trunk in self.trunks)):
            stacked = torch.stack(tied)
            total = total + (stacked - stacked.mean(0)).pow(2).sum()
        return total
