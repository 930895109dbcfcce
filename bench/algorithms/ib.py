"""Information-bottleneck penalties: Invariance Principle Meets Information Bottleneck for
Out-of-Distribution Generalization (Ahuja, Caballero, Zhang, Gagnon-Audet, Bengio, Mitliagkas
& Rish, NeurIPS 2021, arXiv:2106.06607).

The bottleneck is the variance of the features: per environment, the unbiased variance of
each feature coordinate over the minibatch, averaged over coordinates, then over
environments. Its weight is 0 for ``ib_penalty_anneal_iters`` steps, then ``ib_lambda``.
- IB-ERM: mean risk + bottleneck.
- IB-IRM: mean risk + IRMv1 penalty (see irm.py; weight 1 for ``irm_penalty_anneal_iters``
  steps, then ``irm_lambda``) + bottleneck.
As DomainBed, Adam is re-created at either anneal step (it dislikes the jump in gradient
scale); the anneal is keyed on ``self.step``, so it is checkpointed. Unlike DomainBed's
IB-IRM, which always splits each batch in two for the IRM penalty, ``batch_size == 0``
(full batch) takes the squared gradient, as bench's IRM.
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
    split_by_env,
)
from bench.algorithms.irm import IRM, irm_penalty
from bench.hparams import NON_NEGATIVE, IntLogUniform, LogUniform


def feature_variance(features: list[Tensor]) -> Tensor:
    """Mean over environments of the mean per-coordinate variance of the features."""
    return torch.stack([f.var(dim=0).mean() for f in features]).mean()


class InformationBottleneck(Algorithm):
    """Risk (+ IRM penalty when ``WITH_IRM``) + annealed feature-variance bottleneck."""

    VERSION = 1
    WITH_IRM = False
    HPARAMS = {
        "ib_lambda": LogUniform(
            1e2,
            "weight of the feature-variance bottleneck after annealing",
            low=1e-1,
            high=1e5,
            domain=NON_NEGATIVE,
        ),
        "ib_penalty_anneal_iters": IntLogUniform(
            500,
            "steps with bottleneck weight 0 before ib_lambda",
            low=1,
            high=1e4,
            base=10.0,
            domain=NON_NEGATIVE,
        ),
    }

    def annealed(self, weight_key: str, anneal_key: str, before: float) -> float:
        """``before`` until step ``anneal_key``, the ``weight_key`` hparam from then on."""
        weight, anneal = self.hparams[weight_key], self.hparams[anneal_key]
        if int(self.step) == anneal:
            self.optimizer = self.make_optimizer(self.parameters_to_optimize())
        return weight if int(self.step) >= anneal else before

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        features = split_by_env(self.featurizer(concat_inputs(minibatches)), minibatches)
        logits = [self.classifier(f) for f in features]
        nlls = [classification_loss(l, y) for l, (_, y) in zip(logits, minibatches)]
        nll = torch.stack(nlls).mean()
        bottleneck = feature_variance(features)
        loss = nll + self.annealed("ib_lambda", "ib_penalty_anneal_iters", 0.0) * bottleneck
        stats = {"nll": nll.item(), "ib_penalty": bottleneck.item()}
        if self.WITH_IRM:
            full_batch = self.hparams["batch_size"] == 0
            penalty = torch.stack(
                [irm_penalty(l, y, full_batch) for l, (_, y) in zip(logits, minibatches)]
            ).mean()
            loss = loss + self.annealed("irm_lambda", "irm_penalty_anneal_iters", 1.0) * penalty
            stats["irm_penalty"] = penalty.item()
        diagnostics = self.head_grad_cos(nlls)
        loss = self.minimize(loss)
        return {"loss": loss.item(), **stats, **diagnostics}


@register_algorithm("ib_erm")
class IBERM(InformationBottleneck):
    """IB-ERM (Ahuja et al., 2021): risk + annealed feature-variance bottleneck."""

    VERSION = 1
    FAMILY = "regularisation"


@register_algorithm("ib_irm")
class IBIRM(InformationBottleneck):
    """IB-IRM (Ahuja et al., 2021): IRMv1 + annealed feature-variance bottleneck."""

    VERSION = 1
    FAMILY = "invariance"
    WITH_IRM = True
    HPARAMS = {key: IRM.HPARAMS[key] for key in ("irm_lambda", "irm_penalty_anneal_iters")}
