"""IDGM: inter-domain gradient matching (Shi et al., ICLR 2022, arXiv:2104.09937, Eq. 3).

Loss = mean environment risk - gamma * mean over pairs i < j of <G_i, G_j>, where G_e is
the gradient of environment e's risk with respect to all parameters. Second order:
the gradients are built with ``create_graph=True`` and the inner products are
differentiated (double backward). The paper uses IDGM to motivate Fish and gives no
default gamma; ours is a small value so the unbounded matching term cannot dominate
the risk early in training, searched over 10^U(-3, 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, autograd

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import NON_NEGATIVE, LogUniform


def flat_grad(loss: Tensor, params: list[Tensor]) -> Tensor:
    """The gradient of ``loss`` as one vector, kept in the graph for the double backward."""
    return torch.cat([g.reshape(-1) for g in autograd.grad(loss, params, create_graph=True)])


@register_algorithm("idgm")
class IDGM(Algorithm):
    """IDGM (Shi et al., 2022): risk - gamma * mean pairwise inner product of environment
    gradients."""

    VERSION = 1
    FAMILY = "gradient matching"
    HPARAMS = {
        "idgm_gamma": LogUniform(
            0.01,
            "weight of the mean pairwise gradient inner product (maximised)",
            low=1e-3,
            high=1.0,
            domain=NON_NEGATIVE,
        ),
    }

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        nlls = env_losses(self.predict(concat_inputs(minibatches)), minibatches)
        nll = torch.stack(nlls).mean()
        diagnostics = self.head_grad_cos(nlls)
        params = [p for p in self.network.parameters() if p.requires_grad]
        grads = torch.stack([flat_grad(l, params) for l in nlls])
        n = len(nlls)
        gram = grads @ grads.T
        dot = (gram.sum() - gram.diagonal().sum()) / (n * (n - 1)) if n > 1 else gram.new_zeros(())
        loss = self.minimize(nll + self.l2_penalty() - self.hparams["idgm_gamma"] * dot)
        return {"loss": loss.item(), "nll": nll.item(), "grad_dot": dot.item(), **diagnostics}
