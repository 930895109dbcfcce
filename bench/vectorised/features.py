"""The engine for updates whose loss is a function of each environment's features and the head
(Fishr, CORAL, MMD, IB-ERM): the network below the head batched as ERM's, the loss through
autograd."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from bench.algorithms import Algorithm
from bench.algorithms.base import classification_loss
from bench.vectorised.erm import BatchedERM

Scalars = dict[str, Any]  # per-member floats for one member, float32 tensors under vmap
Gradients = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class Member(NamedTuple):
    """What a penalty reads of one member: its head's parameters (by name), and each training
    environment's features and labels."""

    params: dict[str, Tensor]
    parts: list[Tensor]
    labels: list[Tensor]


class BatchedFeatureObjective(BatchedERM):
    """An update that applies the head to each environment's features and adds a penalty on
    them (or on the head): mean risk combined with ``_penalty`` by ``_combine``.

    The loss reaches the head's weights directly as well as through the logits, so ``_loss``
    sets the head's gradients and returns the features' (``HEAD_IN_LOSS``); the featurizer's
    backward is the engine's. The loss is differentiated with autograd, two ways that must
    agree bit for bit:

    - ``_member_grads``: autograd on each member's own features and head, in the order its
      run builds the graph: the unbatched arithmetic;
    - ``_group_grads``: ``torch.func.grad`` of the same objective under ``vmap`` over the
      members, one call for the group. Per-member hparams are then float32 tensors, as a run's
      Python floats enter its float32 arithmetic. The risks' values are taken from the
      engine's own per-member reductions (``vmap``'s batched mean rounds differently; the
      gradients do not depend on those values).

    The group's way is used once it equals the members' on ``PROBES`` random inputs of the
    group's layout and hparams; otherwise every step takes the members' way.
    """

    HEAD_IN_LOSS = True
    HEAD_PER_ENV = True  # the update applies the head to each environment's features
    STATS = ("loss", "nll", "penalty")  # the penalty's name last

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        self.head = algorithms[0].classifier  # its structure, for functional_call
        self.names = [name for name, _ in self.head.named_parameters()]
        self.state = torch.zeros(len(algorithms), 1)  # what a member carries between steps

    def _scalars(self) -> dict[str, list[float]]:
        """Each member's hparams for this step, by name."""
        raise NotImplementedError

    def _penalty(self, m: Member, state: Tensor, scalars: Scalars) -> tuple[Tensor, Tensor]:
        """One member's penalty and its state for the next step."""
        raise NotImplementedError

    def _combine(self, nll: Tensor, penalty: Tensor, scalars: Scalars) -> Tensor:
        raise NotImplementedError

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        scalars = self._scalars()
        inputs = (self._features, self.params[-2], self.params[-1], y, self.state)
        key = (tuple(self._features.shape), tuple(sizes), repr(scalars))
        exact = self._group_way(key, lambda: self._probe(inputs, sizes, scalars))
        grads = self._group_grads if exact else self._member_grads
        d_features, d_weight, d_bias, loss, nll, penalty, state = grads(*inputs, sizes, scalars)
        head = self.grads[-2:]
        head[0].copy_(d_weight)
        head[1].copy_(d_bias)
        self.state = state
        return d_features, [loss, nll, penalty]

    def _probe(self, inputs: tuple[Tensor, ...], sizes: list[int], scalars: dict) -> bool:
        features, weight, bias, y, state = inputs
        random = (*(torch.randn(t.shape) for t in (features, weight, bias)), y, state)
        found = self._group_grads(*random, sizes, scalars)
        expected = self._member_grads(*random, sizes, scalars)
        return all(torch.equal(a, b) for a, b in zip(found, expected))

    def _objective(
        self,
        features: Tensor,
        weight: Tensor,
        bias: Tensor,
        y: Tensor,
        state: Tensor,
        scalars: Scalars,
        sizes: list[int],
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One member's loss as its update forms it, and (loss, nll, penalty, new state)."""
        params = dict(zip(self.names, (weight, bias)))
        parts, labels = list(features.split(sizes)), list(y.split(sizes))
        risks = [
            classification_loss(functional_call(self.head, params, (f,)), t)
            for f, t in zip(parts, labels)
        ]
        nll = torch.stack(risks).mean()
        penalty, state = self._penalty(Member(params, parts, labels), state, scalars)
        loss = self._combine(nll, penalty, scalars)
        return loss, (loss.detach(), nll.detach(), penalty.detach(), state)

    def _member_grads(self, features, weight, bias, y, state, sizes, scalars) -> Gradients:
        """The gradients of the features [N, R, H], head weight and bias, and each member's
        loss, nll, penalty and new state, member by member with autograd."""
        out = []
        for i in range(len(y)):
            own = {name: values[i] for name, values in scalars.items()}
            with torch.enable_grad():
                leaves = [t[i].clone().requires_grad_() for t in (features, weight, bias)]
                loss, stats = self._objective(*leaves, y[i], state[i], own, sizes)
                out.append((*torch.autograd.grad(loss, leaves), *stats))
        return tuple(torch.stack(column) for column in zip(*out))

    def _group_grads(self, features, weight, bias, y, state, sizes, scalars) -> Gradients:
        """As ``_member_grads``, for the group in one ``vmap``."""

        def objective(f, w, b, t, s, hp):
            return self._objective(f, w, b, t, s, hp, sizes)

        per_member = {name: torch.tensor(values) for name, values in scalars.items()}
        gradients = grad(objective, argnums=(0, 1, 2), has_aux=True)
        (d_features, d_weight, d_bias), (_, _, penalty, state) = vmap(gradients)(
            features, weight, bias, y, state, per_member
        )
        scores = self._scores(self.products.addmm(bias, features, weight.transpose(1, 2)))
        nll = self._env_losses(scores, y, sizes).mean(1)
        loss = self._combine(nll, penalty, per_member)
        return d_features, d_weight, d_bias, loss, nll, penalty, state
