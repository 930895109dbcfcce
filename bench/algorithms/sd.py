"""SD, spectral decoupling: Gradient Starvation: A Learning Proclivity in Neural Networks
(Pezeshki, Kaba, Bengio, Courville, Precup & Lajoie, NeurIPS 2021, arXiv:2011.09468).

Loss = cross-entropy + sd_reg * mean squared logit (the L2 penalty on the network's
outputs, Eq. 5), as DomainBed's SD: one coefficient for all classes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms.base import Algorithm, Minibatches, classification_loss, register_algorithm, split_by_env
from bench.hparams import NON_NEGATIVE, LogUniform


@register_algorithm("sd")
class SD(Algorithm):
    """Spectral decoupling (Pezeshki et al., 2021): cross-entropy + sd_reg * mean squared logit."""

    VERSION = 1
    HPARAMS = {"sd_reg": LogUniform(0.1, "weight of the squared-logit penalty", low=1e-5, high=1e-1, domain=NON_NEGATIVE)}

    def __init__(self, input_shape, num_classes, num_train_envs, hparams):
        super().__init__(input_shape, num_classes, num_train_envs, hparams)
        self.build_network()
        self.optimizer = self.make_optimizer(self.network.parameters())

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        all_logits = self.predict(torch.cat([x for x, _ in minibatches]))
        nll = classification_loss(all_logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos([classification_loss(l, y) for l, (_, y) in zip(split_by_env(all_logits, minibatches), minibatches)])
        penalty = all_logits.pow(2).mean()
        loss = nll + self.hparams["sd_reg"] * penalty + self.l2_penalty()
        self.minimize(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}

    def predict(self, x: Tensor) -> Tensor:
        return self.network(x)
