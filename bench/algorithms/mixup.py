"""Inter-domain Mixup (Yan, Song, Wang, Xu & Zhou 2020, arXiv:2001.00677; Xu et al.,
AAAI 2020; DomainBed's Mixup).

The environments are put in a random cycle; each batch is mixed with the next one,
x = lam * x_i + (1 - lam) * x_j with lam ~ Beta(alpha, alpha), and the loss is
lam * loss(x, y_i) + (1 - lam) * loss(x, y_j), averaged over the pairs. The cycle and
lam come from torch's global RNG, which the runner checkpoints. ``grad_cos`` is
measured on the clean environment batches from one extra forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms.base import Algorithm, Minibatches, classification_loss, register_algorithm
from bench.hparams import POSITIVE, LogUniform


def random_pairs(
    minibatches: Minibatches,
) -> list[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]:
    """Each environment with its successor in a random permutation, truncated to equal size."""
    perm = torch.randperm(len(minibatches)).tolist()
    pairs = []
    for i, k in enumerate(perm):
        (xi, yi), (xj, yj) = minibatches[k], minibatches[perm[(i + 1) % len(perm)]]
        n = min(len(yi), len(yj))
        pairs.append(((xi[:n], yi[:n]), (xj[:n], yj[:n])))
    return pairs


@register_algorithm("mixup")
class Mixup(Algorithm):
    """Inter-domain Mixup (Yan et al., 2020): train on convex mixes of two environments' batches."""

    VERSION = 1
    FAMILY = "augmentation"
    HPARAMS = {
        "mixup_alpha": LogUniform(
            0.2,
            "Beta(alpha, alpha) parameter of the mixing weight",
            low=1e-1,
            high=1e1,
            domain=POSITIVE,
        ),
    }

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        diagnostics = self.head_grad_cos_at(minibatches)
        alpha = torch.tensor(float(self.hparams["mixup_alpha"]))
        beta = torch.distributions.Beta(alpha, alpha)
        objective = torch.zeros((), device=self.step.device)
        for (xi, yi), (xj, yj) in random_pairs(minibatches):
            lam = float(beta.sample())
            logits = self.predict(lam * xi + (1 - lam) * xj)
            loss_i, loss_j = classification_loss(logits, yi), classification_loss(logits, yj)
            objective = objective + lam * loss_i + (1 - lam) * loss_j
        objective = objective / len(minibatches)
        loss = self.minimize(objective)
        return {"loss": loss.item(), "nll": objective.item(), **diagnostics}
