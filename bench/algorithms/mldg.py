"""MLDG: Learning to Generalize: Meta-Learning for Domain Generalization (Li, Yang, Song &
Hospedales, AAAI 2018, arXiv:1710.03463), Algorithm 1 / Eq. 3, in DomainBed's first-order form.

Each step splits the training environments at random into meta-train and meta-test ones and
pairs them (DomainBed's ``split_meta_train_test``; both batches cut to the shorter). For a pair
(i, j): take one Adam step on a copy of the model with environment i's loss, giving theta';
the update direction is G_i(theta) + beta * G_j(theta'), averaged over the environments. The
outer Adam then steps on it.

As DomainBed, not the paper: the meta-test gradient is first order (no backpropagation
through the inner step, as first-order MAML), and the inner step is a fresh Adam at the
outer ``lr`` (the paper: one SGD step of size alpha). Deviation from DomainBed: with
``n_meta_test`` >= the number of training environments DomainBed has no meta-train
environment and takes zero-gradient steps (its default 2 does this on the 2-environment
Colored MNIST); bench keeps at least one meta-train environment.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor, autograd

from bench.algorithms.base import Algorithm, Minibatches, classification_loss, register_algorithm
from bench.hparams import AT_LEAST_ONE, NON_NEGATIVE, Choice, LogUniform


def meta_pairs(minibatches: Minibatches, n_meta_test: int) -> list[tuple[int, int]]:
    """(meta-train, meta-test) environment pairs: a random permutation, the last ``n_meta_test``
    are meta-test, each meta-train environment is paired with them in turn."""
    order = torch.randperm(len(minibatches)).tolist()
    n_test = min(n_meta_test, len(order) - 1)
    return list(zip(order[: len(order) - n_test], itertools.cycle(order[len(order) - n_test :])))


@register_algorithm("mldg")
class MLDG(Algorithm):
    """MLDG (Li et al., 2018): descend the meta-train loss plus beta times the meta-test loss after
    an inner step."""

    VERSION = 1
    FAMILY = "meta-learning"
    HPARAMS = {
        "mldg_beta": LogUniform(
            1.0, "weight of the meta-test loss", low=1e-1, high=1e1, domain=NON_NEGATIVE
        ),
        "n_meta_test": Choice(
            2, "meta-test environments per step", options=(1, 2), domain=AT_LEAST_ONE
        ),
    }

    def meta_gradient(self, minibatches: Minibatches) -> tuple[list[Tensor], float]:
        """(G_i(theta) + beta * G_j(theta')) / n_envs summed over the pairs, and the objective."""
        params = list(self.network.parameters())
        total = [torch.zeros_like(p) for p in params]
        beta, objective = self.hparams["mldg_beta"], 0.0
        for i, j in meta_pairs(minibatches, self.hparams["n_meta_test"]):
            n = min(len(minibatches[i][1]), len(minibatches[j][1]))
            (xi, yi), (xj, yj) = [(x[:n], y[:n]) for x, y in (minibatches[i], minibatches[j])]
            inner = copy.deepcopy(self.network)
            inner_optimizer = self.make_optimizer(inner.parameters())
            loss_i = classification_loss(inner(xi), yi)
            inner_optimizer.zero_grad(set_to_none=True)
            loss_i.backward()
            grads_i = [  # G_i at theta, before the inner step
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in inner.parameters()
            ]
            inner_optimizer.step()
            loss_j = classification_loss(inner(xj), yj)
            grads_j = autograd.grad(loss_j, list(inner.parameters()), allow_unused=True)
            for t, g_i, g_j in zip(total, grads_i, grads_j):
                t.add_(g_i / len(minibatches))
                if g_j is not None:
                    t.add_(beta * g_j / len(minibatches))
            objective += loss_i.item() + beta * loss_j.item()
        return total, objective / len(minibatches)

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        diagnostics = self.head_grad_cos_at(minibatches)
        grads, objective = self.meta_gradient(minibatches)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.network.parameters(), grads):
            p.grad = g
        self.apply_gradients()
        return {"loss": objective, **diagnostics}
