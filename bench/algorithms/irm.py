"""IRMv1: Invariant Risk Minimization (Arjovsky, Bottou, Gulrajani & Lopez-Paz, 2019,
arXiv:1907.02893).

Penalty per environment: the squared gradient of the environment's risk with respect
to a dummy classifier scale w = 1, ||d R_e(w * f) / dw||^2, averaged over environments.

- Minibatch variant (DomainBed): each environment batch is split into its even and odd
  rows and the penalty is grad_1 * grad_2, an unbiased estimate of the squared gradient.
- Full-batch variant (``batch_size == 0``, the paper's Colored MNIST): grad^2 on the
  whole environment, as in the paper's code.
- Annealing: weight 1 for ``irm_penalty_anneal_iters`` steps, then ``irm_lambda``; see
  ``Algorithm.penalised_loss`` for DomainBed's Adam reset versus the IRM code's rescaling.
On ``cmnist_irm`` the paper's tuned settings are the defaults (that dataset's
``ALGORITHM_HPARAMS``, bench/datasets/colored_mnist.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, autograd

from bench.algorithms.base import (
    ANNEALING_HPARAMS,
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    register_algorithm,
    split_by_env,
)
from bench.hparams import NON_NEGATIVE, IntLogUniform, LogUniform


def dummy_scale_grad(logits: Tensor, y: Tensor) -> Tensor:
    """d loss(w * logits) / dw at w = 1, kept in the graph (works for one-logit and softmax
    heads)."""
    scale = torch.ones((), device=logits.device, requires_grad=True)
    return autograd.grad(classification_loss(logits * scale, y), [scale], create_graph=True)[0]


def irm_penalty(logits: Tensor, y: Tensor, full_batch: bool) -> Tensor:
    if full_batch:
        return dummy_scale_grad(logits, y).pow(2)
    return dummy_scale_grad(logits[::2], y[::2]) * dummy_scale_grad(logits[1::2], y[1::2])


@register_algorithm("irm")
class IRM(Algorithm):
    """IRMv1 (Arjovsky et al., 2019): risk + weight * squared gradient w.r.t. a dummy classifier
    scale."""

    VERSION = 1
    FAMILY = "invariance"
    HPARAMS = {
        "irm_lambda": LogUniform(
            1e2, "penalty weight after annealing", low=1e-1, high=1e5, domain=NON_NEGATIVE
        ),
        "irm_penalty_anneal_iters": IntLogUniform(
            500,
            "steps with penalty weight 1 before irm_lambda",
            low=1,
            high=1e4,
            base=10.0,
            domain=NON_NEGATIVE,
        ),
        **ANNEALING_HPARAMS,
    }

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        full_batch = self.hparams["batch_size"] == 0
        logits = split_by_env(self.predict(concat_inputs(minibatches)), minibatches)
        nlls = [classification_loss(l, y) for l, (_, y) in zip(logits, minibatches)]
        nll = torch.stack(nlls).mean()
        penalties = [irm_penalty(l, y, full_batch) for l, (_, y) in zip(logits, minibatches)]
        penalty = torch.stack(penalties).mean()
        diagnostics = self.head_grad_cos(nlls)
        hp = self.hparams
        loss = self.penalised_loss(nll, penalty, hp["irm_lambda"], hp["irm_penalty_anneal_iters"])
        self.minimize(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}
