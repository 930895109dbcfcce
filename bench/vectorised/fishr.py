"""Fishr (Rame et al., 2022) batched: the featurizer's forward, backward and Adam for the whole
group; the head and its per-example gradients' variances through the algorithm's own penalty."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from bench.algorithms import Algorithm
from bench.algorithms.base import classification_loss
from bench.algorithms.fishr import gradient_variances, moving_average, variance_distance
from bench.vectorised.erm import BatchedERM, penalised_loss
from bench.vectorised.products import PROBES

Gradients = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class BatchedFishr(BatchedERM):
    """Fishr's ``update``: mean environment risk + weight * the distance between the
    environments' variances of per-example head gradients (moving averages carried per member).

    Its penalty differentiates the head's per-example gradients, so the loss's gradient reaches
    the head's weights directly as well as through the features: ``_loss`` sets the head's
    gradients and returns the features' (``HEAD_IN_LOSS``). Two ways, which must agree bit for
    bit, both through the functions ``Fishr.update`` calls:

    - ``_member_grads``: autograd on each member's own features and head, as its run does;
    - ``_group_grads``: ``torch.func.grad`` of the same objective under ``vmap`` over the
      members, one call for the group. Each member's ``ema`` is then a float32 tensor (as its
      run's Python float enters the float32 arithmetic); a member without a moving average
      keeps its raw variances and its state.

    The group's way is used once it equals the members' on ``PROBES`` random inputs of the
    group's layout; otherwise every step takes the members' way.
    """

    PER_RUN = frozenset({"lambda", "penalty_anneal_iters", "ema"})
    HEAD_IN_LOSS = True
    HEAD_PER_ENV = True  # ``Fishr.update`` applies the head to each environment's features

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        hps = [a.hparams for a in algorithms]
        self.weight = [hp["lambda"] for hp in hps]
        self.anneal = [hp["penalty_anneal_iters"] for hp in hps]
        self.irm_code = hps[0]["irm_code"]
        self.ema = [hp["ema"] for hp in hps]
        self.head = algorithms[0].classifier  # its structure, for functional_call
        self.names = [name for name, _ in self.head.named_parameters()]
        self.variance_ema = torch.stack([a.variance_ema for a in algorithms])
        self._group_equal: dict[tuple, bool] = {}

    def keys(self) -> list[str]:
        return ["loss", "nll", "penalty"] + (["grad_cos"] if self.has_grad_cos else [])

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        step, before = self.updates, 1.0 if self.irm_code else 0.0
        w = [lam if step >= t else before for lam, t in zip(self.weight, self.anneal)]
        inputs = (self._features, self.params[-2], self.params[-1], y, self.variance_ema)
        key = (tuple(self._features.shape), tuple(sizes), tuple(w))
        if key not in self._group_equal:
            self._group_equal[key] = all(self._probe(inputs, sizes, w) for _ in range(PROBES))
        grads = self._group_grads if self._group_equal[key] else self._member_grads
        d_features, d_weight, d_bias, loss, nll, penalty, smoothed = grads(*inputs, sizes, w)
        head = self._views(self.flat_grad)[-2:]
        head[0].copy_(d_weight)
        head[1].copy_(d_bias)
        self.variance_ema = smoothed
        if not self.irm_code:  # DomainBed: Adam re-created at each member's anneal step
            self._restart_adam([step == t for t in self.anneal])
        return d_features, [loss, nll, penalty]

    def _probe(self, inputs: tuple[Tensor, ...], sizes: list[int], w: list[float]) -> bool:
        features, weight, bias, y, ema = inputs
        random = (*(torch.randn(t.shape) for t in (features, weight, bias)), y, ema)
        found = self._group_grads(*random, sizes, w)
        expected = self._member_grads(*random, sizes, w)
        return all(torch.equal(a, b) for a, b in zip(found, expected))

    def _objective(
        self,
        features: Tensor,
        weight: Tensor,
        bias: Tensor,
        y: Tensor,
        state: Tensor,
        w: Tensor | float,
        ema: Tensor | float,
        keep: Tensor | float,
        sizes: list[int],
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One member's loss as ``Fishr.update`` forms it, and (loss, nll, penalty, the new
        moving-average state)."""
        params = dict(zip(self.names, (weight, bias)))
        parts, labels = list(features.split(sizes)), list(y.split(sizes))
        head = [functional_call(self.head, params, (f,)) for f in parts]
        nll = torch.stack([classification_loss(h, t) for h, t in zip(head, labels)]).mean()
        variances = gradient_variances(self.head, params, parts, labels)
        if isinstance(ema, float) and ema > 0:  # one member, as its run
            variances, state = moving_average(variances, state, ema, keep)
        elif isinstance(ema, Tensor):  # under vmap: float32, as a Python float enters the ops
            smoothed, kept = moving_average(variances, state, ema, keep)
            variances = torch.where(ema > 0, smoothed, variances)
            state = torch.where(ema > 0, kept, state)
        penalty = variance_distance(variances, self.irm_code)
        loss = penalised_loss(nll, penalty, w, self.irm_code)
        return loss, (loss.detach(), nll.detach(), penalty.detach(), state)

    def _member_grads(self, features, weight, bias, y, ema, sizes, w) -> Gradients:
        """The gradients of features [N, R, H], head weight and bias, and each member's loss,
        nll, penalty and new variances, member by member with autograd."""
        out = []
        for i, member_w in enumerate(w):
            with torch.enable_grad():
                leaves = [t[i].clone().requires_grad_() for t in (features, weight, bias)]
                decay = self.ema[i]
                loss, stats = self._objective(
                    *leaves, y[i], ema[i], member_w, decay, 1 - decay, sizes
                )
                out.append((*torch.autograd.grad(loss, leaves), *stats))
        return tuple(torch.stack(column) for column in zip(*out))

    def _group_grads(self, features, weight, bias, y, ema, sizes, w) -> Gradients:
        """As ``_member_grads``, for the group in one ``vmap``."""

        def objective(f, wt, b, t, e, lam, decay, keep):
            return self._objective(f, wt, b, t, e, lam, decay, keep, sizes)

        gradients = grad(objective, argnums=(0, 1, 2), has_aux=True)
        lam = torch.tensor(w)
        decay, keep = torch.tensor(self.ema), torch.tensor([1 - e for e in self.ema])
        (d_features, d_weight, d_bias), (_, _, penalty, smoothed) = vmap(gradients)(
            features, weight, bias, y, ema, lam, decay, keep
        )
        # the risks' values as each run reduces them (vmap's batched mean rounds differently;
        # their gradients do not depend on it)
        scores = self._scores(self.products.addmm(bias, features, weight.transpose(1, 2)))
        nll = self._env_losses(scores, y, sizes).mean(1)
        loss = penalised_loss(nll, penalty, lam, self.irm_code)
        return d_features, d_weight, d_bias, loss, nll, penalty, smoothed

    @torch.no_grad()
    def write_back(self) -> None:
        super().write_back()
        for algorithm, ema in zip(self.algorithms, self.variance_ema):
            algorithm.variance_ema.copy_(ema)
