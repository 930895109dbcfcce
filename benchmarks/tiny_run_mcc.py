"""A tiny run's wall time with Matthews' correlation from sklearn vs from the confusion counts.

Usage: nice -n 10 python benchmarks/tiny_run_mcc.py [--algorithm erm] [--dataset fish_toy]
    [--rounds 3] [--threads 1]

Trains the same run (trial 0, the dataset's steps) in fresh directories, alternating the two
``bench.evaluation.mcc`` implementations round by round: sklearn's ``matthews_corrcoef`` on
the counts (what the harness used before) and the counts-based formula it uses now. Prints
each side's median wall time, the ratio, and whether the two sides' records are identical
(every number but the wall times).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from _timing import machine
from bench import evaluation, records, runner
from bench.spec import RuntimeOptions, make_spec


def sklearn_mcc(confusion: list[list[int]]) -> float:
    """The harness's former implementation."""
    from sklearn.metrics import matthews_corrcoef

    true, pred, count = zip(*confusion)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(matthews_corrcoef(true, pred, sample_weight=count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="erm")
    parser.add_argument("--dataset", default="fish_toy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(machine())
    spec = make_spec(args.algorithm, args.dataset, trial_seed=0)
    sides = {"sklearn": sklearn_mcc, "counts": evaluation.mcc}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    kept: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
            for side in order:
                evaluation.mcc = sides[side]
                out = Path(tmp) / f"{side}-{round_}"
                options = RuntimeOptions(output_dir=out, threads=args.threads, progress=False)
                start = time.perf_counter()
                outcome = runner.run(spec, options)
                walls[side].append(time.perf_counter() - start)
                found = records.read_records(outcome.run_dir / records.RESULTS)
                for rec in found:
                    rec.pop("wall_s")
                kept[side] = found
    evaluation.mcc = sides["counts"]
    old, new = (statistics.median(walls[s]) for s in sides)
    print(
        f"{args.algorithm} on {args.dataset}, {spec.steps} steps, {len(spec.record_steps)} "
        f"records, {args.rounds} rounds, {args.threads} thread(s), median wall: "
        f"sklearn {old:.2f} s, counts {new:.2f} s, {old / new:.2f}x; records identical: "
        f"{kept['sklearn'] == kept['counts']}"
    )


if __name__ == "__main__":
    main()
