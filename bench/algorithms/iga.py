"""IGA: Inter-environmental Gradient Alignment (Koyama & Yamaguchi, 2020, arXiv:2008.01883v2,
the version DomainBed cites).

Loss = mean environment risk + penalty * trace of the covariance of the per-environment
gradients, sum_e ||grad R_e - mean_e' grad R_e'||^2, over every parameter of the network,
differentiated through (second order). As DomainBed the trace is summed, not averaged, over
environments. DomainBed takes the mean gradient from a separate backward pass without a
graph; keeping it in the graph gives the same gradient (the deviations sum to zero), so
here it is the mean of the per-environment gradients.
"""

from __future__ import annotations

import torch
from torch import autograd

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import NON_NEGATIVE, LogUniform


@register_algorithm("iga")
class IGA(Algorithm):
    """IGA (Koyama & Yamaguchi, 2020): risk + penalty * spread of per-environment gradients."""

    VERSION = 1
    FAMILY = "gradient matching"
    HPARAMS = {
        "penalty": LogUniform(
            1000.0,
            "weight of the trace of the per-environment gradient covariance",
            low=1e1,
            high=1e5,
            domain=NON_NEGATIVE,
        ),
    }

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        nlls = env_losses(self.predict(concat_inputs(minibatches)), minibatches)
        nll = torch.stack(nlls).mean()
        params = [p for p in self.network.parameters() if p.requires_grad]
        grads = [
            torch.cat(
                [
                    g.reshape(-1)
                    for g in autograd.grad(e, params, create_graph=True, materialize_grads=True)
                ]
            )
            for e in nlls
        ]
        grads = torch.stack(grads)
        penalty = (grads - grads.mean(dim=0, keepdim=True)).pow(2).sum()
        diagnostics = self.head_grad_cos(nlls)
        loss = self.minimize(nll + self.hparams["penalty"] * penalty)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}
