"""SelfReg: Self-supervised Contrastive Regularization for Domain Generalization (Kim, Park, Kim
& Lee, ICCV 2021, arXiv:2104.09841).

Contrastive learning with positive pairs only: each example is paired with a random example
of the same class (from any environment), and its logits and features are pulled towards
the partner's (mean squared error), once directly ("individualised") and once towards a
mixup of two partners with weight lam ~ Beta(0.5, 0.5) ("heterogeneous"). The partner's
features first pass through the class-specific domain perturbation layer (CDPL), a
3-layer MLP with BatchNorm. Loss = CE + c * (lam * (L_logit + 0.3 L_feat) + (1 - lam) *
(L_logit_mix + 0.3 L_feat_mix)), c = min(CE, 1) (a number, not differentiated). No
hyperparameters.

As DomainBed: the CDPL's hidden width is twice the feature width (equal to it for 2048-d
features), and it is not in the optimiser, so it stays a random projection whose
BatchNorm normalises each batch. Partners are drawn with torch's generator (DomainBed:
lam from numpy's global one), so runs are seeded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)

FEATURE_WEIGHT = 0.3  # of the feature terms against the logit terms
MIX = Beta(0.5, 0.5)


def same_class_partners(y: Tensor) -> Tensor:
    """For each row, the index of a random row of the same class (a permutation per class)."""
    partners = torch.empty_like(y)
    for label in y.unique():
        members = (y == label).nonzero().squeeze(1)
        partners[members] = members[torch.randperm(len(members), device=y.device)]
    return partners


def cdpl(width: int) -> nn.Module:
    hidden = width if width == 2048 else 2 * width
    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, width),
        nn.BatchNorm1d(width),
    )


@register_algorithm("self_reg")
class SelfReg(Algorithm):
    """SelfReg (Kim et al., 2021): pull each example's logits and features to a same-class
    partner's."""

    VERSION = 1
    FAMILY = "alignment"

    def build(self) -> None:
        super().build()
        self.cdpl = cdpl(self.featurizer.n_outputs)  # not optimised, as DomainBed

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        y = torch.cat([y for _, y in minibatches])
        features = self.featurizer(concat_inputs(minibatches))
        projected = self.cdpl(features)
        logits = self.classifier(features)
        nll = classification_loss(logits, y)
        lam = float(MIX.sample())
        first, second = same_class_partners(y), same_class_partners(y)
        mixed_logits = lam * logits[first] + (1 - lam) * logits[second]
        mixed_features = lam * projected[first] + (1 - lam) * projected[second]
        individual = F.mse_loss(logits, logits[first]) + FEATURE_WEIGHT * F.mse_loss(
            features, projected[first]
        )
        heterogeneous = F.mse_loss(logits, mixed_logits) + FEATURE_WEIGHT * F.mse_loss(
            features, mixed_features
        )
        penalty = lam * individual + (1 - lam) * heterogeneous
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        loss = self.minimize(nll + min(nll.item(), 1.0) * penalty)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}
