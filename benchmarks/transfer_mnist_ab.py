"""MNIST A/B layer transfer (Yosinski et al. 2014) end to end: runs, selection, table, figure.

Task A = digits 0-4 (source), task B = digits 5-9 (target), a 4-block MLP (784-128-128-128-128).
Per trial: base B (``scratch``) and, for n = 1..4, AnB / BnB (``frozen_first_n`` pretrained on
A / on B's own training split) and AnB+ / BnB+ (``reinit_above_n``). Every run is an ordinary
``bench transfer`` (the exact command is stored in its spec.json and printed here); re-running
skips finished runs and resumes partial ones.

    nice -n 10 python benchmarks/transfer_mnist_ab.py --trials 3 --output-dir bench_output/transfer_mnist_ab
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from bench import runner
from bench.report import dataset_table
from bench.spec import RuntimeOptions, make_spec
from bench.transfer.leaderboard import diagnostics_figure, layer_transfer_figure, transfer_report

L = 4  # blocks of the mnist_ab MLP


def grid(trials: int) -> list[tuple[str, dict]]:
    runs = [("scratch", {})]
    for n in range(1, L + 1):
        for recipe in ("frozen_first_n", "reinit_above_n"):
            for data in ("source", "target"):
                runs.append((recipe, {"n": n, "pretrain_data": data}))
    return [(recipe, hp, trial) for trial in range(trials) for recipe, hp in runs]


def command(recipe: str, hp: dict, trial: int, args: argparse.Namespace) -> str:
    argv = [
        "python",
        "-m",
        "bench",
        "transfer",
        "--task",
        "mnist_ab",
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
    if hp:
        argv += ["--hparams", json.dumps(hp, sort_keys=True)]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    if args.size != "full":
        argv += ["--size", args.size]
    return shlex.join(argv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="default: the task's (600)")
    p.add_argument("--size", default="full", choices=("full", "tiny"))
    p.add_argument("--output-dir", type=Path, default=Path("bench_output/transfer_mnist_ab"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figure", type=Path, default=Path("leaderboard/transfer_mnist_ab.png"))
    args = p.parse_args()

    t0 = time.perf_counter()
    ids = set()
    for recipe, hp, trial in grid(args.trials):
        spec = make_spec(
            recipe, "mnist_ab", trial_seed=trial, overrides=hp, steps=args.steps, size=args.size
        )
        cmd = command(recipe, hp, trial, args)
        options = RuntimeOptions(
            output_dir=args.output_dir,
            data_dir=args.data_dir,
            progress=False,
            threads=args.threads,
            command=cmd,
        )
        out = runner.run(spec, options)
        ids.add(spec.run_id)
        acc = out.last_record["eval"]["target_test"]["in"]["acc"] if out.last_record else None
        print(f"{out.status:8s} {time.perf_counter() - t0:7.1f}s  acc={acc}  {cmd}", flush=True)
    print(f"total wall time: {time.perf_counter() - t0:.1f}s")

    report, runs = transfer_report(args.output_dir, ["last", "train_val"])
    label = report.labels[
        next(iter(ids))
    ]  # other experiments may share the output directory (and its cache)
    runs = [r for r in runs if r.run_id in ids]
    for rule in ("last", "train_val"):
        table = dataset_table(report, label, rule)
        print(f"\n### {table.title}\n\n{table.render('markdown')}\n\n" + "\n".join(table.notes))
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    selected = [s for s in report.selected["last"] if s.run_id in ids]
    values = layer_transfer_figure(
        selected, runs, "target_test", args.figure, "MNIST A (0-4) -> B (5-9), 4-block MLP"
    )
    print(f"\nfigure: {args.figure}")
    print(json.dumps({k: {str(n): v for n, v in s.items()} for k, s in values.items()}))
    fine_tuned = [
        r for r in runs if r.spec["algorithm"].startswith(("reinit_above_n[n=4", "scratch"))
    ]
    diag_path = args.figure.with_name(args.figure.stem + "_diagnostics.png")
    diag = diagnostics_figure(
        fine_tuned, diag_path, "per-block change during adaptation (last evaluation)"
    )
    print(f"\nfigure: {diag_path}\n{json.dumps(diag)}")


if __name__ == "__main__":
    main()
