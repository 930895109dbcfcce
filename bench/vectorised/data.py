"""A group's data: every member's minibatches of a step, and every member's evaluation, as
stacked tensors in the members' own order (``GroupBatches``, ``GroupEval``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bench import runner
from bench.evaluation import empty_record, skipped_record, split_scores
from bench.vectorised.erm import BatchedERM


class GroupBatches:
    """Every member's minibatches of one step as stacked tensors: inputs [N, rows, ...] and
    labels [N, rows], each member's rows those of ``RunContext.minibatches`` in its order.

    All members' training environments live in one flat tensor. A sampler's batches are
    consecutive positions of a stream of epoch orders (its permutations of the split's ``in``
    positions), so the rows of ``CHUNK`` steps are sliced from that stream at once; a step is
    then one ``index_select`` of inputs and one of labels.
    """

    CHUNK = 32  # steps whose rows are found at once (the inputs are still gathered per step)

    def __init__(self, contexts: list[runner.RunContext]) -> None:
        self.names = contexts[0].train_envs
        self.steps = contexts[0].spec.steps
        self.samplers = {n: [c.samplers[n] for c in contexts] for n in self.names}
        xs, ys, self.split_in = [], [], {}
        offset = 0
        for name in self.names:
            sizes = [len(c.envs[name].y) for c in contexts]
            base = torch.tensor([offset + sum(sizes[:i]) for i in range(len(sizes))])
            self.split_in[name] = (
                torch.stack([c.splits[name]["in"] for c in contexts]) + base[:, None]
            )
            xs += [c.envs[name].x for c in contexts]
            ys += [c.envs[name].y for c in contexts]
            offset += sum(sizes)
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        self.sizes = [
            self.samplers[n][0].batch_size or self.split_in[n].shape[1] for n in self.names
        ]
        self.orders: dict[tuple[str, int], Tensor] = {}
        self._first, self._rows = 0, torch.empty(0, len(contexts), sum(self.sizes))

    def _order(self, name: str, epoch: int) -> Tensor:
        """[N, n_in]: rows of the flat tensors in each member's epoch order."""
        key = (name, epoch)
        if key not in self.orders:
            for old in [k for k in self.orders if k[0] == name and k[1] < epoch - 1]:
                del self.orders[old]
            perms = torch.stack([s.permutation(epoch) for s in self.samplers[name]])
            self.orders[key] = torch.gather(self.split_in[name], 1, perms)
        return self.orders[key]

    def _stream(self, name: str, start: int, stop: int) -> Tensor:
        """[N, stop - start]: positions [start, stop) of each member's stream of epoch orders."""
        n_in = self.split_in[name].shape[1]
        first, last = start // n_in, (stop - 1) // n_in
        orders = [self._order(name, e) for e in range(first, last + 1)]
        stream = orders[0] if len(orders) == 1 else torch.cat(orders, dim=1)
        return stream[:, start - first * n_in : stop - first * n_in]

    def _chunk(self, first: int) -> Tensor:
        """[S, N, rows]: the flat tensors' rows of steps first .. first + S - 1."""
        count = max(1, min(self.CHUNK, self.steps - first))
        parts = []
        for name, size in zip(self.names, self.sizes):
            batch = self.samplers[name][0].batch_size
            if batch == 0:  # full batch: the whole split every step
                parts.append(self.split_in[name].expand(count, -1, -1))
            else:
                stream = self._stream(name, first * batch, (first + count) * batch)
                parts.append(stream.reshape(-1, count, size).transpose(0, 1))
        return torch.cat(parts, dim=2)

    def __call__(self, step: int) -> tuple[Tensor, Tensor, list[int]]:
        """Inputs [N, rows, ...], labels [N, rows] and each environment's rows."""
        if not self._first <= step < self._first + len(self._rows):
            self._first, self._rows = step, self._chunk(step)
        rows = self._rows[step - self._first]
        n, k = rows.shape
        flat = rows.view(-1)
        x = self.x.index_select(0, flat).view(n, k, *self.x.shape[1:])
        return x, self.y.index_select(0, flat).view(n, k), self.sizes


class GroupEval:
    """``evaluation.evaluate`` of every member at once: the same splits, chunks of
    ``eval_batch_size`` rows, forward passes and confusion counts, batched along the members."""

    def __init__(self, contexts: list[runner.RunContext], batched: BatchedERM) -> None:
        self.contexts, self.batched = contexts, batched
        first = contexts[0]
        self.classes = max(first.algorithm.num_classes, 2)
        self.chunk = first.options.eval_batch_size
        names = list(first.splits)
        offsets, xs, ys, start = {}, [], [], 0
        for i, ctx in enumerate(contexts):
            for name in names:
                offsets[i, name] = start
                xs.append(ctx.envs[name].x)
                ys.append(ctx.envs[name].y)
                start += len(ctx.envs[name].y)
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        self.idx = {
            (name, part): torch.stack(
                [ctx.splits[name][part] + offsets[i, name] for i, ctx in enumerate(contexts)]
            )
            for name in names
            for part in first.splits[name]
        }

    def comparable(self) -> bool:
        """Every member has the first's environments, split sizes and skipped splits."""
        first = self.contexts[0]
        return all(
            ctx.skip == first.skip
            and {n: {p: len(i) for p, i in parts.items()} for n, parts in ctx.splits.items()}
            == {n: {p: len(i) for p, i in parts.items()} for n, parts in first.splits.items()}
            for ctx in self.contexts
        )

    @torch.inference_mode()
    def __call__(self) -> list[dict[str, dict[str, dict[str, Any]]]]:
        members = len(self.contexts)
        out: list[dict[str, dict[str, dict[str, Any]]]] = [{} for _ in range(members)]
        for (name, part), idx in self.idx.items():
            n = idx.shape[1]
            if (name, part) in self.contexts[0].skip or n == 0:
                found = [skipped_record(n) if n else empty_record()] * members
            else:
                found = self._split(idx)
            for i in range(members):
                out[i].setdefault(name, {})[part] = found[i]
        return out

    def _split(self, idx: Tensor) -> list[dict[str, Any]]:
        members, n = idx.shape
        c = self.classes
        codes = []
        for start in range(0, n, self.chunk):
            flat = idx[:, start : start + self.chunk].reshape(-1)
            x = self.x.index_select(0, flat).view(members, -1, *self.x.shape[1:])
            logits = self.batched._forward(x)
            pred = (logits[..., 0] > 0).long() if logits.shape[2] == 1 else logits.argmax(dim=2)
            codes.append(self.y.index_select(0, flat).view(members, -1) * c + pred)
        cells = torch.cat(codes, dim=1) + torch.arange(members).unsqueeze(1) * (c * c)
        counts = torch.bincount(cells.reshape(-1), minlength=members * c * c)
        out = []
        for cells in counts.view(members, c * c).tolist():
            confusion = [[k // c, k % c, count] for k, count in enumerate(cells) if count]
            out.append(split_scores(confusion, n))
        return out
