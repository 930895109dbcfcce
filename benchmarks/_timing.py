"""Shared by the benchmark scripts: wall and CPU clocks, machine load, the compute-bound reference.

The reference machine is shared, so every script reports both wall seconds and the
process's CPU seconds (``time.process_time``: all threads, unaffected by waiting for a
core) next to the load average, and compares variants inside one process.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def machine() -> str:
    """CPU model, cores, torch threads and the 1-minute load average."""
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            present = set(next(line for line in f if line.startswith("flags")).split())
        flags = (
            " ".join(flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in present)
            or "no avx512"
        )
    except (OSError, StopIteration):
        pass
    return (
        f"{model} [{flags}], {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def clock(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of ``fn()`` over ``repeat`` calls after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (matmuls and convolutions, as torch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _onednn_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in oneDNN's fp32 kernel (bench/onednn_linear.py)."""
    from bench.onednn_linear import _matmul

    return _matmul(a, b)


def peak_flops(repeat: int = 5, bf16: bool = False) -> dict[str, float]:
    """Measured FLOP/s of this process on a square fp32 matmul (MKL's sgemm, torch's default,
    and oneDNN's, ``--precision fp32-onednn``) and on the CNN's largest convolution.

    The best of them is the machine's compute bound for fp32 here: what a perfect
    implementation of the model could reach on these cores with these threads (on AMD CPUs
    MKL's sgemm takes its AVX2 path, below oneDNN's matmul and convolutions). ``bf16`` adds
    a matmul and the convolution in bf16, the bound of ``--precision bf16`` (far above fp32 with native bf16, AMX
    or AVX512_BF16; below it where bf16 is emulated); opt-in, because callers take the fp32
    bound as the best of every entry.
    """
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(128, 128, 14, 14)

    def sgemm() -> torch.Tensor:
        return a @ b

    # (name, kernel, a call with the same FLOP that torch's counter sees: it skips oneDNN's op)
    kernels = [
        ("sgemm 1024^3", sgemm, sgemm),
        ("oneDNN fp32 matmul 1024^3", lambda: _onednn_matmul(a, b), sgemm),
        ("conv 128->128 3x3 @14x14, batch 128", lambda: conv(x), None),
    ]
    if bf16:
        a16, b16, x16 = a.bfloat16(), b.bfloat16(), x.bfloat16()
        conv16 = torch.nn.Conv2d(128, 128, 3, padding=1).bfloat16()
        kernels.append(("bf16 matmul 1024^3", lambda: a16 @ b16, None))
        kernels.append(("bf16 conv 128->128 3x3 @14x14, batch 128", lambda: conv16(x16), None))
    out = {}
    with torch.inference_mode():
        for name, fn, counted in kernels:
            n = flops(counted or fn)
            wall, cpu = clock(fn, repeat)
            out[name] = n / wall
            out[name + " per CPU-second"] = n / cpu
    return out
