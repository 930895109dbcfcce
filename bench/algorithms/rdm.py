"""RDM: Domain Generalisation via Risk Distribution Matching (Nguyen, Do, Duong & Nguyen,
WACV 2024, arXiv:2310.18598).

Each environment is described by the distribution of its per-example losses (its risk
distribution). Rather than match every pair, RDM matches the worst environment's (the one
with the largest mean loss) to the pooled distribution of all environments, with a
Gaussian-kernel MMD on the scalar losses (bandwidths 1e-4 ... 1e3). Loss = mean environment
risk + rdm_lambda * MMD + variance_weight * (Var(all losses) + Var(worst losses)), both
weights 0 for ``rdm_penalty_anneal_iters`` steps; at the anneal step Adam is re-created with
learning rate ``rdm_lr`` (a second optimiser, built up front and checkpointed).
On DomainBed's large-image datasets its defaults and ranges depend on the dataset, batch size
included; they live with the datasets (bench/datasets/domainbed_hparams.py). DomainBed's code
needs CUDA and equal batch sizes per environment; here the pooled losses are a
concatenation, so neither is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    register_algorithm,
    split_by_env,
)
from bench.hparams import NON_NEGATIVE, POSITIVE, IntUniform, Uniform

BANDWIDTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def scalar_mmd(a: Tensor, b: Tensor) -> Tensor:
    """Squared MMD between two samples of scalars, kernel sum_g exp(-g * (a - b)^2)."""

    def kernel(u: Tensor, v: Tensor) -> Tensor:
        sq = (u[:, None] - v[None, :]).pow(2).clamp_min(1e-30)
        return sum(torch.exp(-g * sq) for g in BANDWIDTHS).mean()

    return kernel(a, a) + kernel(b, b) - 2 * kernel(a, b)


@register_algorithm("rdm")
class RDM(Algorithm):
    """RDM (Nguyen et al., 2024): match the worst environment's loss distribution to the pooled
    one."""

    VERSION = 1
    FAMILY = "invariance"
    HPARAMS = {
        "rdm_lambda": Uniform(
            5.0,
            "weight of the MMD between worst and pooled risk distributions",
            low=0.1,
            high=10.0,
            domain=NON_NEGATIVE,
        ),
        "rdm_penalty_anneal_iters": IntUniform(
            1500, "steps before the penalties switch on", low=800, high=2700, domain=NON_NEGATIVE
        ),
        "variance_weight": Uniform(
            0.004,
            "weight of the variance of the pooled and worst-environment losses",
            low=0.001,
            high=0.007,
            domain=NON_NEGATIVE,
        ),
        "rdm_lr": Uniform(
            1.5e-5, "Adam learning rate after the anneal step", low=8e-6, high=2e-5, domain=POSITIVE
        ),
    }

    def build(self) -> None:
        super().build()
        self.matching_optimizer = self.make_optimizer(
            self.parameters_to_optimize(), lr=self.hparams["rdm_lr"]
        )

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        logits = split_by_env(self.predict(concat_inputs(minibatches)), minibatches)
        losses = [classification_loss(l, y, "none") for l, (_, y) in zip(logits, minibatches)]
        nlls = [l.mean() for l in losses]
        nll = torch.stack(nlls).mean()
        worst = losses[int(torch.stack(nlls).argmax())]
        pooled = torch.cat(losses)
        matching = scalar_mmd(worst, pooled)
        variance = pooled.var() + worst.var()
        hp = self.hparams
        penalty = hp["rdm_lambda"] * matching + hp["variance_weight"] * variance
        on = int(self.step) >= hp["rdm_penalty_anneal_iters"]
        diagnostics = self.head_grad_cos(nlls)
        loss = nll + penalty if on else nll
        loss = self.minimize(loss, self.matching_optimizer if on else self.optimizer)
        return {
            "loss": loss.item(),
            "nll": nll.item(),
            "matching_penalty": matching.item(),
            "variance_penalty": variance.item(),
            **diagnostics,
        }
