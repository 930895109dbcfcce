"""The IRM paper's Colored MNIST, side by side: the IRM authors' code vs bench's ``cmnist_irm``.

Usage:
  git clone https://github.com/facebookresearch/InvariantRiskMinimization /path/to/irm
  nice -n 10 python benchmarks/irm_side_by_side.py --irm-repo /path/to/irm [--steps 21]
      [--rounds 2] [--threads 2] [--methods irm,erm] [--precisions fp32,fp32-onednn,bf16]

The reference is never vendored: the script runs the checkout's
``code/colored_mnist/main.py`` unchanged in a subprocess (its ``.cuda()`` calls made no-ops,
its ``~/datasets/mnist`` pointed at a torchvision-format copy of ``mnist.npz`` written to a
temporary HOME), and bench's ``python -m bench run`` in another per precision, at the same
flags (``reproduce_paper_results.sh``), the order reversed every other round so machine
load hits every side alike.

Every side is timed the same way: the wall-clock between consecutive ``Adam.step`` calls
(one training iteration, including whatever else the loop does; the reference evaluates
its test environment inside every step), median over the run; bench's gaps that hold one of
its periodic evaluations are left out. The matmul bounds (fp32, and bf16 when asked) and
bench's FLOP per step are measured in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from _side_by_side import bench_step_flops, medians, timed_child, write_torchvision_mnist
from _timing import machine, peak_flops
from bench.datasets.files import MNIST_CANDIDATES, find_data
from bench.spec import PRECISIONS

FULL_STEPS = 501

# reproduce_paper_results.sh: the flags of each reference run and bench's matching dataset
REFERENCE_FLAGS = {
    "irm": (
        [
            "--hidden_dim=390",
            "--l2_regularizer_weight=0.00110794568",
            "--lr=0.0004898536566546834",
            "--penalty_anneal_iters=190",
            "--penalty_weight=91257.18613115903",
        ],
        ("irm", "cmnist_irm"),
    ),
    "erm": (
        [
            "--hidden_dim=256",
            "--l2_regularizer_weight=0.001",
            "--lr=0.001",
            "--penalty_anneal_iters=0",
            "--penalty_weight=0.0",
        ],
        ("erm", "cmnist_irm"),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irm-repo", type=Path, required=True, help="a checkout of the IRM code")
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="irm,erm")
    parser.add_argument("--precisions", default="fp32,fp32-onednn,bf16", help="bench's sides")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    main_py = args.irm_repo / "code" / "colored_mnist" / "main.py"
    if not main_py.is_file():
        sys.exit(f"error: {main_py} not found; clone the IRM repository (see --help)")
    precisions = args.precisions.split(",")
    if not set(precisions) <= set(PRECISIONS):
        sys.exit(
            f"error: --precisions takes some of {', '.join(PRECISIONS)}, not {args.precisions!r}"
        )
    torch.set_num_threads(args.threads)
    print(machine())
    peaks = peak_flops(bf16="bf16" in precisions)
    # fp32's bound is the faster fp32 matmul (MKL's or oneDNN's): one bound for both fp32 sides
    fp32 = max(peaks["sgemm 1024^3"], peaks["oneDNN fp32 matmul 1024^3"])
    bounds = {"fp32": fp32, "fp32-onednn": fp32, "bf16": peaks.get("bf16 matmul 1024^3", 0.0)}
    print(
        f"bounds ({args.threads} threads), 1024^3 matmul GFLOP/s: "
        + ", ".join(
            f"{k} {peaks[k] / 1e9:.0f}"
            for k in ("sgemm 1024^3", "oneDNN fp32 matmul 1024^3", "bf16 matmul 1024^3")
            if k in peaks
        )
    )
    npz = find_data(args.data_dir, MNIST_CANDIDATES[:1], "mnist.npz", "")
    repo_root = Path(__file__).resolve().parents[1]
    sides = ["IRM code", *(f"bench {p}" for p in precisions)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_torchvision_mnist(npz, tmp / "home" / "datasets" / "mnist")
        env = {**os.environ, "HOME": str(tmp / "home"), "OMP_NUM_THREADS": str(args.threads)}
        times: dict[tuple[str, str], list[list[float]]] = {}
        for round_ in range(args.rounds):
            for method in args.methods.split(","):
                flags, (algorithm, dataset) = REFERENCE_FLAGS[method]
                configs = {
                    "IRM code": {
                        "threads": args.threads,
                        "cuda_noop": True,
                        "argv": ["main.py", *flags, "--n_restarts=1", f"--steps={args.steps}"],
                        "path": str(main_py),
                    }
                }
                for p in precisions:
                    out = tmp / f"runs-{method}-{p}-{round_}"
                    configs[f"bench {p}"] = {
                        "threads": args.threads,
                        "argv": ["bench", "run", "--algorithm", algorithm, "--dataset", dataset]
                        + ["--steps", str(args.steps), "--output-dir", str(out), "--no-progress"]
                        + ["--data-dir", str(npz.parent), "--precision", p],
                        "module": "bench",
                        "evaluations": ["bench.runner:evaluate"],
                    }
                order = sides if round_ % 2 == 0 else sides[::-1]
                for side in order:
                    timing = timed_child(configs[side], env, repo_root)
                    times.setdefault((method, side), []).extend(timing.step_gaps())
        for method in args.methods.split(","):
            _, (algorithm, dataset) = REFERENCE_FLAGS[method]
            step_flops = bench_step_flops(algorithm, dataset, tmp, args.data_dir)
            rows.append(
                (method, {side: medians(times[(method, side)]) for side in sides}, step_flops)
            )
    print(f"\n{args.rounds} rounds x {args.steps} steps per side, {args.threads} threads")
    print(
        "| method | side | s/step (wall, CPU) | IRM code / side (wall, CPU) | bench GFLOP/step | "
        "% of its bound (wall) | 501 steps (wall) |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, by_side, step_flops in rows:
        ref, ref_cpu = by_side["IRM code"]
        for side, (wall, cpu) in by_side.items():
            bound = bounds.get(side.removeprefix("bench "))
            share = f"{100 * step_flops / wall / bound:.0f}%" if bound else "-"
            gflop = f"{step_flops / 1e9:.1f}" if bound else "-"  # the reference's is not counted
            print(
                f"| {method} | {side} | {wall:.3f}, {cpu:.3f} | {ref / wall:.2f}x, "
                f"{ref_cpu / cpu:.2f}x | {gflop} | {share} | "
                f"{FULL_STEPS * wall / 60:.1f} min |"
            )


if __name__ == "__main__":
    main()
