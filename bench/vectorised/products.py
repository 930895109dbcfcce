"""Matrix products of a group whose every member's slice equals the unbatched product.

One run computes ``torch.mm``/``torch.addmm`` on its own freshly allocated (64-byte aligned)
tensors. ``bmm``/``baddbmm`` compute each slice with the same arithmetic for many shapes but
not all: MKL's kernel choice differs for some (a 5x16 @ 16x5 product, a one-column head) and
for slices that do not start 64-byte aligned. So each product's layout (shapes, strides,
alignment) is probed once with random operands: the batched kernel is used if it equals the
per-member products on every probe, else the group loops over its members, calling the
unbatched kernel on aligned operands.
"""

from __future__ import annotations

import torch
from torch import Tensor

ALIGN = 16  # floats: 64 bytes, where CPU tensors start
PROBES = 3  # a kernel that rounds differently did so on every random input tried


def _layout(t: Tensor) -> tuple:
    return t.shape, t.stride(), t.storage_offset() % ALIGN


def random_like(t: Tensor) -> Tensor:
    """Random values in ``t``'s layout: same shape, strides and alignment."""
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    offset = t.storage_offset() % ALIGN
    return torch.randn(offset + extent, dtype=t.dtype).as_strided(t.shape, t.stride(), offset)


def _aligned(t: Tensor) -> Tensor:
    """``t`` itself if it starts 64-byte aligned, else a fresh copy in its layout (as a run's
    own tensor would be)."""
    if t.storage_offset() % ALIGN == 0:
        return t
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)


class Products:
    """``mm`` and ``addmm`` of stacked operands ([N, ...]), slice by slice as one run's.

    A layout's verdict is a fact of this process's kernels, so every instance shares it: a
    group's first-step check probes each layout once for the whole run.
    """

    _batched: dict[tuple, bool] = {}  # per layout of the operands: bmm equals mm

    def mm(self, a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
        """``out``: where to write the product (a buffer the caller keeps)."""
        if self._batched_equal(a, b, None):
            return torch.bmm(a, b, out=out)
        return torch.stack([_aligned(x).mm(_aligned(y)) for x, y in zip(a, b)], out=out)

    def addmm(self, bias: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """``bias`` [N, out] added to every row, as ``F.linear`` adds it."""
        if self._batched_equal(a, b, bias):
            return torch.baddbmm(bias.unsqueeze(1), a, b)
        return torch.stack(
            [torch.addmm(c, _aligned(x), _aligned(y)) for c, x, y in zip(bias, a, b)]
        )

    def _batched_equal(self, a: Tensor, b: Tensor, bias: Tensor | None) -> bool:
        key = (_layout(a), _layout(b), None if bias is None else _layout(bias))
        found = self._batched.get(key)
        if found is None:
            found = self._batched[key] = all(self._probe(a, b, bias) for _ in range(PROBES))
        return found

    @staticmethod
    def _probe(a: Tensor, b: Tensor, bias: Tensor | None) -> bool:
        a, b = random_like(a), random_like(b)
        if bias is None:
            found = torch.bmm(a, b)
            expected = [_aligned(x).mm(_aligned(y)) for x, y in zip(a, b)]
        else:
            bias = random_like(bias)
            found = torch.baddbmm(bias.unsqueeze(1), a, b)
            expected = [torch.addmm(c, _aligned(x), _aligned(y)) for c, x, y in zip(bias, a, b)]
        return all(torch.equal(f, e) for f, e in zip(found, expected))
