"""Recipes x tasks x trials through ``bench transfer``, then the transfer tables (target test and OOD splits).

Every run is an ordinary run (its exact ``python -m bench transfer --task ... --recipe ...``
command is stored in spec.json and printed); finished runs are skipped, partial ones resume.

    nice -n 10 python benchmarks/transfer_recipes.py --tasks bottleneck_to_b_only,bottleneck_to_a_only \\
        --recipes scratch,linear_probe --trials 3 --output-dir bench_output/transfer_bottleneck
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from bench import runner
from bench.errors import UserError
from bench.report import dataset_table
from bench.spec import RuntimeOptions, make_spec
from bench.transfer.leaderboard import (
    BASELINE_RECIPE,
    check_baseline,
    learning_curve_figure,
    transfer_report,
    variant_label,
)
from bench.transfer.tasks import task_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", required=True, help="comma-separated transfer tasks")
    p.add_argument("--recipes", required=True, help="comma-separated recipes")
    p.add_argument(
        "--shots",
        default="all",
        help="comma-separated target examples per class, 'all' = every example",
    )
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--hparams", default="{}", help="JSON overrides for every run")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--baseline",
        default=BASELINE_RECIPE,
        help="recipe every row is tested against (default: %(default)s)",
    )
    p.add_argument(
        "--curve",
        type=Path,
        default=None,
        help="write the learning-curve figure (first task, target_test) here",
    )
    args = p.parse_args()
    _or_exit(check_baseline, args.baseline)
    overrides = json.loads(args.hparams)
    shots = [None if s == "all" else int(s) for s in args.shots.split(",")]

    t0 = time.perf_counter()
    for task in args.tasks.split(","):
        for k in shots:
            for trial in range(args.trials):
                for recipe in args.recipes.split(","):
                    argv = [
                        "python",
                        "-m",
                        "bench",
                        "transfer",
                        "--task",
                        task,
                        "--recipe",
                        recipe,
                        "--trial-seed",
                        str(trial),
                        "--output-dir",
                        str(args.output_dir),
                        "--threads",
                        str(args.threads),
                        "--no-progress",
                    ]
                    argv += (["--shots", str(k)] if k else []) + (
                        ["--hparams", json.dumps(overrides, sort_keys=True)] if overrides else []
                    )
                    argv += (["--steps", str(args.steps)] if args.steps else []) + (
                        ["--eval-every", str(args.eval_every)] if args.eval_every else []
                    )
                    try:
                        spec = make_spec(
                            recipe,
                            task_dataset(task, k),
                            trial_seed=trial,
                            overrides=overrides,
                            steps=args.steps,
                            eval_every=args.eval_every,
                        )
                    except UserError as exc:
                        raise SystemExit(f"error: {exc}") from None
                    options = RuntimeOptions(
                        output_dir=args.output_dir,
                        data_dir=args.data_dir,
                        progress=False,
                        threads=args.threads,
                        command=shlex.join(argv),
                    )
                    out = runner.run(spec, options)
                    accs = (
                        {
                            e: round(v["in"]["acc"], 4)
                            for e, v in out.last_record["eval"].items()
                            if v["in"]["acc"] is not None
                        }
                        if out.last_record
                        else None
                    )
                    print(
                        f"{out.status:8s} {time.perf_counter() - t0:7.1f}s {accs}  "
                        f"{shlex.join(argv)}",
                        flush=True,
                    )
    print(f"total wall time: {time.perf_counter() - t0:.1f}s")

    report, _ = _or_exit(transfer_report, args.output_dir, ["last", "train_val"], args.baseline)
    for dataset in report.datasets:
        for rule in ("last", "train_val"):
            table = dataset_table(report, dataset, rule)
            print(f"\n### {table.title}\n\n{table.render('markdown')}\n\n" + "\n".join(table.notes))
    if args.curve:
        task = args.tasks.split(",")[0]
        labels = [
            variant_label({"algorithm": recipe, "overrides": overrides})
            for recipe in args.recipes.split(",")
        ]
        curves = learning_curve_figure(
            report.selected["last"],
            task,
            "target_test",
            args.curve,
            f"{task}: target accuracy vs target size",
            labels,
        )
        print(f"\nfigure: {args.curve}\n{json.dumps(curves)}")


def _or_exit(function, *args):
    """``function(*args)``; a UserError is one line on stderr and exit status 2, as in the CLI."""
    try:
        return function(*args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
