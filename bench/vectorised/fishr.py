"""Fishr (Rame et al., 2022) batched: the variances of per-example head gradients, through the
functions ``Fishr.update`` calls, on each environment's features."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms import Algorithm
from bench.algorithms.fishr import gradient_variances, moving_average, variance_distance
from bench.vectorised.erm import penalised_loss
from bench.vectorised.features import BatchedFeatureObjective, Member, Scalars


class BatchedFishr(BatchedFeatureObjective):
    """Fishr's ``update``: mean environment risk + weight * the distance between the
    environments' variances of per-example head gradients, annealed as
    ``Algorithm.penalised_loss`` anneals it; each member's moving-average variances are its
    state. A member without a moving average (``ema`` 0) keeps its raw variances and its
    state untouched."""

    PER_RUN = frozenset({"lambda", "penalty_anneal_iters", "ema"})

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        hps = [a.hparams for a in algorithms]
        self.weight = [hp["lambda"] for hp in hps]
        self.anneal = [hp["penalty_anneal_iters"] for hp in hps]
        self.ema = [hp["ema"] for hp in hps]
        self.irm_code = hps[0]["irm_code"]
        self.state = torch.stack([a.variance_ema for a in algorithms])

    def _scalars(self) -> dict[str, list[float]]:
        step, before = self.updates, 1.0 if self.irm_code else 0.0
        w = [lam if step >= t else before for lam, t in zip(self.weight, self.anneal)]
        return {"w": w, "ema": self.ema, "keep": [1 - e for e in self.ema]}

    def _penalty(self, m: Member, state: Tensor, scalars: Scalars) -> tuple[Tensor, Tensor]:
        variances = gradient_variances(self.head, *m)
        ema, keep = scalars["ema"], scalars["keep"]
        if isinstance(ema, float):  # one member, as its run
            if ema > 0:
                variances, state = moving_average(variances, state, ema, keep)
        else:  # under vmap
            smoothed, kept = moving_average(variances, state, ema, keep)
            variances = torch.where(ema > 0, smoothed, variances)
            state = torch.where(ema > 0, kept, state)
        return variance_distance(variances, self.irm_code), state

    def _combine(self, nll: Tensor, penalty: Tensor, scalars: Scalars) -> Tensor:
        return penalised_loss(nll, penalty, scalars["w"], self.irm_code)

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        out = super()._loss(scores, y, sizes)
        if not self.irm_code:  # DomainBed: Adam re-created at each member's anneal step
            self._restart_adam([self.updates == t for t in self.anneal])
        return out

    @torch.no_grad()
    def write_back(self) -> None:
        super().write_back()
        for algorithm, state in zip(self.algorithms, self.state):
            algorithm.variance_ema.copy_(state)
