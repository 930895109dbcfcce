"""ERM's update for a group of runs as one sequence of batched operations (``BatchedERM``),
the engine every batched algorithm extends: stacked weights, forward, the backward pass
written out kernel by kernel, Adam on one buffer, and write-back into the members."""

from __future__ import annotations

import math
import time
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.algorithms import Algorithm
from bench.vectorised.eligible import network_layers
from bench.vectorised.products import ALIGN, PROBES, Products, random_like


def penalised_loss(nll: Tensor, penalty: Tensor, w: Tensor | float, irm_code: bool) -> Tensor:
    """``Algorithm.penalised_loss`` with l2 = 0 (its zero term kept) at weight ``w``, a member's
    float or a tensor of one per member: divided by the weight where it exceeds 1 with the
    IRM code's schedule."""
    loss = nll + torch.zeros(()) + w * penalty
    if not irm_code:
        return loss
    if isinstance(w, Tensor):
        return torch.where(w > 1.0, loss / w, loss)
    return loss / w if w > 1.0 else loss


# autograd's ReLU backward kernel, out of place or writing into its gradient
_THRESHOLD_BACKWARD = {
    False: torch.ops.aten.threshold_backward.default,
    True: torch.ops.aten.threshold_backward.grad_input,
}


def _aligned_blocks(n: int, k: int, d: int) -> Tensor:
    """A zeroed [N, k, d] tensor whose every member's [k, d] block starts 64-byte aligned, as
    a run's own tensor does: the operand of each member's ``u @ u.T``."""
    stride = -(-k * d // ALIGN) * ALIGN
    return torch.zeros(n, stride).as_strided((n, k, d), (stride, d, 1))


class BatchedERM:
    """ERM's ``update`` (loss, ``grad_cos`` diagnostic, Adam step) for N members at once.

    The members' Linear weights live in one buffer (``flat``): weight j of every member is a
    contiguous [N, *shape] view of it starting on a 64-byte boundary, and so are the weights'
    gradients and Adam's moments in their own buffers. Adam is then a dozen operations on the
    whole buffer, not a dozen per weight. ``write_back`` copies weights and moments into the
    members' modules and optimisers.
    """

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
    PER_RUN: ClassVar[frozenset[str]] = frozenset()  # the algorithm's hparams members may vary
    # True: ``_loss`` sets the head's gradients itself and returns its input's (the features')
    HEAD_IN_LOSS: ClassVar[bool] = False
    # True: the update applies the head to each environment's features apart (Fishr), so an
    # environment's head gradient reduces over its own rows only
    HEAD_PER_ENV: ClassVar[bool] = False
    STATS: ClassVar[tuple[str, ...]] = ("loss", "nll")  # the update's statistics, in its order

    def __init__(self, algorithms: list[Algorithm]) -> None:
        self.algorithms = algorithms
        self.layers = [network_layers(a) for a in algorithms]
        self.kinds = ["linear" if isinstance(m, nn.Linear) else "relu" for m in self.layers[0]]
        self.member_params = [
            [p for m in layers if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
            for layers in self.layers
        ]
        n = len(algorithms)
        self.blocks: list[tuple[int, tuple[int, ...]]] = []
        member, start = [], 0
        for p in self.member_params[0]:
            self.blocks.append((start, tuple(p.shape)))
            member.append(torch.arange(n).repeat_interleave(p.numel()))
            padding = -(-n * p.numel() // ALIGN) * ALIGN - n * p.numel()
            member.append(torch.zeros(padding, dtype=torch.long))
            start += n * p.numel() + padding
        self.member = torch.cat(member)  # which member each element belongs to (padding: 0)
        self.flat, self.flat_grad = torch.zeros(start), torch.zeros(start)
        self.exp_avg, self.exp_avg_sq = torch.zeros(start), torch.zeros(start)
        self._denom = torch.empty(start)  # Adam's denominator, rewritten every step
        self.params = self._views(self.flat)
        self.grads = self._views(self.flat_grad)
        # each Linear's (bias, weight^T): what ``F.linear`` multiplies, views of ``flat``
        self._linear = [(b, w.transpose(1, 2)) for w, b in zip(self.params[::2], self.params[1::2])]
        with torch.no_grad():
            for j, view in enumerate(self.params):
                view.copy_(torch.stack([ps[j] for ps in self.member_params]))
        groups = [a.optimizer.param_groups[0] for a in algorithms]
        self.lr = [g["lr"] for g in groups]
        decay = [g["weight_decay"] for g in groups]
        self.decay = self._spread(torch.tensor(decay)) if any(decay) else None
        self.steps = [0] * n  # Adam's, per member (restarts where an algorithm re-creates it)
        self.updates = int(algorithms[0].step)  # the algorithm's step counter
        self.has_grad_cos = algorithms[0].num_train_envs >= 2
        self.binary = self.params[-1].shape[1] == 1  # one logit: binary cross-entropy
        self.products = Products()  # batched where that equals one run's products
        self._group_equal: dict[tuple, bool] = {}  # per layout: the loss's group way is exact
        self.probe_s = 0.0  # seconds spent probing it (the plan times steps without)
        self._row_counts: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._unused = torch.zeros(())  # nll_loss_backward's total_weight: unread unreduced
        self._features = torch.empty(0)
        self._logits = torch.empty(0)  # this step's, for a penalty on the logits (IRM, SD)
        self._unit = torch.empty(0)  # grad_cos's unit vectors, member blocks aligned

    def _views(self, buffer: Tensor) -> list[Tensor]:
        n = len(self.algorithms)
        return [
            buffer[start : start + n * math.prod(shape)].view(n, *shape)
            for start, shape in self.blocks
        ]

    def keys(self) -> list[str]:
        return list(self.STATS) + (["grad_cos"] if self.has_grad_cos else [])

    def _forward(self, x: Tensor, trace: list[tuple[str, Tensor]] | None = None) -> Tensor:
        """The logits; ``trace`` collects what the backward pass reads: each Linear's input,
        each ReLU's output."""
        h, linear = x, iter(self._linear)
        for kind in self.kinds:
            if kind == "relu":
                h = torch.relu_(h)  # in place: the Linear's output is read by nothing else
                if trace is not None:
                    trace.append((kind, h))
            else:
                if trace is not None:
                    trace.append((kind, h))
                bias, weight_t = next(linear)
                h = self.products.addmm(bias, h, weight_t)
        return h

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """One update of every member; its statistics as [N, len(keys())] (``update``'s).

        The backward pass is written out with the kernels autograd runs for the unbatched
        loss (``classification_loss``: cross-entropy as ``nll_loss`` after ``log_softmax``, or
        binary cross-entropy on a single logit; ``F.linear``; ReLU), and in the layout its
        formulas use: ``addmm``'s weight gradient is ``grad^T @ input``.
        """
        n, rows = y.shape
        trace: list[tuple[str, Tensor]] = []
        self._logits = logits = self._forward(x, trace)
        self._features = trace[-1][1]  # the head's input
        scores = self._scores(logits)
        grad, stats = self._loss(scores, y, sizes)
        if self.has_grad_cos:
            stats.append(self._grad_cos(self._features, scores, y, sizes))
        self._backward(grad.view(n, rows, -1), trace[:-1] if self.HEAD_IN_LOSS else trace)
        self._adam()
        self.updates += 1
        return torch.stack(stats, dim=1)

    def _scores(self, logits: Tensor) -> Tensor:
        """What the loss reads, rows of all members in one: log-probabilities [N * R, C], or
        the single logit [N * R] (binary cross-entropy)."""
        flat = logits.reshape(-1, logits.shape[2])
        return flat[:, 0] if self.binary else F.log_softmax(flat, dim=1)

    def _mean_loss(self, scores: Tensor, y: Tensor) -> Tensor:
        """One member's mean loss on some rows, as ``classification_loss`` computes it."""
        if self.binary:
            return F.binary_cross_entropy_with_logits(scores, y.to(scores.dtype))
        return F.nll_loss(scores, y)

    def _mean_losses(self, scores: Tensor, y: Tensor) -> Tensor:
        """[M]: ``_mean_loss(scores[i], y[i])`` for each i (scores [M, R, ...], y [M, R]), one
        call each: its reduction order is the unbatched one."""
        return torch.stack([self._mean_loss(s, t) for s, t in zip(scores.unbind(0), y.unbind(0))])

    def _loss(self, scores: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        """The logits' gradient and the statistics before ``grad_cos``; ERM: the mean loss
        over all rows."""
        n, rows = y.shape
        nll = self._mean_losses(scores.view(n, rows, *scores.shape[1:]), y)
        return self._logits_grad(None, [rows], scores, y), [nll, nll]

    def _env_losses(self, scores: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """[N, E]: each member's mean loss on each environment (``env_losses``), one call each
        (``_mean_losses``)."""
        n, rows = y.shape
        k = len(sizes)
        if len(set(sizes)) == 1:  # environments of equal rows: [N * k] losses in one pass
            blocks = scores.reshape(n * k, sizes[0], *scores.shape[1:])
            return self._mean_losses(blocks, y.reshape(n * k, sizes[0])).view(n, k)
        member, out, start = scores.view(n, rows, *scores.shape[1:]), [], 0
        for size in sizes:
            part, labels = member[:, start : start + size], y[:, start : start + size]
            out.append(self._mean_losses(part, labels))
            start += size
        return torch.stack(out, dim=1)

    def _logits_grad(
        self, grads: Tensor | None, sizes: list[int], scores: Tensor, y: Tensor
    ) -> Tensor:
        """The logits' gradient, [N * R, C], when each member's rows are split into mean losses
        over ``sizes`` consecutive rows and ``grads`` [N, len(sizes)] is d(objective)/d(each
        loss) (None: all ones). Row by row, the kernels autograd runs: for cross-entropy
        ``nll_loss``'s backward (-grad/rows at the label) then ``log_softmax``'s; for one logit,
        binary cross-entropy's (sigmoid - label) * grad / rows."""
        key = (len(y), tuple(sizes))
        if key not in self._row_counts:  # each row's loss size, and a gradient of one per row
            counts = torch.tensor(sizes)
            rows = counts.to(scores.dtype).expand(len(y), -1).repeat_interleave(counts, dim=1)
            rows = rows.reshape(-1)
            self._row_counts[key] = (counts, rows, torch.ones(rows.numel()) / rows)
        counts, rows, unit = self._row_counts[key]  # unit: 1 / rows, the gradient of all ones
        if self.binary:
            grad = torch.sigmoid(scores) - y.reshape(-1).to(scores.dtype)
            if grads is not None:
                grad = grad * grads.repeat_interleave(counts, dim=1).reshape(-1)
            return (grad / rows).unsqueeze(1)
        per_row = (
            unit if grads is None else grads.repeat_interleave(counts, dim=1).reshape(-1) / rows
        )
        nll = torch.ops.aten.nll_loss_backward(
            per_row, scores, y.reshape(-1), None, 0, -100, self._unused
        )
        return torch._log_softmax_backward_data(nll, scores, 1, scores.dtype)

    def _group_way(self, key: tuple, probe: Callable[[], bool]) -> bool:
        """Whether the loss's group way equals its per-member way for this layout and these
        hparams (``key``): ``probe`` on PROBES random inputs, once per key."""
        if key not in self._group_equal:
            start = time.perf_counter()
            self._group_equal[key] = all(probe() for _ in range(PROBES))
            self.probe_s += time.perf_counter() - start
        return self._group_equal[key]

    def _backward(self, grad: Tensor, trace: list[tuple[str, Tensor]]) -> None:
        """Every weight's gradient into ``flat_grad`` from the gradient of ``trace``'s output
        (the logits', or the features' when the trace stops below the head)."""
        grads = self.grads
        j = 2 * sum(kind == "linear" for kind, _ in trace) - 2
        ours = False  # whether ``grad`` is this pass's own product (then ReLU's works in place)
        for i in range(len(trace) - 1, -1, -1):
            kind, tensor = trace[i]
            if kind == "relu":
                out = {"grad_input": grad} if ours else {}
                grad = _THRESHOLD_BACKWARD[ours](grad, tensor, 0, **out)
                continue
            self.products.mm(grad.transpose(1, 2), tensor, out=grads[j])
            torch.sum(grad, 1, out=grads[j + 1])
            if i > 0:  # the network's input needs no gradient
                grad, ours = self.products.mm(grad, self.params[j]), True
            j -= 2

    def _grad_cos(self, features: Tensor, scores: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """``Algorithm.head_grad_cos`` per member: mean pairwise cosine of the per-environment
        gradients of the head (the last Linear, whose input is ``features``).

        Each environment's loss is its rows' mean loss, so ``_logits_grad`` gives every row its
        own environment's gradient at once (the environments share no row). The unbatched
        backward forms each environment's head gradient from all rows with the others' set to
        zero, or (``HEAD_PER_ENV``) from its own rows; the group takes its own rows (a third of
        the products for three environments) wherever a probe finds the two ways equal.
        """
        n, rows = y.shape
        k = len(sizes)
        grad = self._logits_grad(None, sizes, scores, y).view(n, rows, -1)
        key = ("own rows", grad.shape, features.shape, tuple(sizes))
        own = self.HEAD_PER_ENV or self._group_way(
            key, lambda: self._own_rows_probe(grad, features, sizes)
        )
        biases, weights = (self._own_rows if own else self._zero_padded)(grad, features, sizes)
        # [N, k, C * d + C]: each environment's head gradient, weight then bias, normalised
        shape = (n, k, weights.shape[2] + biases.shape[2])
        if self._unit.shape != shape:  # kept: its padding stays zero
            self._unit = _aligned_blocks(*shape)
        unit = torch.cat([weights, biases], dim=2, out=self._unit)
        F.normalize(unit, dim=2, out=unit)
        gram = self.products.mm(unit, unit.transpose(1, 2))
        return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))

    def _own_rows(self, grad: Tensor, features: Tensor, sizes: list[int]) -> tuple[Tensor, Tensor]:
        """Each environment's head gradient from its own rows: biases [N, k, C] and weights
        [N, k, C * d]."""
        n, rows, c = grad.shape
        k = len(sizes)
        if len(set(sizes)) == 1:  # environments of equal rows: one product over N * k blocks
            g = grad.reshape(n * k, sizes[0], c)
            weights = self.products.mm(g.transpose(1, 2), features.reshape(n * k, sizes[0], -1))
            return g.view(n, k, sizes[0], c).sum(2), weights.view(n, k, -1)
        parts = list(zip(grad.split(sizes, dim=1), features.split(sizes, dim=1)))
        biases = torch.stack([g.sum(1) for g, _ in parts], dim=1)
        weights = [self.products.mm(g.transpose(1, 2), x).view(n, -1) for g, x in parts]
        return biases, torch.stack(weights, dim=1)

    def _zero_padded(
        self, grad: Tensor, features: Tensor, sizes: list[int]
    ) -> tuple[Tensor, Tensor]:
        """``_own_rows`` as the unbatched backward forms it: from all rows, the other
        environments' set to zero."""
        n, rows, c = grad.shape
        per_env = torch.zeros(len(sizes), n, rows, c)
        start = 0
        for e, size in enumerate(sizes):
            per_env[e, :, start : start + size] = grad[:, start : start + size]
            start += size
        biases = per_env.sum(2).transpose(0, 1)
        weights = [self.products.mm(g.transpose(1, 2), features).view(n, -1) for g in per_env]
        return biases, torch.stack(weights, dim=1)

    def _own_rows_probe(self, grad: Tensor, features: Tensor, sizes: list[int]) -> bool:
        """Whether ``_own_rows`` equals ``_zero_padded`` on random inputs in these layouts:
        adding the zero rows changes no partial sum unless the kernels group terms by row
        position, which this CPU's may."""
        grad, features = random_like(grad), random_like(features)
        (b1, w1), (b2, w2) = (f(grad, features, sizes) for f in (self._own_rows, self._zero_padded))
        return torch.equal(b1, b2) and torch.equal(w1, w2)

    @torch.no_grad()
    def _adam(self) -> None:
        """torch.optim.Adam's single-tensor step (CPU's default) on the whole buffer, each
        element with its member's lr, weight decay and step count (padding stays zero)."""
        self.steps = [t + 1 for t in self.steps]
        grad = self.flat_grad
        if self.decay is not None:  # grad + wd * p, fused as Tensor.add(alpha=wd) fuses it
            grad = torch.addcmul(grad, self.flat, self.decay)
        self.exp_avg.lerp_(grad, 1 - self.BETA1)
        self.exp_avg_sq.mul_(self.BETA2).addcmul_(grad, grad, value=1 - self.BETA2)
        denom = torch.sqrt(self.exp_avg_sq, out=self._denom)
        corrections2 = {(1 - self.BETA2 ** float(t)) ** 0.5 for t in self.steps}
        if len(corrections2) == 1:  # every member at the same step (Adam's Python float)
            denom.div_(corrections2.pop()).add_(self.EPS)
        else:
            per_member = torch.tensor([(1 - self.BETA2 ** float(t)) ** 0.5 for t in self.steps])
            denom.div_(self._spread(per_member)).add_(self.EPS)
        sizes = [-lr / (1 - self.BETA1 ** float(t)) for lr, t in zip(self.lr, self.steps)]
        if len(set(sizes)) == 1:  # one -step_size for all: Adam's own addcdiv_
            self.flat.addcdiv_(self.exp_avg, denom, value=sizes[0])
        else:  # (-size * m) / denom, addcdiv's arithmetic with each member's -step_size
            self.flat.add_(torch.mul(self._spread(torch.tensor(sizes)), self.exp_avg).div_(denom))

    def _spread(self, per_member: Tensor) -> Tensor:
        """A per-member value at each element of the buffers."""
        return per_member.index_select(0, self.member)

    def _restart_adam(self, members: list[bool]) -> None:
        """``make_optimizer`` again for those members: fresh moments, bias correction from
        step 1."""
        if not any(members):
            return
        fresh = self._spread(torch.tensor(members))
        self.exp_avg.masked_fill_(fresh, 0.0)
        self.exp_avg_sq.masked_fill_(fresh, 0.0)
        self.steps = [0 if m else t for m, t in zip(members, self.steps)]

    @torch.no_grad()
    def write_back(self) -> None:
        """Each member's weights, Adam state and step counter from the stacks."""
        for i, algorithm in enumerate(self.algorithms):
            opt = algorithm.optimizer
            moments = zip(self._views(self.exp_avg), self._views(self.exp_avg_sq))
            for p, stacked, (m, v) in zip(self.member_params[i], self.params, moments):
                p.copy_(stacked[i])
                opt.state[p] = {
                    "step": torch.tensor(float(self.steps[i]), dtype=torch.float32),
                    "exp_avg": m[i].clone(),
                    "exp_avg_sq": v[i].clone(),
                }
            algorithm.step.fill_(self.updates)
