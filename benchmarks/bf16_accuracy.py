"""Effect of ``--precision bf16`` on accuracy: the same runs in fp32 and bf16, side by side.

Usage: nice -n 10 python benchmarks/bf16_accuracy.py [--algorithm erm] [--dataset fish_toy]
    [--seeds 0,1,2] [--steps N] [--threads 1] [--output-dir DIR]

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
from bench.spec import RuntimeOptions, make_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="erm")
    parser.add_argument("--dataset", default="fish_toy")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()
    print(machine())
    print(
        f"| {args.dataset} trial | fp32 test in | bf16 test in | fp32 train envs | "
        "bf16 train envs | wall fp32 / bf16 s |"
    )
    print("|---|---|---|---|---|---|")
    tests: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.output_dir or Path(scratch)
        for seed in map(int, args.seeds.split(",")):
            row = {}
            for precision in ("fp32", "bf16"):
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
            (a, b, wa), (c, d, wc) = row["fp32"], row["bf16"]
            print(
                f"| {seed} | {100 * a:.1f} | {100 * c:.1f} | {100 * b:.1f} | "
                f"{100 * d:.1f} | {wa:.0f} / {wc:.0f} |"
            )
    (m32, s32), (m16, s16) = ((statistics.mean(v), statistics.stdev(v)) for v in tests.values())
    gap = abs(m32 - m16)
    print(
        f"{args.algorithm} on {args.dataset}, test accuracy over {len(tests['fp32'])} trials: "
        f"fp32 {m32:.1f} ± {s32:.1f}, bf16 {m16:.1f} ± {s16:.1f}; difference of means "
        f"{gap:.2f} points, {'within' if gap <= max(s32, s16) else 'OUTSIDE'} the trial spread"
    )


if __name__ == "__main__":
    main()
