"""Empirical Risk Minimisation (Vapnik, 1998): pool all training environments, minimise the average loss.

Also reports ``grad_cos``, the mean pairwise cosine of the per-environment gradients
of the classifier head (see ``Algorithm.head_grad_cos``), as the baseline for Fish.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms.base import Algorithm, Minibatches, classification_loss, register_algorithm, split_by_env


@register_algorithm("erm")
class ERM(Algorithm):
    VERSION = 1

    def __init__(self, input_shape, num_classes, num_train_envs, hparams):
        super().__init__(input_shape, num_classes, num_train_envs, hparams)
        self.build_network()
        self.optimizer = self.make_optimizer(self.network.parameters())

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        logits = self.predict(x)
        nll = classification_loss(logits, y)
        diagnostics = self.head_grad_cos([classification_loss(l, y) for l, (_, y) in zip(split_by_env(logits, minibatches), minibatches)])
        loss = nll + self.l2_penalty()
        self.minimize(loss)
        return {"loss": loss.item(), "nll": nll.item(), **diagnostics}

    def predict(self, x: Tensor) -> Tensor:
        return self.network(x)
