"""Freed tensor memory kept for the next step (``bench.execution.freed_memory_kept``) vs glibc's
default, on full-batch ``cmnist_irm`` steps.

Usage: nice -n 10 python benchmarks/heap_reuse.py [--algorithms erm,irm] [--steps 5] [--rounds 2]
    [--threads 2] [--data-dir DIR]

The setting is process-wide, so each variant runs in its own process, alternating per round:
``reuse`` is the harness as it trains (``runner.run`` trains inside ``freed_memory_kept``);
``glibc default`` leaves the allocator alone. A child prepares the run, takes one untimed step, then times ``--steps`` update
steps. Prints s/step (wall, CPU), page faults per step and the kernel's CPU per step
(``getrusage``): the cost of mapping and zero-filling fresh pages for every activation above
glibc's 32 MB mmap threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import machine

VARIANTS = ("reuse", "glibc default")


def child(algorithm: str, variant: str, steps: int, threads: int, data_dir: str | None) -> None:
    import torch

    from bench import runner
    from bench.execution import freed_memory_kept
    from bench.spec import RuntimeOptions, make_spec

    torch.set_num_threads(threads)
    kept = freed_memory_kept() if variant == "reuse" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, kept:
        spec = make_spec(algorithm, "cmnist_irm", trial_seed=0)
        options = RuntimeOptions(
            output_dir=Path(tmp), data_dir=data_dir, threads=threads, progress=False
        )
        ctx = runner.prepare(spec, options, Path(tmp))
        ctx.algorithm.update(ctx.minibatches(0))  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu = time.perf_counter(), time.process_time()
        for step in range(1, steps + 1):
            ctx.algorithm.update(ctx.minibatches(step))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall": wall / steps,
                "cpu": cpu / steps,
                "faults": (after.ru_minflt - before.ru_minflt) / steps,
                "sys": (after.ru_stime - before.ru_stime) / steps,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="erm,irm")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--child", nargs=2, metavar=("ALGORITHM", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps, args.threads, args.data_dir)
        return
    print(machine())
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for algorithm in args.algorithms.split(","):
            for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
                command = [sys.executable, __file__, "--child", algorithm, variant]
                command += ["--steps", str(args.steps), "--threads", str(args.threads)]
                command += ["--data-dir", args.data_dir] if args.data_dir else []
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                results.setdefault((algorithm, variant), []).append(
                    json.loads(out.stdout.splitlines()[-1])
                )
    print(f"\n{args.rounds} rounds x {args.steps} steps, {args.threads} threads, medians")
    print("| algorithm | variant | s/step | CPU-s/step | page faults/step | kernel CPU-s/step |")
    print("|---|---|---|---|---|---|")
    for (algorithm, variant), rows in results.items():
        m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"| {algorithm} | {variant} | {m['wall']:.3f} | {m['cpu']:.3f} | "
            f"{m['faults']:,.0f} | {m['sys']:.3f} |"
        )


if __name__ == "__main__":
    main()
