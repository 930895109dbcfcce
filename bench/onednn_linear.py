"""fp32 linear layers computed by oneDNN: the ``fp32-onednn`` precision.

PyTorch computes an fp32 ``F.linear`` on CPU with MKL's sgemm. On AMD CPUs MKL takes its
AVX2 path while oneDNN picks its kernels from the CPU's flags: there oneDNN's fp32 matrix
products are 1.5-2.3x faster (benchmarks/README.md, "oneDNN fp32"). Every product and sum is
still IEEE fp32; only the order of the sums differs from MKL's, so results equal ``fp32`` up to
rounding, not bit for bit. That is why this is a precision of its own, hashed into the run id,
opt-in, with ``fp32`` the default.

What it changes: every ``F.linear`` (so every ``nn.Linear``) on CPU fp32 tensors, its
forward and its first-order backward. Other products (``@``, convolutions, which already run
in oneDNN) are unchanged, as are functorch transforms (``vmap``/``grad``, e.g. Fishr's
per-sample gradients) and double backward (``create_graph``), which fall back to PyTorch's own
ops so that higher derivatives stay exact. Any change to this routing or to
``WEIGHT_GRAD_ROWS`` changes ``fp32-onednn`` results, so it needs a new precision name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# The weight gradient sums over every row of the batch. oneDNN runs such long reductions
# at MKL's speed past ~16k rows on the CPUs measured, at its full speed in chunks: the chunks'
# products are added in row order.
WEIGHT_GRAD_ROWS = 8192


def _matmul(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b_t.T + bias`` in oneDNN (its fp32 linear kernel; strided views are fine)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


def _weight_grad(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dy.T @ x`` for 2-D ``dy`` (rows x out) and ``x`` (rows x in), chunked over rows."""
    total = None
    for start in range(0, len(x), WEIGHT_GRAD_ROWS):
        rows = slice(start, start + WEIGHT_GRAD_ROWS)
        part = _matmul(dy[rows].T, x[rows].T)
        total = part if total is None else total.add_(part)
    return total if total is not None else dy.new_zeros(dy.shape[1], x.shape[1])


class _Linear(torch.autograd.Function):
    """``F.linear`` whose forward and first-order backward products run in oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        flat = x.reshape(-1, x.shape[-1])
        return _matmul(flat, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        flat_dy, flat_x = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = dw = db = None
        if torch.is_grad_enabled():  # create_graph: differentiable ops, exact higher derivatives
            if need_x:
                dx = dy @ weight
            if need_w:
                dw = flat_dy.T @ flat_x
        else:
            if need_x:
                dx = _matmul(flat_dy, weight.T).reshape(x.shape)
            if need_w:
                dw = _weight_grad(flat_dy, flat_x)
        if need_b and ctx.has_bias:
            db = flat_dy.sum(0)
        return dx, dw, db


def _arguments(input: Any, weight: Any, bias: Any = None) -> tuple[Any, Any, Any]:
    """``F.linear``'s arguments, however they were passed."""
    return input, weight, bias


def _routed(x: Any, weight: Any, bias: Any) -> bool:
    """Whether this ``F.linear`` call runs in oneDNN: plain CPU fp32 tensors, no transform."""
    tensors = [t for t in (x, weight, bias) if t is not None]
    return (
        all(type(t) is torch.Tensor or type(t) is torch.nn.Parameter for t in tensors)
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and all(t.layout == torch.strided for t in tensors)
        and x.dim() >= 2
        and x.numel() > 0
        and weight.dim() == 2
        and torch._C._functorch.peek_interpreter_stack() is None
        and not torch.is_autocast_enabled("cpu")
    )


class OneDnnLinear(TorchFunctionMode):
    """Inside this mode, fp32 CPU linear layers run in oneDNN (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _arguments(*args, **kwargs)
            if _routed(x, weight, bias):
                return _Linear.apply(x, weight, bias)
        return func(*args, **kwargs)


def available() -> bool:
    """Whether this PyTorch build has oneDNN (mkldnn), the linear kernel used here and the
    functorch probe ``_routed`` reads (private APIs: a later torch may rename them, and then
    this precision is refused, not broken)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch._C._functorch, "peek_interpreter_stack")
    )
