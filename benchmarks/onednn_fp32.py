"""fp32 matrix products, MKL (torch's default) vs oneDNN (``--precision fp32-onednn``), side by side.

Usage: nice -n 10 python benchmarks/onednn_fp32.py [--threads 2] [--rounds 3]

Times each product of a ``cmnist_irm`` MLP step (50,000 rows: two environments of 25,000;
392 -> 390 -> 390) both ways, interleaved round by round, plus a square 1024^3 product: the
forward ``x @ W.T + b``, the input gradient ``dy @ W`` and the weight gradient ``dy.T @ x``,
the last also in the row chunks bench/onednn_linear.py sums (``WEIGHT_GRAD_ROWS``) and
unchunked, which is why it chunks. Prints GFLOP/s (wall) and oneDNN / MKL.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from _timing import machine
from bench.onednn_linear import WEIGHT_GRAD_ROWS, _matmul, _weight_grad


def _seconds(fn: Callable[[], object]) -> float:
    fn()  # warm-up: oneDNN builds its kernel on the first call of a shape
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    torch.manual_seed(0)
    rows = 50_000
    x, w, b = torch.randn(rows, 392), torch.randn(390, 392), torch.randn(390)
    dy, sq_a, sq_b = torch.randn(rows, 390), torch.randn(1024, 1024), torch.randn(1024, 1024)
    cases = {  # name: (FLOP, MKL, oneDNN)
        "square 1024^3": (2 * 1024**3, lambda: sq_a @ sq_b.T, lambda: _matmul(sq_a, sq_b)),
        "forward x @ W.T + b": (
            2 * rows * 392 * 390,
            lambda: torch.addmm(b, x, w.T),
            lambda: _matmul(x, w, b),
        ),
        "input gradient dy @ W": (
            2 * rows * 390 * 392,
            lambda: dy @ w,
            lambda: _matmul(dy, w.T),
        ),
        f"weight gradient dy.T @ x, {WEIGHT_GRAD_ROWS}-row chunks": (
            2 * rows * 390 * 392,
            lambda: dy.T @ x,
            lambda: _weight_grad(dy, x),
        ),
        "weight gradient dy.T @ x, unchunked": (
            2 * rows * 390 * 392,
            lambda: dy.T @ x,
            lambda: _matmul(dy.T, x.T),
        ),
    }
    times: dict[tuple[str, str], list[float]] = {}
    with torch.inference_mode():
        for round_ in range(args.rounds):
            for name, (_, mkl, onednn) in cases.items():
                order = [("MKL", mkl), ("oneDNN", onednn)]
                for side, fn in order if round_ % 2 == 0 else order[::-1]:
                    times.setdefault((name, side), []).append(_seconds(fn))
    print(f"\n{args.rounds} interleaved rounds, {args.threads} threads, medians")
    print("| product | MKL GFLOP/s | oneDNN GFLOP/s | oneDNN / MKL |")
    print("|---|---|---|---|")
    for name, (flop, _, _) in cases.items():
        mkl, onednn = (statistics.median(times[(name, s)]) for s in ("MKL", "oneDNN"))
        print(
            f"| {name} | {flop / mkl / 1e9:.0f} | {flop / onednn / 1e9:.0f} | {mkl / onednn:.2f}x |"
        )


if __name__ == "__main__":
    main()
