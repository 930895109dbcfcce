"""SD, spectral decoupling (Pezeshki et al., 2021) batched: cross-entropy + weight * mean
squared logit, a penalty on the logits themselves."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms import Algorithm
from bench.algorithms.base import classification_loss
from bench.vectorised.erm import BatchedERM


class BatchedSD(BatchedERM):
    """SD's ``update``. The logits' gradient is ERM's plus the penalty's, ``sd_reg`` / (rows x
    classes) x 2 x logit, two ways which must agree bit for bit:

    - ``_member_grads``: each member's own [rows, C] logits through autograd on the loss as
      ``SD.update`` builds it: the unbatched arithmetic by construction;
    - ``_group_grads``: ERM's batched gradient plus the penalty's, written out as autograd's
      backward forms it (the weight divided by the count, times twice the logit), for all
      members at once.

    The group's way is used once it equals the members' on ``PROBES`` random logits of the
    group's layout and weights; otherwise every step takes the members' way.
    """

    PER_RUN = frozenset({"sd_reg"})
    STATS = ("loss", "nll", "penalty")

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        self.weight = [a.hparams["sd_reg"] for a in algorithms]
        self._weight = torch.tensor(self.weight).view(-1, 1, 1)  # float32, as autograd's

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        key = (tuple(self._logits.shape), tuple(self.weight))
        if self._group_way(key, lambda: self._probe(y)):
            grad, loss, nll, penalty = self._group_grads(self._logits, scores, y)
        else:
            grad, loss, nll, penalty = self._member_grads(self._logits, y)
        return grad, [loss, nll, penalty]

    def _probe(self, y: Tensor) -> bool:
        logits = torch.randn(self._logits.shape)
        found = self._group_grads(logits, self._scores(logits), y)
        expected = self._member_grads(logits, y)
        return all(torch.equal(a, b) for a, b in zip(found, expected))

    def _member_grads(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The logits' gradient [N * R, C] and each member's loss, nll and penalty [N]."""
        grads, stats = [], []
        for i, weight in enumerate(self.weight):
            with torch.enable_grad():
                own = logits[i].clone().requires_grad_()  # a run's own, aligned tensor
                nll = classification_loss(own, y[i])
                penalty = own.pow(2).mean()
                loss = nll + weight * penalty + torch.zeros(())  # minimize's l2 term, zero
                (grad,) = torch.autograd.grad(loss, own)
            grads.append(grad)
            stats.append(torch.stack([loss.detach(), nll.detach(), penalty.detach()]))
        return torch.cat(grads), *torch.stack(stats).unbind(1)

    def _group_grads(
        self, logits: Tensor, scores: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """As ``_member_grads`` from the group's ``scores`` (``_scores``), the penalty's gradient
        for every member at once."""
        n, rows, classes = logits.shape
        nll = self._mean_losses(scores.view(n, rows, *scores.shape[1:]), y)
        penalty = torch.stack([own.pow(2).mean() for own in logits])
        loss = nll + torch.tensor(self.weight) * penalty + torch.zeros(())
        ours = (self._weight / (rows * classes)) * (2.0 * logits)  # mean's, then pow's backward
        grad = self._logits_grad(None, [rows], scores, y) + ours.view(-1, classes)
        return grad, loss, nll, penalty
