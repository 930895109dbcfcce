"""V-REx (Krueger et al., 2021) batched: its objective on the environments' risks."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms import Algorithm
from bench.vectorised.erm import BatchedERM, penalised_loss


class BatchedVREx(BatchedERM):
    """V-REx's ``update``: mean environment risk + weight * their variance (or the squared
    difference of two), annealed as ``Algorithm.penalised_loss`` anneals it."""

    PER_RUN = frozenset({"vrex_lambda", "vrex_penalty_anneal_iters"})
    STATS = ("loss", "nll", "penalty")

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        hps = [a.hparams for a in algorithms]
        self.weight = [hp["vrex_lambda"] for hp in hps]
        self.anneal = [hp["vrex_penalty_anneal_iters"] for hp in hps]
        self.squared_difference = hps[0]["vrex_penalty"] == "squared_difference"
        self.irm_code = hps[0]["irm_code"]

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        step = self.updates
        w = torch.tensor([lam if step >= t else 1.0 for lam, t in zip(self.weight, self.anneal)])
        with torch.enable_grad():  # the unbatched objective's own graph, on [N, E] risks
            losses = self._env_losses(scores, y, sizes).requires_grad_()
            nll = losses.mean(1)
            if self.squared_difference:
                penalty = (losses[:, 0] - losses[:, 1]).pow(2)
            else:
                penalty = (losses - nll.unsqueeze(1)).pow(2).mean(1)
            loss = penalised_loss(nll, penalty, w, self.irm_code)
            (d_losses,) = torch.autograd.grad(loss.sum(), losses)
        if not self.irm_code:  # DomainBed: Adam re-created at each member's anneal step
            self._restart_adam([step == t for t in self.anneal])
        stats = [loss.detach(), nll.detach(), penalty.detach()]
        return self._logits_grad(d_losses, sizes, scores, y), stats
