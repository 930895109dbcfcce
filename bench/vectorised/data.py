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

    All members' training environments live in one flat tensor; each epoch's order of every
    member's split (its sampler's permutation of its ``in`` positions) is gathered once, so a
    step is one ``index_select`` of inputs and one of labels.
    """

    def __init__(self, contexts: list[runner.RunContext]) -> None:
        self.names = contexts[0].train_envs
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
        self.orders: dict[tuple[str, int], Tensor] = {}

    def _order(self, name: str, epoch: int) -> Tensor:
        """[N, n_in]: rows of the flat tensors in each member's epoch order."""
        key = (name, epoch)
        if key not in self.orders:
            for old in [k for k in self.orders if k[0] == name and k[1] < epoch - 1]:
                del self.orders[old]
            perms = torch.stack([s.permutation(epoch) for s in self.samplers[name]])
            self.orders[key] = torch.gather(self.split_in[name], 1, perms)
        return self.orders[key]

    def __call__(self, step: int) -> tuple[Tensor, Tensor, list[int]]:
        """Inputs [N, rows, ...], labels [N, rows] and each environment's rows."""
        parts, sizes = [], []
        for name in self.names:
            sampler = self.samplers[name][0]
            if sampler.batch_size == 0:  # full batch: the whole split every step
                parts.append(self.split_in[name])
            else:
                parts += [self._order(name, e)[:, o : o + k] for e, o, k in sampler.spans(step)]
            sizes.append(sampler.batch_size or self.split_in[name].shape[1])
        flat = torch.cat(parts, dim=1)
        n, rows = flat.shape
        x = self.x.index_select(0, flat.reshape(-1)).view(n, rows, *self.x.shape[1:])
        return x, self.y.index_select(0, flat.reshape(-1)).view(n, rows), sizes


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
