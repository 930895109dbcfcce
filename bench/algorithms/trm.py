"""TRM: Learning Representations that Support Robust Transfer of Predictors (Xu & Jaakkola, 2021,
arXiv:2110.09940), as DomainBed's TRM.

Transfer risk: a linear predictor fit on environment Q's features should also do well on the
other environments. After ``iters`` ERM steps, each step:
1. refits one linear head per environment on its (detached) features: 30 SGD steps, lr 0.1;
2. for each Q, adds the alpha-weighted loss of head Q on the other environments (gradient to
   the featurizer), minus ``cos_lambda`` times the inner product of head Q's gradient on Q
   with H_Q^{-1} times its gradient on the others (the influence of the others on the fit,
   H_Q^{-1} v by a 10-term Neumann series stopped when it exceeds 10), averaged over Q;
3. raises alpha[Q, i] (a GroupDRO weight, ``groupdro_eta``) on the costly transfers.
The featurizer and the main classifier step on ERM + that term (two Adams).

As DomainBed: gradients are taken with respect to the heads' weights only (not biases);
alpha is renormalised per row at each step. Bench also checkpoints alpha (DomainBed keeps it
in a plain tensor), differentiates the loss with the alpha it was computed with (DomainBed's
backward sees the updated alpha through shared storage), and skips DomainBed's
``class_balanced`` option (off by default, not searched).
"""

from __future__ import annotations

import torch
from torch import Tensor, autograd, nn

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
    split_by_env,
)
from bench.hparams import NON_NEGATIVE, POSITIVE, IntLogUniform, LogUniform

HEAD_STEPS, HEAD_LR = 30, 0.1  # DomainBed's per-environment head refit
NEUMANN_TERMS, NEUMANN_LIMIT = 10, 10.0


def inverse_hvp(v: Tensor, head: nn.Linear, features: Tensor, y: Tensor) -> Tensor:
    """H^{-1} v for the Hessian of the head's loss w.r.t. its weight: sum_k (I - H)^k v."""
    estimate = v = v.detach()
    for _ in range(NEUMANN_TERMS):
        loss = classification_loss(head(features.detach()), y)
        grad = autograd.grad(loss, head.weight, create_graph=True)[0].reshape(-1)
        hv = autograd.grad(grad @ v, head.weight)[0].reshape(-1)
        v = (v - hv).detach()
        estimate = (estimate + v).detach()
        if estimate.abs().max() > NEUMANN_LIMIT:
            break
    return estimate


@register_algorithm("trm")
class TRM(Algorithm):
    """TRM (Xu & Jaakkola, 2021): ERM plus the transfer risk of per-environment linear heads."""

    VERSION = 1
    FAMILY = "invariance"
    HPARAMS = {
        "cos_lambda": LogUniform(
            1e-4,
            "weight of the influence (gradient inner product) term",
            low=1e-5,
            high=1.0,
            domain=NON_NEGATIVE,
        ),
        "iters": IntLogUniform(
            200,
            "ERM steps before the transfer risk is added",
            low=1,
            high=1e4,
            base=10.0,
            domain=NON_NEGATIVE,
        ),
        "groupdro_eta": LogUniform(
            1e-2, "step size of the transfer weights alpha", low=1e-3, high=1e-1, domain=POSITIVE
        ),
    }

    def build(self) -> None:
        self.build_network()
        n, k = self.featurizer.n_outputs, self.num_classes
        self.heads = nn.ModuleList(nn.Linear(n, k) for _ in range(self.num_train_envs))
        self.register_buffer("alpha", 1 - torch.eye(self.num_train_envs))
        self.featurizer_optimizer = self.make_optimizer(self.featurizer.parameters())
        self.classifier_optimizer = self.make_optimizer(self.classifier.parameters())
        self.heads_optimizer = torch.optim.SGD(self.heads.parameters(), lr=HEAD_LR)
        self.penalty_weights = (self.hparams["cos_lambda"], self.hparams["groupdro_eta"])

    def fit_heads(self, features: list[Tensor], minibatches: Minibatches) -> None:
        for _ in range(HEAD_STEPS):
            loss = sum(
                classification_loss(head(f.detach()), y)
                for head, f, (_, y) in zip(self.heads, features, minibatches)
            )
            self.heads_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.heads_optimizer.step()

    def transfer_risk(self, features: list[Tensor], minibatches: Minibatches) -> Tensor:
        cos_lambda, eta = self.penalty_weights
        self.alpha /= self.alpha.sum(dim=1, keepdim=True)
        total = features[0].new_zeros(())
        ys = [y for _, y in minibatches]
        for q, head in enumerate(self.heads):
            loss_q = classification_loss(head(features[q]), ys[q])
            grad_q = autograd.grad(loss_q, head.weight, create_graph=True)[0].reshape(-1)
            others = [i for i in range(len(features)) if i != q]
            weights = self.alpha[q].clone()  # this step's weights, before their update below
            losses = {i: classification_loss(head(features[i]), ys[i]) * weights[i] for i in others}
            transfer = sum(losses.values())
            grad_p = autograd.grad(transfer, head.weight, retain_graph=True)[0].reshape(-1)
            influence = inverse_hvp(grad_p, head, features[q], ys[q])
            total = total + transfer - cos_lambda * (influence @ grad_q)
            for i, loss in losses.items():
                self.alpha[q, i] *= torch.exp(eta * loss.detach())
        return total / len(features)

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        features = self.featurizer(concat_inputs(minibatches))
        logits = self.classifier(features)
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        trm = features.new_zeros(())
        if int(self.step) >= self.hparams["iters"]:
            per_env = split_by_env(features, minibatches)
            self.fit_heads(per_env, minibatches)
            trm = self.transfer_risk(per_env, minibatches)
        loss = nll + trm + self.l2_penalty(list(self.network.parameters()))
        for optimizer in (self.featurizer_optimizer, self.classifier_optimizer):
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.featurizer_optimizer.step()
        self.classifier_optimizer.step()
        self.finish_update()
        return {"loss": loss.item(), "nll": nll.item(), "trm_loss": trm.item(), **diagnostics}
