"""Effect of a ``--precision`` (bf16, fp32-onednn) on accuracy: the same runs in fp32 and in
it, side by side.

Usage: nice -n 10 python benchmarks/precision_accuracy.py [--precision bf16] [--algorithm erm]
    [--dataset fish_toy] [--seeds 0,1,2] [--steps N] [--threads 1] [--output-dir DIR]

Prints, per trial seed, the test environment's ``in`` accuracy (the reported metric)
and the mean ``out`` accuracy of the training environments (what train_val selects
on; their ``in`` accuracy when nothing is held out, as on ``cmnist_irm``) at the last step, for both precisions, then each precision's mean and standard
deviation over the seeds and whether the means differ by less than the trial spread.
Runs already done in ``--output-dir`` (default: a temporary directory) are read, not
trained again, e.g. the fp32 runs of a sweep linked into it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _timing import machine
from bench import runner
from bench.spec import PRECISIONS, RuntimeOptions, make_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16", choices=PRECISIONS[1:])
    parser.add_argument("--algorithm", default="erm")
    parser.add_argument("--dataset", default="fish_toy")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()
    print(machine())
    other = args.precision
    print(
        f"| {args.dataset} trial | fp32 test in | {other} test in | fp32 train envs | "
        f"{other} train envs | wall fp32 / {other} s |"
    )
    print("|---|---|---|---|---|---|")
    tests: dict[str, list[float]] = {"fp32": [], other: []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.output_dir or Path(scratch)
        for seed in map(int, args.seeds.split(",")):
            row = {}
            for precision in ("fp32", other):
                spec = make_spec(
                    args.algorithm,
                    args.dataset,
                    trial_seed=seed,
                    steps=args.steps,
                    precision=precision,
                )
                outcome = runner.run(
                    spec, RuntimeOptions(output_dir=tmp, progress=False, threads=args.threads)
                )
                ev = outcome.last_record["eval"]
                test = spec.test_envs[0]
                train = [e for e in ev if e not in spec.test_envs]
                split = "out" if any(ev[e]["out"]["n"] for e in train) else "in"  # no holdout
                train_acc = statistics.mean(ev[e][split]["acc"] for e in train)
                row[precision] = (ev[test]["in"]["acc"], train_acc, outcome.wall_s)
                tests[precision].append(100 * ev[test]["in"]["acc"])
            (a, b, wa), (c, d, wc) = row["fp32"], row[other]
            print(
                f"| {seed} | {100 * a:.1f} | {100 * c:.1f} | {100 * b:.1f} | "
                f"{100 * d:.1f} | {wa:.0f} / {wc:.0f} |"
            )
    (m32, s32), (mo, so) = ((statistics.mean(v), statistics.stdev(v)) for v in tests.values())
    gap = abs(m32 - mo)
    print(
        f"{args.algorithm} on {args.dataset}, test accuracy over {len(tests['fp32'])} trials: "
        f"fp32 {m32:.1f} ± {s32:.1f}, {other} {mo:.1f} ± {so:.1f}; difference of means "
        f"{gap:.2f} points, {'within' if gap <= max(s32, so) else 'OUTSIDE'} the trial spread"
    )


if __name__ == "__main__":
    main()
