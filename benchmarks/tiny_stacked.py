"""Tiny-model workload: T trials of ERM on a causal toy, one after another vs stacked (bench.stacked).

Usage: nice -n 10 python benchmarks/tiny_stacked.py [--dataset fish_toy] [--trials 10] [--steps 1001] [--threads 1]

Both sides go through the harness end to end (run directories, records, checkpoints,
evaluations every ``EVAL_EVERY`` steps): ``runner.run`` per trial, then
``stacked.run_stacked`` on all trials at once, in fresh output directories. The
datasets are built once beforehand, as a sweep worker reuses them. Prints wall and CPU
seconds of each side, the speed-up, and whether every run's records agree.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _timing import machine
from bench import records, runner, stacked
from bench.spec import RuntimeOptions, make_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fish_toy")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="default: the dataset's")
    parser.add_argument("--threads", type=int, default=1, help="tiny models gain nothing from more")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    specs = [
        make_spec("erm", args.dataset, trial_seed=seed, steps=args.steps)
        for seed in range(args.trials)
    ]
    for spec in specs:
        runner.load_dataset(spec.dataset, None, spec.data_seed, spec.size)
    with tempfile.TemporaryDirectory() as tmp:
        timings = {}
        outcomes = {}
        for name, fn in (
            ("sequential", lambda o: [runner.run(s, o) for s in specs]),
            ("stacked", lambda o: stacked.run_stacked(specs, o)),
        ):
            options = RuntimeOptions(
                output_dir=Path(tmp) / name, progress=False, threads=args.threads
            )
            wall, cpu = time.perf_counter(), time.process_time()
            outcomes[name] = fn(options)
            timings[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        agree = all(_same(a, b) for a, b in zip(outcomes["sequential"], outcomes["stacked"]))
    steps = specs[0].steps
    print(
        f"\n{args.trials} trials of ERM on {args.dataset}, {steps} steps each, evaluation "
        f"every {specs[0].eval_every}"
    )
    print("| mode | wall s | CPU s | ms/step per trial (wall) |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in timings.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {1000 * wall / steps / args.trials:.2f} |")
    (sw, sc), (tw, tc) = timings["sequential"], timings["stacked"]
    print(
        f"speed-up: {sw / tw:.1f}x wall, {sc / tc:.1f}x CPU; every run's records agree "
        f"with its sequential twin: {agree}"
    )


def _same(a: runner.RunOutcome, b: runner.RunOutcome, tol: float = 1e-4) -> bool:
    ra, rb = (
        records.read_records(a.run_dir / records.RESULTS),
        records.read_records(b.run_dir / records.RESULTS),
    )
    if [r["step"] for r in ra] != [r["step"] for r in rb]:
        return False
    for x, y in zip(ra, rb):
        if x["eval"] != y["eval"] or any(
            abs(x["train"][k] - y["train"][k]) > tol * max(1.0, abs(x["train"][k]))
            for k in x["train"]
        ):
            return False
    return True


if __name__ == "__main__":
    main()
