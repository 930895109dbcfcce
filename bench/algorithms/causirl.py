"""CausIRL: Invariant Causal Mechanisms through Distribution Matching (Chevalley, Bunne, Krause
& Bauer, 2022, arXiv:2206.11646).

Instead of matching the features of every pair of environments (CORAL/MMD, coral_mmd.py),
each environment's minibatch is cut at a random point and the feature distribution of all
the first parts (pooled over environments) is matched to that of all the second parts: two
random mixtures of the environments, so the representation is pushed towards one that does
not depend on which mixture of domains it sees. Loss = mean environment risk + mmd_gamma *
distance, with CORAL's or MMD's distance (as coral_mmd.py). As DomainBed: the penalty is 0
when either part has fewer than two examples, and NaN distances count as 0. The cut points
come from torch's generator (DomainBed: numpy's global one), so runs are seeded.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    register_algorithm,
    split_by_env,
)
from bench.algorithms.coral_mmd import FeatureMatching, coral, mmd


def mixture_penalty(
    features: list[Tensor], distance: Callable[[Tensor, Tensor], Tensor], cuts: list[int]
) -> Tensor:
    """``distance`` between the pooled heads and the pooled tails of the cut batches."""
    first = torch.cat([f[:cut] for f, cut in zip(features, cuts)])
    second = torch.cat([f[cut:] for f, cut in zip(features, cuts)])
    if len(first) < 2 or len(second) < 2:
        return features[0].new_zeros(())
    return torch.nan_to_num(distance(first, second))


class CausIRL(Algorithm):
    """Risk + mmd_gamma * distance between two random mixtures of the environments' features."""

    VERSION = 1
    FAMILY = "alignment"
    HPARAMS = FeatureMatching.HPARAMS

    @staticmethod
    def distance(a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        features = split_by_env(self.featurizer(concat_inputs(minibatches)), minibatches)
        nlls = [
            classification_loss(self.classifier(f), y) for f, (_, y) in zip(features, minibatches)
        ]
        nll = torch.stack(nlls).mean()
        cuts = [int(torch.randint(len(f), ())) for f in features]
        penalty = mixture_penalty(features, self.distance, cuts)
        diagnostics = self.head_grad_cos(nlls)
        loss = self.minimize(nll + self.hparams["mmd_gamma"] * penalty)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}


@register_algorithm("causirl_coral")
class CausIRLCORAL(CausIRL):
    """CausIRL-CORAL (Chevalley et al., 2022): match means and covariances of two mixtures."""

    VERSION = 1
    distance = staticmethod(coral)


@register_algorithm("causirl_mmd")
class CausIRLMMD(CausIRL):
    """CausIRL-MMD (Chevalley et al., 2022): Gaussian-kernel MMD between two mixtures."""

    VERSION = 1
    distance = staticmethod(mmd)
