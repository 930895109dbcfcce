"""Shared by the side-by-side benchmarks: a reference's own code and bench, timed the same way.

Each side runs in its own subprocess (``_timed_child.py``), which stamps every
``torch.optim.Adam.step`` call (wall and CPU) and times the evaluation functions it is told
to wrap; this process adds the child's whole wall time and the CPU of every process the
child started (a reference's data-loader workers run outside its main process).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _timing import flops
from bench import runner
from bench.spec import RuntimeOptions, make_spec

CHILD = Path(__file__).with_name("_timed_child.py")


def write_torchvision_mnist(npz: Path, root: Path) -> None:
    """``root/MNIST/raw/*-ubyte``: what ``torchvision.datasets.MNIST(root)`` reads, from mnist.npz."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = np.load(npz)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        header = np.array([2051, len(images), 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([2049, len(labels)], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())


@dataclass(frozen=True)
class Timing:
    """One side's run as the child stamped it, and as this process saw it from outside."""

    stamps: list[list[float]]  # (wall, CPU) at each Adam.step call
    evals: list[list[float]]  # [steps so far, wall s, CPU s, images] per evaluation call
    cpu_main: float  # the child's own CPU seconds
    cpu_all: float  # the child's and its reaped descendants' (data-loader workers) CPU seconds
    wall: float  # the whole child: start-up, data, training, evaluations

    def gaps(self) -> list[list[float]]:
        """(wall, CPU) seconds between consecutive optimiser steps."""
        return [[b[0] - a[0], b[1] - a[1]] for a, b in zip(self.stamps, self.stamps[1:])]

    def step_gaps(self) -> list[list[float]]:
        """The gaps that hold no evaluation: one training iteration each."""
        evaluated = {int(row[0]) - 1 for row in self.evals}
        return [gap for i, gap in enumerate(self.gaps()) if i not in evaluated]

    def checkpoints(self) -> list[list[float]]:
        """[wall s, CPU s, images] of each checkpoint: the evaluation calls after one step, summed."""
        out: dict[int, list[float]] = {}
        for steps, wall, cpu, images in self.evals:
            row = out.setdefault(int(steps), [0.0, 0.0, 0])
            row[0], row[1], row[2] = row[0] + wall, row[1] + cpu, row[2] + images
        return list(out.values())


def timed_child(config: dict[str, Any], env: dict[str, str], cwd: Path) -> Timing:
    """Run ``_timed_child.py`` with ``config`` (see its docstring) in ``cwd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(config)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_all = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    for line in out.stdout.splitlines():
        if line.startswith("TIMES "):
            times = json.loads(line[len("TIMES ") :])
            return Timing(times["stamps"], times["evals"], times["cpu"], cpu_all, wall)
    raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-2000:]}")


def medians(rows: list[list[float]]) -> tuple[float, float]:
    """Median of the first two columns: (wall, CPU)."""
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def bench_step_flops(algorithm: str, dataset: str, tmp: Path, data_dir: str | None = None) -> int:
    """FLOP of one bench training step (forward + backward, torch's counter), fp32."""
    spec = make_spec(algorithm, dataset, trial_seed=0)
    options = RuntimeOptions(output_dir=tmp / "flops", data_dir=data_dir, progress=False)
    ctx = runner.prepare(spec, options, tmp / "flops")
    return flops(lambda: ctx.algorithm.update(ctx.minibatches(0)))
