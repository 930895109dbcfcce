"""The IRM paper's Colored MNIST, side by side: the IRM authors' code vs bench's ``cmnist_irm``.

Usage:
  git clone https://github.com/facebookresearch/InvariantRiskMinimization /path/to/irm
  nice -n 10 python benchmarks/irm_side_by_side.py --irm-repo /path/to/irm [--steps 21]
      [--rounds 2] [--threads 2] [--methods irm,erm]

The reference is never vendored: the script runs the checkout's
``code/colored_mnist/main.py`` unchanged in a subprocess (its ``.cuda()`` calls made no-ops,
its ``~/datasets/mnist`` pointed at a torchvision-format copy of ``mnist.npz`` written to a
temporary HOME), and bench's ``python -m bench run`` in another, at the same flags
(``reproduce_paper_results.sh``), alternating per round so machine load hits both alike.

Both sides are timed the same way: the wall-clock between consecutive ``Adam.step`` calls
(one training iteration, including whatever else the loop does; the reference also
evaluates its test environment every step, bench every ``eval_every``), median over the
run. The fp32 bound (sgemm) and bench's FLOP per step are measured in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from _side_by_side import bench_step_flops, timed_child, write_torchvision_mnist
from _timing import machine, peak_flops
from bench.datasets.files import MNIST_CANDIDATES, find_data

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
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    main_py = args.irm_repo / "code" / "colored_mnist" / "main.py"
    if not main_py.is_file():
        sys.exit(f"error: {main_py} not found; clone the IRM repository (see --help)")
    torch.set_num_threads(args.threads)
    print(machine())
    bound = peak_flops()["sgemm 1024^3"]
    print(f"fp32 bound (sgemm 1024^3, {args.threads} threads): {bound / 1e9:.0f} GFLOP/s")
    npz = find_data(args.data_dir, MNIST_CANDIDATES[:1], "mnist.npz", "")
    repo_root = Path(__file__).resolve().parents[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_torchvision_mnist(npz, tmp / "home" / "datasets" / "mnist")
        env = {**os.environ, "HOME": str(tmp / "home"), "OMP_NUM_THREADS": str(args.threads)}
        times: dict[tuple[str, str], list[list[float]]] = {}
        for _ in range(args.rounds):
            for method in args.methods.split(","):
                flags, (algorithm, dataset) = REFERENCE_FLAGS[method]
                reference = {
                    "threads": args.threads,
                    "cuda_noop": True,
                    "argv": ["main.py", *flags, "--n_restarts=1", f"--steps={args.steps}"],
                    "path": str(main_py),
                }
                out = tmp / f"runs-{method}-{len(times)}"
                ours = {
                    "threads": args.threads,
                    "argv": ["bench", "run", "--algorithm", algorithm, "--dataset", dataset]
                    + ["--steps", str(args.steps), "--output-dir", str(out), "--no-progress"]
                    + ["--data-dir", str(npz.parent)],
                    "module": "bench",
                }
                for side, config in (("IRM code", reference), ("bench", ours)):
                    timing = timed_child(config, env, repo_root)
                    times.setdefault((method, side), []).extend(timing.gaps())
        for method in args.methods.split(","):
            _, (algorithm, dataset) = REFERENCE_FLAGS[method]
            step_flops = bench_step_flops(algorithm, dataset, tmp, args.data_dir)
            ref = [statistics.median(gap[i] for gap in times[(method, "IRM code")]) for i in (0, 1)]
            ours = [statistics.median(gap[i] for gap in times[(method, "bench")]) for i in (0, 1)]
            rows.append((method, ref, ours, step_flops))
    print(f"\n{args.rounds} rounds x {args.steps} steps per side, {args.threads} threads")
    print(
        "| method | IRM code s/step (wall, CPU) | bench s/step (wall, CPU) | speed-up (wall, CPU) | "
        "bench GFLOP/step | bench % of fp32 bound (wall) | 501 steps, IRM code / bench (wall) |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, (ref, ref_cpu), (ours, ours_cpu), step_flops in rows:
        print(
            f"| {method} | {ref:.3f}, {ref_cpu:.3f} | {ours:.3f}, {ours_cpu:.3f} | "
            f"{ref / ours:.2f}x, {ref_cpu / ours_cpu:.2f}x | {step_flops / 1e9:.1f} | "
            f"{100 * step_flops / ours / bound:.0f}% | "
            f"{FULL_STEPS * ref / 60:.1f} / {FULL_STEPS * ours / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
