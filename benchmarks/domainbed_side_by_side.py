"""DomainBed's ColoredMNIST ERM, side by side: DomainBed's own code vs bench's ``cmnist``.

Usage:
  git clone https://github.com/facebookresearch/DomainBed /path/to/DomainBed
  nice -n 10 python benchmarks/domainbed_side_by_side.py --domainbed-repo /path/to/DomainBed
      [--steps 21] [--checkpoint-freq 10] [--rounds 2] [--threads 2]
      [--variants fp32,fp32-onednn,bf16]
      [--eval-splits needed|all] [--data-dir DIR]

The reference is never vendored: the script runs the checkout's
``python -m domainbed.scripts.train --dataset ColoredMNIST --algorithm ERM --test_envs 2
--steps N --checkpoint_freq K`` unchanged in a subprocess (working directory: the checkout;
``--data_dir``: a torchvision-format copy of ``mnist.npz`` in a temporary directory), and
``python -m bench run --algorithm erm --dataset cmnist --test-envs=-90%`` (DomainBed's env 2)
at the same steps and ``--eval-every K`` in each ``--precision`` asked (fp32, fp32-onednn,
bf16), in that order on even rounds and reversed on odd ones, so machine load hits every side alike.
DomainBed imports ``wilds`` (datasets.py) and ``timm`` (networks.py) at the top of modules
ColoredMNIST ERM needs but never calls them; where they are not installed the timing child
stands in for the names imported (each raises if called). Nothing else is changed: its
data-loader workers (8 per loader) and evaluation of every split at batch 64 are its own.

Every side is timed the same way, from outside the program: s/step is the median gap between
consecutive ``torch.optim.Adam.step`` calls that holds no evaluation (wall and the main
process's CPU); s/eval is the median over checkpoints of the time inside the evaluation
functions (DomainBed's ``misc.accuracy``, called once per split; bench's ``evaluate``), with
the images each evaluated. The projected full run is DomainBed's ColoredMNIST protocol
(``datasets.py``: ColoredMNIST keeps MultipleDomainDataset's N_STEPS 5001 and
CHECKPOINT_FREQ 100, so 51 evaluations): 5001 x s/step + 51 x s/eval; the rest of a
checkpoint (records, bench's checkpoint file) is in neither figure. The fp32 and bf16 bounds
(the best of the 1024^3 matmuls (MKL's and oneDNN's for fp32) and the CNN's largest
convolution, in that precision) and
bench's FLOP per step are measured in this process; a second table gives each whole
subprocess's wall and CPU, data-loader workers included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from _side_by_side import Timing, bench_step_flops, medians, timed_child, write_torchvision_mnist
from _timing import machine, peak_flops
from bench.datasets.files import MNIST_CANDIDATES, find_data

FULL_STEPS, FULL_EVALS = 5001, 51  # DomainBed's ColoredMNIST: checkpoints at 0, 100, ..., 5000
REFERENCE = "DomainBed"
# the bound of each precision: the best of its square matmuls and the CNN's largest convolution
FP32_KERNELS = ("sgemm 1024^3", "oneDNN fp32 matmul 1024^3", "conv 128->128 3x3 @14x14, batch 128")
BOUND_KERNELS = {
    "fp32": FP32_KERNELS,
    "fp32-onednn": FP32_KERNELS,
    "bf16": ("bf16 matmul 1024^3", "bf16 conv 128->128 3x3 @14x14, batch 128"),
}
# imported by DomainBed's modules, unused by ColoredMNIST ERM: stood in for when missing
STUBS = {
    "wilds.datasets.camelyon17_dataset": ["Camelyon17Dataset"],
    "wilds.datasets.fmow_dataset": ["FMoWDataset"],
    "timm": ["create_model"],
}


def sides(args: argparse.Namespace, data: Path, npz: Path, out: Path) -> dict[str, dict]:
    """Each side's timing-child config, DomainBed first."""
    steps = ["--steps", str(args.steps)]
    configs = {
        REFERENCE: {
            "threads": args.threads,
            "argv": ["train.py", "--dataset", "ColoredMNIST", "--algorithm", "ERM"]
            + ["--test_envs", "2", *steps, "--checkpoint_freq", str(args.checkpoint_freq)]
            + ["--data_dir", str(data), "--output_dir", str(out / "domainbed")],
            "module": "domainbed.scripts.train",
            "stubs": STUBS,
            "evaluations": ["domainbed.lib.misc:accuracy"],
        }
    }
    for variant in args.variants.split(","):
        configs[f"bench {variant}"] = {
            "threads": args.threads,
            "argv": ["bench", "run", "--algorithm", "erm", "--dataset", "cmnist"]
            + ["--test-envs=-90%", *steps, "--eval-every", str(args.checkpoint_freq)]
            + ["--output-dir", str(out / variant), "--no-progress", "--data-dir", str(npz.parent)]
            + ["--threads", str(args.threads), "--eval-splits", args.eval_splits]
            + ["--precision", variant],
            "module": "bench",
            "evaluations": ["bench.runner:evaluate"],
        }
    return configs


def summary(timings: list[Timing]) -> dict[str, float]:
    """s/step, s/eval (wall, CPU), images per evaluation and the projected full run (wall)."""
    step, step_cpu = medians([gap for t in timings for gap in t.step_gaps()])
    checkpoints = [row for t in timings for row in t.checkpoints()]
    evaluation, eval_cpu = medians(checkpoints)
    return {
        "step": step,
        "step_cpu": step_cpu,
        "eval": evaluation,
        "eval_cpu": eval_cpu,
        "images": statistics.median(row[2] for row in checkpoints),
        "full": FULL_STEPS * step + FULL_EVALS * evaluation,
        "wall": statistics.median(t.wall for t in timings),
        "cpu_all": statistics.median(t.cpu_all for t in timings),
        "cpu_main": statistics.median(t.cpu_main for t in timings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--domainbed-repo", type=Path, required=True, help="a checkout of DomainBed"
    )
    parser.add_argument("--steps", type=int, default=21, help="training steps per run")
    parser.add_argument(
        "--checkpoint-freq", type=int, default=10, help="evaluate every K steps, both sides"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="fp32,fp32-onednn,bf16", help="bench's precisions")
    parser.add_argument(
        "--eval-splits",
        choices=("needed", "all"),
        default="needed",
        help="bench's splits evaluated (DomainBed evaluates all)",
    )
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    train_py = args.domainbed_repo / "domainbed" / "scripts" / "train.py"
    if not train_py.is_file():
        parser.error(f"{train_py} not found; clone DomainBed (see the usage in --help)")
    if not set(args.variants.split(",")) <= set(BOUND_KERNELS):
        parser.error(f"--variants takes a comma-separated subset of {','.join(BOUND_KERNELS)}")
    if args.steps < 3 or args.checkpoint_freq < 2:
        parser.error(
            "--steps must be at least 3 and --checkpoint-freq at least 2 (s/step is "
            "timed on the steps without an evaluation)"
        )
    torch.set_num_threads(args.threads)
    print(machine())
    peaks = peak_flops(bf16=True)
    bounds = {}
    for precision, kernels in BOUND_KERNELS.items():
        bounds[precision] = max(peaks[k] for k in kernels)
        if precision != "fp32-onednn":  # fp32's bound, printed once
            measured = ", ".join(f"{k} {peaks[k] / 1e9:.0f}" for k in kernels)
            print(f"{precision} bound, {args.threads} threads, GFLOP/s: {measured}")
    npz = find_data(args.data_dir, MNIST_CANDIDATES[:1], "mnist.npz", "")
    repo_root = Path(__file__).resolve().parents[1]
    timings: dict[str, list[Timing]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_torchvision_mnist(npz, tmp / "data")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for round_ in range(args.rounds):
            configs = sides(args, tmp / "data", npz, tmp / f"round{round_}")
            order = list(configs) if round_ % 2 == 0 else list(configs)[::-1]
            for side in order:
                cwd = args.domainbed_repo if side == REFERENCE else repo_root
                timings.setdefault(side, []).append(timed_child(configs[side], env, cwd))
        step_flops = bench_step_flops("erm", "cmnist", tmp, args.data_dir)
    report(args, {side: summary(t) for side, t in timings.items()}, bounds, step_flops)


def report(
    args: argparse.Namespace,
    rows: dict[str, dict[str, float]],
    bounds: dict[str, float],
    step_flops: int,
) -> None:
    ref = rows[REFERENCE]
    print(
        f"\n{args.rounds} rounds x {args.steps} steps per side, evaluating every "
        f"{args.checkpoint_freq} steps, {args.threads} threads; bench "
        f"{step_flops / 1e9:.1f} GFLOP/step; projected: {FULL_STEPS} steps + {FULL_EVALS} evals"
    )
    print(
        "| side | s/step (wall, CPU) | s/eval (wall, CPU) | images/eval | projected full run | "
        "DomainBed / side (full run, step, eval) | % of bound (step, wall) |"
    )
    print("|---|---|---|---|---|---|---|")
    for side, r in rows.items():
        precision = side.split()[-1]
        bound = (
            f"{100 * step_flops / r['step'] / bounds[precision]:.0f}% of {precision}"
            if side != REFERENCE
            else "-"
        )
        print(
            f"| {side} | {r['step']:.3f}, {r['step_cpu']:.3f} | {r['eval']:.1f}, "
            f"{r['eval_cpu']:.1f} | {r['images']:.0f} | {r['full'] / 60:.1f} min | "
            f"{ref['full'] / r['full']:.2f}x, {ref['step'] / r['step']:.2f}x, "
            f"{ref['eval'] / r['eval']:.2f}x | {bound} |"
        )
    print("\nwhole subprocess (start-up, data, training, evaluations), median over rounds:")
    print("| side | wall s | CPU s, all processes | CPU s, main process |")
    print("|---|---|---|---|")
    for side, r in rows.items():
        print(f"| {side} | {r['wall']:.1f} | {r['cpu_all']:.1f} | {r['cpu_main']:.1f} |")


if __name__ == "__main__":
    main()
