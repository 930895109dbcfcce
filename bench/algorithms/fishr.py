"""Fishr: Invariant Gradient Variances for Out-of-Distribution Generalization
(Rame, Dancette & Cord, ICML 2022, arXiv:2109.02934).

Per environment, the variance (centred, diagonal) of the per-sample gradients of the
classifier head; the penalty is the mean over environments of the squared distance
between each environment's variance and their mean. Per-sample gradients come from
``torch.func`` (functional_call + vmap + grad) instead of BackPACK; they stay in the
autograd graph, so the penalty trains the featurizer too. Each environment's variance
is an exponential moving average across steps (``ema``, corrected by 1 / (1 - ema) as
the authors' code), kept in a buffer so it is checkpointed.

DomainBed protocol: weight 0 until ``penalty_anneal_iters`` then ``lambda``, Adam reset,
distance averaged over coordinates. ``cmnist_irm`` (the paper's Colored MNIST code):
weight 1 then 91257.186 with the loss divided by it, no EMA, distance summed over
coordinates and environments (that dataset's ``ALGORITHM_HPARAMS``,
bench/datasets/colored_mnist.py).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from bench.algorithms.base import (
    ANNEALING_HPARAMS,
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    register_algorithm,
    split_by_env,
)
from bench.hparams import NON_NEGATIVE, Domain, IntUniform, LogUniform, Uniform


def per_sample_grads(
    head: torch.nn.Module, features: Tensor, y: Tensor, params: dict[str, Tensor] | None = None
) -> Tensor:
    """``[n, P]`` gradients of each example's own loss w.r.t. the head's parameters (its own,
    or ``params`` in their place), differentiable."""
    params = dict(head.named_parameters()) if params is None else params

    def loss(p: dict[str, Tensor], f: Tensor, t: Tensor) -> Tensor:
        return classification_loss(functional_call(head, p, (f.unsqueeze(0),)), t.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, features, y)
    return torch.cat([g.reshape(len(y), -1) for g in grads.values()], dim=1)


def gradient_variances(
    head: torch.nn.Module,
    params: dict[str, Tensor] | None,
    features: list[Tensor],
    labels: list[Tensor],
) -> Tensor:
    """``[E, P]``: per environment, the centred variance of the per-sample head gradients."""
    variances = []
    for f, y in zip(features, labels):
        g = per_sample_grads(head, f, y, params)
        variances.append((g - g.mean(dim=0, keepdim=True)).pow(2).mean(dim=0))
    return torch.stack(variances)


def moving_average(
    variances: Tensor, state: Tensor, ema: float | Tensor, keep: float | Tensor
) -> tuple[Tensor, Tensor]:
    """The variances to penalise, ``(ema * state + keep * variances) / keep`` with keep =
    1 - ema (the authors' correction), and the state for the next step."""
    smoothed = ema * state + keep * variances
    return smoothed / keep, smoothed.detach()


def variance_distance(variances: Tensor, summed: bool) -> Tensor:
    """Squared distance of each environment's variances to their mean: summed (the Colored
    MNIST code) or averaged over coordinates and environments (DomainBed)."""
    distances = (variances - variances.mean(dim=0, keepdim=True)).pow(2)
    return distances.sum() if summed else distances.mean()


@register_algorithm("fishr")
class Fishr(Algorithm):
    """Fishr (Rame et al., 2022): match per-environment variances of per-sample head gradients."""

    VERSION = 1
    FAMILY = "invariance"
    HPARAMS = {
        "lambda": LogUniform(
            1000.0, "penalty weight after annealing", low=1e1, high=1e4, domain=NON_NEGATIVE
        ),
        "penalty_anneal_iters": IntUniform(
            1500, "steps before the penalty is switched on", low=0, high=5000, domain=NON_NEGATIVE
        ),
        "ema": Uniform(
            0.95,
            "moving-average rate of the gradient variances (0 = none)",
            low=0.90,
            high=0.99,
            domain=Domain(0, 1, open_high=True),
        ),
        **ANNEALING_HPARAMS,
    }

    def build(self) -> None:
        super().build()
        n_params = sum(p.numel() for p in self.classifier.parameters())
        self.register_buffer("variance_ema", torch.zeros(self.num_train_envs, n_params))

    def penalty(self, features: list[Tensor], minibatches: Minibatches) -> Tensor:
        labels = [y for _, y in minibatches]
        variances = gradient_variances(self.classifier, None, features, labels)
        ema = self.hparams["ema"]
        if ema > 0:
            variances, state = moving_average(variances, self.variance_ema, ema, 1 - ema)
            self.variance_ema.copy_(state)
        return variance_distance(variances, self.hparams["irm_code"])

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        features = split_by_env(self.featurizer(concat_inputs(minibatches)), minibatches)
        nlls = [
            classification_loss(self.classifier(f), y) for f, (_, y) in zip(features, minibatches)
        ]
        nll = torch.stack(nlls).mean()
        penalty = self.penalty(features, minibatches)
        diagnostics = self.head_grad_cos(nlls)
        hp = self.hparams
        before = 1.0 if hp["irm_code"] else 0.0
        weight, anneal = hp["lambda"], hp["penalty_anneal_iters"]
        loss = self.penalised_loss(nll, penalty, weight, anneal, before=before)
        self.minimize(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}
