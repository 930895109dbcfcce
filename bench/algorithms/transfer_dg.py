"""Transfer: Quantifying and Improving Transferability in Domain Generalization (Zhang, Zhao, Yu &
Poupart, NeurIPS 2021, arXiv:2106.03632), the Transfer algorithm as DomainBed's ``Transfer``.

Registered as ``transfer_dg``: it is a DG training objective, unrelated to bench's transfer
recipes (fine-tuning a pretrained model). Features are transferable when no classifier near
the learned one has very different excess risks across environments. Each step:
1. ERM step of featurizer + classifier;
2. a second step of the same Adam on ``t_lambda`` * gap, gap = max_e loss_e - min_e loss_e of
   an adversarial head on the features (only the featurizer receives gradients);
3. the adversarial head restarts from the classifier and takes ``d_steps_per_g`` SGD steps
   (lr ``lr_d``) ascending the gap, each projected back onto the Euclidean ball of radius
   ``delta`` around the classifier (all head parameters as one vector).

Deviations from DomainBed, none of which changes its default run: DomainBed's random search
sets ``gda`` True, which gives the main optimiser only the adversarial head's parameters, so
the featurizer and classifier never train (bench keeps gda's default, False, and drops the
key); its ``beta1`` and ``weight_decay_d`` are declared but never read (dropped here).
DomainBed's default ``d_steps_per_g`` (10) lies outside its search options (1, 2, 5).
Bench computes the features once for the adversary's steps (DomainBed recomputes them each
step: the same values unless the featurizer has dropout or BatchNorm in training mode).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Choice, LogUniform, Uniform


class ChoiceOrDefault(Choice):
    """A choice whose default need not be one of the searched options (DomainBed's registry)."""

    def validate(self, key: str, value: Any) -> Any:
        if value == self.default:
            return value
        return super().validate(key, value)


def project_(adversary: nn.Module, center: nn.Module, radius: float) -> None:
    """Move ``adversary``'s parameters onto the ball of ``radius`` around ``center``'s."""
    with torch.no_grad():
        pairs = list(zip(adversary.parameters(), center.parameters()))
        distance = torch.sqrt(sum((a - c).pow(2).sum() for a, c in pairs))
        if distance > radius:
            for a, c in pairs:
                a.copy_(c + (radius / distance) * (a - c))


@register_algorithm("transfer_dg")
class TransferDG(Algorithm):
    """Transfer (Zhang et al., 2021): ERM plus the loss gap of an adversarial head near the
    classifier."""

    VERSION = 1
    FAMILY = "invariance"
    HPARAMS = {
        "t_lambda": LogUniform(
            1.0, "weight of the environment loss gap", low=1e-2, high=1e1, domain=NON_NEGATIVE
        ),
        "delta": Uniform(
            2.0,
            "radius of the adversarial head's ball around the classifier",
            low=0.1,
            high=3.0,
            domain=NON_NEGATIVE,
        ),
        "d_steps_per_g": ChoiceOrDefault(
            10,
            "adversarial head steps per step (DomainBed searches 1, 2, 5 around a default of 10)",
            options=(1, 2, 5),
            domain=AT_LEAST_ONE,
        ),
        "lr_d": LogUniform(
            1e-3,
            "adversarial head SGD learning rate",
            low=10**-4.5,
            high=10**-2.5,
            domain=POSITIVE,
        ),
    }

    def build(self) -> None:
        super().build()
        self.adversary = copy.deepcopy(self.classifier)
        self.adversary_optimizer = torch.optim.SGD(
            self.adversary.parameters(), lr=self.hparams["lr_d"]
        )

    def gap(self, features: list[Tensor], minibatches: Minibatches) -> Tensor:
        """max_e loss_e - min_e loss_e of the adversarial head on each environment's features."""
        losses = torch.stack(
            [classification_loss(self.adversary(f), y) for f, (_, y) in zip(features, minibatches)]
        )
        return losses.max() - losses.min()

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        hp = self.hparams
        y = torch.cat([y for _, y in minibatches])
        logits = self.predict(concat_inputs(minibatches))
        nll = classification_loss(logits, y)
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        self.optimizer.zero_grad(set_to_none=True)
        (nll + self.l2_penalty(self.network.parameters())).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        features = [self.featurizer(x) for x, _ in minibatches]
        (hp["t_lambda"] * self.gap(features, minibatches)).backward()
        self.optimizer.step()
        self.adversary.load_state_dict(self.classifier.state_dict())
        with torch.no_grad():  # the featurizer does not move while the adversary does
            features = [self.featurizer(x) for x, _ in minibatches]
        for _ in range(hp["d_steps_per_g"]):
            gap = self.gap(features, minibatches)
            self.adversary_optimizer.zero_grad(set_to_none=True)
            (-hp["t_lambda"] * gap).backward()
            self.adversary_optimizer.step()
            project_(self.adversary, self.classifier, hp["delta"])
        self.finish_update()
        return {"loss": nll.item(), "gap": gap.item(), **diagnostics}
