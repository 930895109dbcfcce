"""Sweeps of a tiny model, one by one vs vectorised (``bench sweep --vectorise``), side by side.

Usage: python benchmarks/vectorised_sweep.py [--algorithm erm] [--dataset fish_toy] [--jobs 1]
    [--steps N] [--rounds 3]

Two workloads, each through the local launcher end to end (run directories, records,
checkpoints, evaluations at the dataset's cadence), in fresh output directories:

- (a) a 3-trial x 4-hparam sweep of the algorithm (ERM by default). Every run must share
  its shapes, so the batch size is fixed by an override (``{"batch_size": 64}``); ERM's
  hparam samples then differ only in lr and weight decay (the toy fixes the MLP's width,
  depth and dropout), and V-REx's and GroupDRO's also in their own hparams, which members of
  a group may vary: all 12 runs form one group.
- (b) 10 trials at the dataset's defaults.

The datasets are built and both paths warmed up first; then each round trains each workload
both ways, alternating which goes first. Prints the CPU, the load average, each side's median
wall and CPU seconds, the speed-up, and whether every run's records are identical to its
one-by-one twin (every field but ``wall_s``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _timing import machine
from bench import launchers, records, runner
from bench.spec import RunSpec, RuntimeOptions, make_spec


def _specs(algorithm: str, dataset: str, steps: int | None) -> dict[str, list[RunSpec]]:
    sweep = [
        make_spec(
            algorithm,
            dataset,
            trial_seed=trial,
            hparams_seed=h,
            overrides={"batch_size": 64},
            steps=steps,
        )
        for trial in range(3)
        for h in range(4)
    ]
    trials = [make_spec(algorithm, dataset, trial_seed=trial, steps=steps) for trial in range(10)]
    return {"(a) 3 trials x 4 hparams": sweep, "(b) 10 trials": trials}


def _records(out: Path, spec: RunSpec) -> list[dict]:
    found = records.read_records(records.run_dir(out, spec.run_id) / records.RESULTS)
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in found]


def _train(specs: list[RunSpec], out: Path, jobs: int, vectorise: bool) -> tuple[float, float]:
    options = RuntimeOptions(output_dir=out, progress=False, threads=1)
    wall, cpu = time.perf_counter(), time.process_time()
    list(launchers.local(specs, options, jobs=jobs, vectorise=vectorise))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="erm", help="one that trains batched")
    parser.add_argument("--dataset", default="fish_toy")
    parser.add_argument("--jobs", type=int, default=1, help="local launcher processes")
    parser.add_argument("--steps", type=int, default=None, help="default: the dataset's")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(f"load average before: {os.getloadavg()}")
    workloads = _specs(args.algorithm, args.dataset, args.steps)
    options = RuntimeOptions(output_dir=".", progress=False)
    for spec in workloads["(b) 10 trials"]:
        runner.run_data(spec, options)  # build (and cache) each trial's data once
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports and first-call costs, both paths
        warm = [make_spec(args.algorithm, args.dataset, trial_seed=t, steps=3) for t in range(2)]
        for vectorise in (False, True):
            _train(warm, Path(tmp) / str(vectorise), args.jobs, vectorise)
    steps = workloads["(b) 10 trials"][0].steps
    print(
        f"\n{args.algorithm} on {args.dataset}, {steps} steps, --jobs {args.jobs}, "
        f"{args.rounds} rounds"
    )
    print(
        "| workload | one by one wall s | vectorised wall s | speed-up (wall) | CPU s (one / vec) "
        "| records identical |"
    )
    print("|---|---|---|---|---|---|")
    for name, specs in workloads.items():
        walls: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        same = True
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            with tempfile.TemporaryDirectory() as tmp:
                for vectorise in order:
                    wall, cpu = _train(specs, Path(tmp) / str(vectorise), args.jobs, vectorise)
                    walls[vectorise].append(wall)
                    cpus[vectorise].append(cpu)
                same &= all(
                    _records(Path(tmp) / "False", s) == _records(Path(tmp) / "True", s)
                    for s in specs
                )
        one, vec = statistics.median(walls[False]), statistics.median(walls[True])
        cpu = (  # this process's CPU time: the workers' is not in it
            f"{statistics.median(cpus[False]):.1f} / {statistics.median(cpus[True]):.1f}"
            if args.jobs == 1
            else "n/a (workers)"
        )
        print(f"| {name} | {one:.2f} | {vec:.2f} | {one / vec:.2f}x | {cpu} | {same} |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
