"""IRM-paper Colored MNIST (``cmnist_irm``): full-batch ERM step time through the harness's run path.

Usage: nice -n 10 python benchmarks/cmnist_irm.py [--steps 5] [--rounds 3] [--threads 1,2] [--data-dir DIR]

Every step trains on both training environments whole (2 x 25,000 images of 2x14x14
through the 392-256-256-1 MLP). Variants, interleaved per round so load hits all alike:
- ``regather``: the split gathered from the environment every step (the harness before
  the full-batch cache), fp32;
- ``cached``: the harness now (``RunContext.minibatches``: the split gathered once), fp32;
- ``cached-bf16``: the same under bf16 autocast.
Each at every thread count in ``--threads``. Prints s/step (wall, CPU) and the
projected 501-step run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from _timing import clock, flops, machine
from bench import runner
from bench.spec import RuntimeOptions, make_spec

FULL_STEPS = 501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        contexts = {}
        for name, precision in (("regather", None), ("cached", None), ("cached-bf16", "bf16")):
            spec = make_spec("erm", "cmnist_irm", trial_seed=0, precision=precision)
            options = RuntimeOptions(
                output_dir=Path(tmp) / name, data_dir=args.data_dir, progress=False
            )
            contexts[name] = runner.prepare(spec, options, Path(tmp) / name)
        step_flops = flops(lambda: _steps("cached", contexts["cached"], 1))
        times: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                for name, ctx in contexts.items():
                    times.setdefault((name, threads), []).append(
                        clock(lambda: _steps(name, ctx, args.steps), repeat=1)
                    )
    print(f"\nstep: {step_flops / 1e9:.1f} GFLOP")
    print("| variant | threads | s/step | CPU-s/step | projected 501 steps |")
    print("|---|---|---|---|---|")
    for (name, threads), values in times.items():
        wall = statistics.median(w for w, _ in values) / args.steps
        cpu = statistics.median(c for _, c in values) / args.steps
        print(f"| {name} | {threads} | {wall:.3f} | {cpu:.3f} | {FULL_STEPS * wall:.0f} s |")


def _steps(name: str, ctx: runner.RunContext, n: int) -> None:
    start = int(ctx.algorithm.step)
    for step in range(start, start + n):
        if name == "regather":
            batches = [ctx.envs[e].batch(ctx.splits[e]["in"], train=True) for e in ctx.train_envs]
        else:
            batches = ctx.minibatches(step)
        with runner.precision_context(ctx.device, ctx.spec.precision):
            ctx.algorithm.update(batches)


if __name__ == "__main__":
    main()
