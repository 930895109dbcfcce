"""IB-ERM (Ahuja et al., 2021) batched: the feature-variance bottleneck, through the
algorithm's own ``feature_variance``, on each environment's features."""

from __future__ import annotations

from torch import Tensor

from bench.algorithms import Algorithm
from bench.algorithms.ib import feature_variance
from bench.vectorised.features import BatchedFeatureObjective, Member, Scalars


class BatchedIBERM(BatchedFeatureObjective):
    """IB-ERM's ``update``: mean environment risk + weight * the mean per-coordinate variance
    of the features, weight 0 until each member's anneal step (Adam re-created there)."""

    PER_RUN = frozenset({"ib_lambda", "ib_penalty_anneal_iters"})
    STATS = ("loss", "nll", "ib_penalty")

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        self.weight = [a.hparams["ib_lambda"] for a in algorithms]
        self.anneal = [a.hparams["ib_penalty_anneal_iters"] for a in algorithms]

    def _scalars(self) -> dict[str, list[float]]:
        step = self.updates
        return {"w": [lam if step >= t else 0.0 for lam, t in zip(self.weight, self.anneal)]}

    def _penalty(self, m: Member, state: Tensor, scalars: Scalars) -> tuple[Tensor, Tensor]:
        return feature_variance(m.parts), state

    def _combine(self, nll: Tensor, penalty: Tensor, scalars: Scalars) -> Tensor:
        return nll + scalars["w"] * penalty

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        out = super()._loss(scores, y, sizes)
        self._restart_adam([self.updates == t for t in self.anneal])  # as DomainBed
        return out
