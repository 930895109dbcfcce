"""CORAL and MMD (DomainBed's feature matching) batched: the distance between every pair of
environments' features, through the algorithm's own distance function."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms import Algorithm
from bench.vectorised.features import BatchedFeatureObjective, Member, Scalars


class BatchedFeatureMatching(BatchedFeatureObjective):
    """``FeatureMatching.update``: mean environment risk + ``mmd_gamma`` * the mean over
    environment pairs of the algorithm's ``distance`` (CORAL's moments, MMD's kernels)."""

    PER_RUN = frozenset({"mmd_gamma"})

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        self.gamma = [a.hparams["mmd_gamma"] for a in algorithms]
        self.distance = type(algorithms[0]).distance

    def _scalars(self) -> dict[str, list[float]]:
        return {"gamma": self.gamma}

    def _penalty(self, m: Member, state: Tensor, scalars: Scalars) -> tuple[Tensor, Tensor]:
        pairs = [(i, j) for i in range(len(m.parts)) for j in range(i + 1, len(m.parts))]
        distances = (self.distance(m.parts[i], m.parts[j]) for i, j in pairs)
        return sum(distances, torch.zeros(())) / max(len(pairs), 1), state

    def _combine(self, nll: Tensor, penalty: Tensor, scalars: Scalars) -> Tensor:
        return nll + scalars["gamma"] * penalty
