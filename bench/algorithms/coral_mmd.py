"""Feature-distribution matching across environments, as DomainBed's AbstractMMD.

- CORAL: Deep CORAL (Sun & Saenko, ECCV 2016 workshops, arXiv:1607.01719): match the
  means and covariances of the features of every pair of environments.
- MMD: MMD-AAE's kernel matching (Li, Pan, Wang & Kot, CVPR 2018): squared maximum mean
  discrepancy with a mixture of Gaussian kernels, bandwidths 1e-3 ... 1e3.
Loss = mean environment risk + mmd_gamma * mean over pairs of the distance. As DomainBed,
CORAL's distance is the mean squared difference of means plus that of covariances (not
the paper's 1/(4d^2) Frobenius norm), and MMD has no autoencoder or adversary.

Domain adaptation (``uda_fraction`` > 0): each test environment's unlabeled minibatch joins
the pairs as one more environment (no risk term), which is Deep CORAL's own source-target
setting (DomainBed passes ``unlabeled`` but never reads it).
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
)
from bench.hparams import NON_NEGATIVE, LogUniform

BANDWIDTHS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def gaussian_kernel(a: Tensor, b: Tensor) -> Tensor:
    """Sum over BANDWIDTHS of exp(-g * ||a_i - b_j||^2)."""
    sq = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(1e-30)
    return sum(torch.exp(-g * sq) for g in BANDWIDTHS)


def mmd(a: Tensor, b: Tensor) -> Tensor:
    return (
        gaussian_kernel(a, a).mean()
        + gaussian_kernel(b, b).mean()
        - 2 * gaussian_kernel(a, b).mean()
    )


def coral(a: Tensor, b: Tensor) -> Tensor:
    mean_a, mean_b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)
    cov_a = (a - mean_a).T @ (a - mean_a) / (len(a) - 1)
    cov_b = (b - mean_b).T @ (b - mean_b) / (len(b) - 1)
    return (mean_a - mean_b).pow(2).mean() + (cov_a - cov_b).pow(2).mean()


class FeatureMatching(Algorithm):
    """Risk + mmd_gamma * mean over environment pairs of ``distance`` between their features."""

    VERSION = 1
    HPARAMS = {
        "mmd_gamma": LogUniform(
            1.0,
            "weight of the feature-distribution distance",
            low=1e-1,
            high=1e1,
            domain=NON_NEGATIVE,
        ),
    }

    @staticmethod
    def distance(a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        inputs = torch.cat([concat_inputs(minibatches), *(unlabeled or [])])
        sizes = [len(y) for _, y in minibatches] + [len(x) for x in unlabeled or []]
        features = list(self.featurizer(inputs).split(sizes))
        nlls = [
            classification_loss(self.classifier(f), y) for f, (_, y) in zip(features, minibatches)
        ]
        nll = torch.stack(nlls).mean()
        pairs = [(i, j) for i in range(len(features)) for j in range(i + 1, len(features))]
        distances = (self.distance(features[i], features[j]) for i, j in pairs)
        penalty = sum(distances, nll.new_zeros(())) / max(len(pairs), 1)
        diagnostics = self.head_grad_cos(nlls)
        loss = self.minimize(nll + self.hparams["mmd_gamma"] * penalty)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}


@register_algorithm("coral")
class CORAL(FeatureMatching):
    """Deep CORAL (Sun & Saenko, 2016): risk + mmd_gamma * distance of feature means and
    covariances."""

    VERSION = 1
    FAMILY = "alignment"
    distance = staticmethod(coral)


@register_algorithm("mmd")
class MMD(FeatureMatching):
    """MMD (Li et al., 2018): risk + mmd_gamma * Gaussian-kernel MMD between environment
    features."""

    VERSION = 1
    FAMILY = "alignment"
    distance = staticmethod(mmd)
