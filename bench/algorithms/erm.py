"""Empirical Risk Minimisation (Vapnik, 1998): pool all training environments, minimise the
average loss.

Also reports ``grad_cos``, the mean pairwise cosine of the per-environment gradients
of the classifier head (see ``Algorithm.head_grad_cos``), as the baseline for Fish.
"""

from __future__ import annotations

import torch

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)


@register_algorithm("erm")
class ERM(Algorithm):
    VERSION = 1
    FAMILY = "baseline"

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        logits = self.predict(concat_inputs(minibatches))
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        loss = self.minimize(nll)
        return {"loss": loss.item(), "nll": nll.item(), **diagnostics}
