"""Where a vectorised group's step goes, timed in place; optionally two checkouts side by side.

Usage: python benchmarks/vectorised_step_parts.py [--algorithm erm] [--dataset fish_toy]
    [--members 10] [--steps 980] [--rounds 3] [--other PATH/checkout-of-bench]

Prepares ``--members`` trials as one group, gathers their minibatches, takes 20 untimed steps,
then ``--steps`` steps with a timer around each part of ``BatchedERM.step`` (forward, scores,
loss, ``grad_cos``, backward, Adam) and around ``GroupBatches``, which finds and gathers the
step's minibatches (not part of ``step``). Parts are timed inside the step's own sequence on purpose:
timed alone in a loop on the same inputs, small operations run from warm caches and can look
several times faster than they are in a step (benchmarks/README.md, ninth session). With
``--other``, each round runs this checkout and the other one in fresh processes, alternating,
so that two commits compare on one machine in one run.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP_PARTS = ["_forward", "_scores", "_loss", "_grad_cos", "_backward", "_adam", "step"]
PARTS = ["batches", *STEP_PARTS]


def measure(algorithm: str, dataset: str, members: int, steps: int) -> dict[str, float]:
    """Microseconds per step in each part (``step``: the whole update)."""
    import torch

    from bench import runner
    from bench.execution import freed_memory_kept
    from bench.spec import RuntimeOptions, make_spec
    from bench.vectorised.algorithms import BATCHED
    from bench.vectorised.data import GroupBatches
    from bench.vectorised.erm import BatchedERM

    torch.set_num_threads(1)
    spent: dict[str, float] = collections.defaultdict(float)
    engine = BATCHED[algorithm]

    def timed(fn, name):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    for name in STEP_PARTS:  # the algorithm's own override where it has one
        owner = engine if name in vars(engine) else BatchedERM
        setattr(owner, name, timed(getattr(owner, name), name))
    specs = [make_spec(algorithm, dataset, trial_seed=t) for t in range(members)]
    with tempfile.TemporaryDirectory() as tmp, freed_memory_kept():
        options = RuntimeOptions(output_dir=Path(tmp), progress=False, threads=1)
        contexts = [runner.prepare(s, options, Path(tmp) / str(i)) for i, s in enumerate(specs)]
        batches = GroupBatches(contexts)
        group = engine([ctx.algorithm for ctx in contexts])
        for step in range(20):
            group.step(*batches(step))
        spent.clear()
        for step in range(20, 20 + steps):
            start = time.perf_counter()
            inputs = batches(step)
            spent["batches"] += time.perf_counter() - start
            group.step(*inputs)
    return {name: spent[name] / steps * 1e6 for name in PARTS if name in spent}


def _row(label: str, parts: dict[str, float]) -> str:
    return (
        f"| {label} | "
        + " | ".join(f"{parts.get(name, float('nan')):.0f}" for name in PARTS)
        + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="erm", help="one that trains batched")
    parser.add_argument("--dataset", default="fish_toy")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--steps", type=int, default=980)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", type=Path, help="another checkout of bench to compare")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.algorithm, args.dataset, args.members, args.steps)))
        return
    from _timing import machine

    print(machine())
    print(f"load average before: {os.getloadavg()}")
    sides = {"this checkout": Path(__file__).resolve().parents[1]}
    if args.other:
        sides["other: " + str(args.other)] = args.other.resolve()
    print(f"\n{args.algorithm} on {args.dataset}, {args.members} members, {args.steps} steps timed")
    print("| round, checkout | " + " | ".join(f"{p} us" for p in PARTS) + " |")
    print("|---|" + "---|" * len(PARTS))
    flags = [
        f"--{k}={v}"
        for k, v in vars(args).items()
        if k in ("algorithm", "dataset", "members", "steps")
    ]
    for round_ in range(args.rounds):
        for label, root in sides.items():
            env = {**os.environ, "PYTHONPATH": str(root)}
            found = (
                subprocess.run(
                    [sys.executable, __file__, "--child", *flags],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            print(_row(f"{round_ + 1}, {label}", json.loads(found)))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
