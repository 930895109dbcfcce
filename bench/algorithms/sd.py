"""SD, spectral decoupling: Gradient Starvation: A Learning Proclivity in Neural Networks
(Pezeshki, Kaba, Bengio, Courville, Precup & Lajoie, NeurIPS 2021, arXiv:2011.09468).

Loss = cross-entropy + sd_reg * mean squared logit (the L2 penalty on the network's
outputs, Eq. 5), as DomainBed's SD: one coefficient for all classes.
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
from bench.hparams import NON_NEGATIVE, LogUniform


@register_algorithm("sd")
class SD(Algorithm):
    """Spectral decoupling (Pezeshki et al., 2021): cross-entropy + sd_reg * mean squared logit."""

    VERSION = 1
    FAMILY = "regularisation"
    HPARAMS = {
        "sd_reg": LogUniform(
            0.1, "weight of the squared-logit penalty", low=1e-5, high=1e-1, domain=NON_NEGATIVE
        ),
    }

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        logits = self.predict(concat_inputs(minibatches))
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        penalty = logits.pow(2).mean()
        loss = self.minimize(nll + self.hparams["sd_reg"] * penalty)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}
