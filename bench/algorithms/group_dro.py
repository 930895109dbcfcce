"""GroupDRO: Distributionally Robust Neural Networks for Group Shifts (Sagawa, Koh,
Hashimoto & Liang, ICLR 2020, arXiv:1911.08731), Algorithm 1 with environments as groups.

Weights q over environments follow exponentiated gradient ascent on the environment
losses, q_e <- q_e * exp(eta * loss_e), renormalised; the model minimises sum_e q_e loss_e.
q is a buffer (checkpointed). As DomainBed: no group adjustment, no class reweighting.
"""

from __future__ import annotations

import torch

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import POSITIVE, LogUniform


@register_algorithm("group_dro")
class GroupDRO(Algorithm):
    """GroupDRO (Sagawa et al., 2020): minimise the q-weighted risk, q ascends on environment
    losses."""

    VERSION = 1
    FAMILY = "robust optimisation"
    HPARAMS = {
        "groupdro_eta": LogUniform(
            1e-2,
            "step size of the exponentiated-gradient update of the group weights",
            low=1e-3,
            high=1e-1,
            domain=POSITIVE,
        ),
    }

    def build(self) -> None:
        super().build()
        self.register_buffer("q", torch.ones(self.num_train_envs))

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        nlls = env_losses(self.predict(concat_inputs(minibatches)), minibatches)
        losses = torch.stack(nlls)
        self.q.mul_(torch.exp(self.hparams["groupdro_eta"] * losses.detach()))
        self.q.div_(self.q.sum())
        diagnostics = self.head_grad_cos(nlls)
        loss = self.minimize(torch.dot(losses, self.q))
        return {
            "loss": loss.item(),
            "nll": losses.mean().item(),
            "q_max": self.q.max().item(),
            **diagnostics,
        }
