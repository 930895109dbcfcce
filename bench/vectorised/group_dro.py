"""GroupDRO (Sagawa et al., 2020) batched: its objective on the environments' risks."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms import Algorithm
from bench.vectorised.erm import BatchedERM


class BatchedGroupDRO(BatchedERM):
    """GroupDRO's ``update``: the q-weighted risk, q ascending on the environment risks."""

    PER_RUN = frozenset({"groupdro_eta"})
    STATS = ("loss", "nll", "q_max")

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        self.eta = torch.tensor([a.hparams["groupdro_eta"] for a in algorithms]).unsqueeze(1)
        self.q = torch.stack([a.q for a in algorithms])

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        losses = self._env_losses(scores, y, sizes)
        self.q.mul_(torch.exp(self.eta * losses))
        self.q.div_(self.q.sum(1, keepdim=True))
        # the value as torch.dot sums it; its gradient with respect to the risks is q
        loss = torch.stack([torch.dot(losses[i], self.q[i]) for i in range(len(losses))])
        stats = [loss, losses.mean(1), self.q.max(1).values]
        return self._logits_grad(self.q, sizes, scores, y), stats

    @torch.no_grad()
    def write_back(self) -> None:
        super().write_back()
        for algorithm, q in zip(self.algorithms, self.q):
            algorithm.q.copy_(q)
