"""Where and how a run executes, shared by every kind of run (DG, transfer, multi-task,
meta-learning): claiming its directory, the CPU threads it may use, its precision and the
memory format of its convolutions."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import gc
import os
import platform
import re
from pathlib import Path
from typing import Iterator

import torch

from bench.errors import OutOfMemory, UserError
from bench.onednn_linear import OneDnnLinear
from bench.onednn_linear import available as onednn_available


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Yield True while this process holds the run's lock, False if another worker does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cpu_model() -> str:
    """The CPU's model name (timings and estimates hold only on the CPU they were measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_threads() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# glibc mallopt parameters and their defaults (malloc.h, mallopt(3))
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_kept = 0  # depth of nested freed_memory_kept blocks


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS, Windows): the allocator is left alone
        return None


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Inside the block, freed tensor memory stays in the process for the next step (glibc only;
    yields whether the setting applies); after it, free memory goes back to the kernel.

    glibc serves every allocation above 32 MB (its mmap threshold's ceiling) with a fresh
    mmap and unmaps it on free, so a full-batch step re-faults all its activations from the
    kernel: 119,000 page faults and a quarter to a third of the CPU time of a ``cmnist_irm``
    step (benchmarks/README.md). Serving them from the heap reuses the same pages; results
    are unchanged. Trimming the heap at the end keeps a sweep worker's resident size at what
    its next run needs (joblib restarts a worker whose memory stays high, taking it for a leak).
    """
    global _kept
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _kept == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _kept += 1
    try:
        yield True
    finally:
        _kept -= 1
        if _kept == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


@functools.cache
def freeze_long_lived_objects() -> None:
    """Once per process, as its first training loop starts: collect garbage, then freeze what
    survives (``gc.freeze``) so that Python's cyclic collector passes over it from then on.

    torch and the modules it imports lazily by then (creating an optimiser imports
    ``torch._dynamo``, sympy and more) leave ~320,000 objects that live as long as the process,
    and each full collection walked all of them: 0.15 s, triggered at random during training,
    a tenth of a vectorised group of ten toy runs. What runs allocate later is collected as
    before; what is frozen is still freed by reference counting, only cycles among it are not.
    """
    gc.collect()
    gc.freeze()


_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes")


@contextlib.contextmanager
def out_of_memory_explained(what: str) -> Iterator[None]:
    """A failed allocation inside the block ends in one UserError line saying what to change.

    A run whose batch does not fit (e.g. MMD's 21 kernel matrices at a full batch of 25,000
    rows) is the user's choice of protocol, not a bug: it gets a line, not a traceback.
    """
    try:
        yield
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        text = str(exc)
        if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) and (
            "can't allocate memory" not in text
        ):
            raise
        size = _ALLOCATION.search(text)
        asked = f"one allocation of {int(size.group(1)) / 2**30:.1f} GiB" if size else "memory"
        raise OutOfMemory(
            f"out of memory in {what}: {asked} failed; use a smaller batch (the batch_size "
            "hparam), fewer parallel --jobs, or a machine with more memory"
        ) from None


def native_bf16(device: torch.device) -> str | None:
    """The hardware that makes bf16 fast on ``device`` ("AMX", "AVX512_BF16", "CUDA"), or None
    where bf16 is emulated or the CPU's flags cannot be read (then bf16 is never advertised)."""
    if device.type == "cuda":
        return "CUDA" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.split() for line in text.splitlines() if line.startswith("flags")), [])
    if "amx_bf16" in flags:
        return "AMX"
    return "AVX512_BF16" if "avx512_bf16" in flags else None


def precision_context(
    device: torch.device, precision: str | None
) -> contextlib.AbstractContextManager:
    """Autocast to bfloat16 for ``precision == "bf16"``; linear layers in oneDNN for
    ``"fp32-onednn"`` (bench/onednn_linear.py); fp32 (None) runs unchanged."""
    if precision in (None, "fp32"):
        return contextlib.nullcontext()
    if precision == "fp32-onednn":
        check_precision(device, precision)
        return OneDnnLinear()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse a precision this device cannot run (one line, before any work)."""
    if precision != "fp32-onednn":
        return
    if device.type != "cpu":
        raise UserError(
            f"--precision fp32-onednn is a CPU kernel choice; on {device.type} use fp32 or bf16"
        )
    if not onednn_available():
        raise UserError(
            f"--precision fp32-onednn needs oneDNN's fp32 linear kernel, which torch "
            f"{torch.__version__} does not have here; use fp32"
        )


def wants_channels_last(model: torch.nn.Module, device: torch.device, choice: bool | None) -> bool:
    """channels_last for 2-D conv nets on CPU unless told otherwise (measured faster there)."""
    if choice is not None:
        return choice
    return device.type == "cpu" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
