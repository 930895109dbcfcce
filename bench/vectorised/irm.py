"""IRMv1 (Arjovsky et al., 2019) batched: the network's forward, backward and Adam for the whole
group; the penalty, a gradient of each environment's risk, differentiated once more."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.algorithms import Algorithm
from bench.algorithms.base import classification_loss
from bench.algorithms.irm import irm_penalty
from bench.vectorised.erm import BatchedERM, penalised_loss


class BatchedIRM(BatchedERM):
    """IRM's ``update``: mean environment risk + weight * the dummy-scale penalty, annealed as
    ``Algorithm.penalised_loss`` anneals it.

    The logits' gradient comes from autograd on the loss alone (the network's backward is the
    engine's). Two ways, which must agree bit for bit:

    - ``_member_grads``: each member on its own [rows, C] logits through the algorithm's own
      ``irm_penalty``, one autograd graph per member: the unbatched arithmetic by construction;
    - ``_group_grads``: one graph for the group, each member with its own dummy scale (an
      [N, 1, 1] tensor), so each environment's penalty takes one ``autograd.grad`` for all
      members instead of one per member, and each risk one batched ``log_softmax``, gather
      and mean (``_risks``). The risks' values come from each member's own reduction
      (``_env_losses``): the batched mean rounds them differently, and the gradients do not
      depend on them.

    The group's way is used once it equals the members' on ``PROBES`` random logits of the
    group's layout; otherwise every step takes the members' way.
    """

    PER_RUN = frozenset({"irm_lambda", "irm_penalty_anneal_iters"})
    STATS = ("loss", "nll", "penalty")

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        hps = [a.hparams for a in algorithms]
        self.weight = [hp["irm_lambda"] for hp in hps]
        self.anneal = [hp["irm_penalty_anneal_iters"] for hp in hps]
        self.full_batch = hps[0]["batch_size"] == 0
        self.irm_code = hps[0]["irm_code"]

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        step = self.updates
        w = [lam if step >= t else 1.0 for lam, t in zip(self.weight, self.anneal)]
        key = (tuple(self._logits.shape), tuple(sizes), tuple(w))
        exact = self._group_way(key, lambda: self._probe(y, sizes, w))
        grads = self._group_grads if exact else self._member_grads
        grad, loss, nll, penalty = grads(self._logits, y, sizes, w)
        if not self.irm_code:  # DomainBed: Adam re-created at each member's anneal step
            self._restart_adam([step == t for t in self.anneal])
        return grad, [loss, nll, penalty]

    def _probe(self, y: Tensor, sizes: list[int], w: list[float]) -> bool:
        logits = torch.randn(self._logits.shape)
        found = self._group_grads(logits, y, sizes, w)
        expected = self._member_grads(logits, y, sizes, w)
        return all(torch.equal(a, b) for a, b in zip(found, expected))

    def _member_grads(
        self, logits: Tensor, y: Tensor, sizes: list[int], w: list[float]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The logits' gradient [N * R, C] and each member's loss, nll and penalty [N]."""
        grads, stats = [], []
        for i, weight in enumerate(w):
            with torch.enable_grad():
                own = logits[i].clone().requires_grad_()  # a run's own, aligned tensor
                parts, labels = own.split(sizes), y[i].split(sizes)
                nll = torch.stack([classification_loss(p, t) for p, t in zip(parts, labels)]).mean()
                penalties = [irm_penalty(p, t, self.full_batch) for p, t in zip(parts, labels)]
                penalty = torch.stack(penalties).mean()
                loss = penalised_loss(nll, penalty, weight, self.irm_code)
                (grad,) = torch.autograd.grad(loss, own)
            grads.append(grad)
            stats.append(torch.stack([loss.detach(), nll.detach(), penalty.detach()]))
        return torch.cat(grads), *torch.stack(stats).unbind(1)

    def _group_grads(
        self, logits: Tensor, y: Tensor, sizes: list[int], w: list[float]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """As ``_member_grads``, with one graph and one dummy scale per member."""
        with torch.enable_grad():
            stacked = logits.detach().requires_grad_()
            nlls, penalties, start = [], [], 0
            for size in sizes:
                part, labels = stacked[:, start : start + size], y[:, start : start + size]
                start += size
                nlls.append(_risks(part, labels))
                if self.full_batch:
                    penalties.append(self._scale_grads(part, labels).pow(2))
                else:
                    even = self._scale_grads(part[:, ::2], labels[:, ::2])
                    penalties.append(even * self._scale_grads(part[:, 1::2], labels[:, 1::2]))
            penalty = torch.stack(penalties, dim=1).mean(1)
            weight = torch.tensor(w)
            loss = penalised_loss(torch.stack(nlls, dim=1).mean(1), penalty, weight, self.irm_code)
            (grad,) = torch.autograd.grad(loss.sum(), stacked)
        penalty = penalty.detach()
        nll = self._env_losses(self._scores(logits), y, sizes).mean(1)
        loss = penalised_loss(nll, penalty, weight, self.irm_code)
        return grad.reshape(-1, grad.shape[2]), loss, nll, penalty

    @staticmethod
    def _scale_grads(logits: Tensor, y: Tensor) -> Tensor:
        """[N]: ``dummy_scale_grad`` of every member, d loss_i(w_i * logits_i) / dw_i at w = 1."""
        scale = torch.ones(len(logits), 1, 1, requires_grad=True)
        total = _risks(logits * scale, y).sum()
        return torch.autograd.grad(total, [scale], create_graph=True)[0].view(-1)


def _risks(logits: Tensor, y: Tensor) -> Tensor:
    """[N]: each member's ``classification_loss`` on its rows of ``logits`` [N, rows, C], for
    its gradients. Cross-entropy as one batched ``log_softmax``, gather and mean: the mean's
    backward, -grad / rows at each label, is ``nll_loss``'s (and so are the second derivatives
    the penalty takes, on the probes); its value rounds as the batched mean does. Binary
    cross-entropy, one call per member."""
    if logits.shape[2] == 1:
        return torch.stack([classification_loss(x, t) for x, t in zip(logits, y)])
    scores = F.log_softmax(logits, dim=2)
    return scores.gather(2, y.unsqueeze(2)).squeeze(2).mean(1).neg()
