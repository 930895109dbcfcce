"""DomainBed-protocol Colored MNIST ERM through the harness's own run path: speed and compute bound.

Usage: nice -n 10 python benchmarks/cmnist_domainbed.py [--steps 10] [--rounds 2] [--eval-images 4096]
       [--variants fp32,fp32-cl,bf16-cl] [--threads N] [--data-dir DIR]

For each variant (precision x memory format) it prepares the run exactly as
``bench run --dataset cmnist`` does (``runner.prepare``: in-memory tensors, index
sampling, the MNIST CNN, batch 64 per training environment) and measures, interleaved
over rounds so machine load hits every variant alike:
- seconds per training step (wall and CPU), achieved FLOP/s, and that as a fraction of
  the machine's measured compute bound (sgemm / conv microbenchmark, same process);
- evaluation throughput on ``--eval-images`` images, projected to all 70,000 images and
  to the splits the default ``eval_splits="needed"`` evaluates;
- the projected full run: 5001 steps + 51 evaluations (not run: it would take an hour).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from _timing import clock, flops, machine, peak_flops
from bench import runner
from bench.evaluation import accuracy
from bench.spec import RuntimeOptions, make_spec

VARIANTS = {
    "fp32": (None, False),
    "fp32-cl": (None, True),
    "bf16": ("bf16", False),
    "bf16-cl": ("bf16", True),
}
FULL_STEPS, N_EVALS, ALL_IMAGES = 5001, 51, 70000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=10, help="timed training steps per variant per round"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=4096)
    parser.add_argument("--eval-batch", type=int, default=128)
    parser.add_argument("--variants", default="fp32,fp32-cl,bf16-cl")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads or runner.cpu_threads())
    print(machine())
    peaks = peak_flops()
    for name, value in peaks.items():
        print(f"  measured {name}: {value / 1e9:.1f} GFLOP/s")
    peak = max(v for k, v in peaks.items() if "per CPU" not in k)
    peak_cpu = max(v for k, v in peaks.items() if "per CPU" in k)

    names = args.variants.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        contexts = {}
        for name in names:
            precision, channels_last = VARIANTS[name]
            spec = make_spec("erm", "cmnist", trial_seed=0, precision=precision)
            options = RuntimeOptions(
                output_dir=Path(tmp) / name,
                data_dir=args.data_dir,
                progress=False,
                threads=args.threads,
                channels_last=channels_last,
                eval_batch_size=args.eval_batch,
            )
            contexts[name] = runner.prepare(spec, options, Path(tmp) / name)
        ctx0 = contexts[names[0]]
        needed = sum(
            len(idx)
            for env, parts in ctx0.splits.items()
            for part, idx in parts.items()
            if (env, part) not in ctx0.skip
        )
        step_flops = flops(lambda: _steps(contexts[names[0]], 1))
        probe = ctx0.splits[ctx0.spec.test_envs[0]]["in"][: args.eval_images]
        image_flops = flops(lambda: _eval(ctx0, probe[:64], 64)) / 64

        step_times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        eval_times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for _ in range(args.rounds):
            for name in names:
                ctx = contexts[name]
                step_times[name].append(clock(lambda: _steps(ctx, args.steps), repeat=1))
                eval_times[name].append(clock(lambda: _eval(ctx, probe, args.eval_batch), repeat=1))

    print(
        f"\ntraining step: {step_flops / 1e9:.1f} GFLOP (batch 2x64); evaluation: "
        f"{image_flops / 1e6:.0f} MFLOP/image; "
        f"'needed' splits = {needed} of {ALL_IMAGES} images"
    )
    print(
        "| variant | s/step | CPU-s/step | GFLOP/s | % of bound (wall / CPU) | s/eval "
        "all 70k | s/eval needed | projected full run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        wall = statistics.median(w for w, _ in step_times[name]) / args.steps
        cpu = statistics.median(c for _, c in step_times[name]) / args.steps
        per_image = statistics.median(w for w, _ in eval_times[name]) / len(probe)
        rate = step_flops / wall
        run_s = FULL_STEPS * wall + N_EVALS * needed * per_image
        all_s = FULL_STEPS * wall + N_EVALS * ALL_IMAGES * per_image
        print(
            f"| {name} | {wall:.3f} | {cpu:.3f} | {rate / 1e9:.0f} | "
            f"{100 * rate / peak:.0f}% / {100 * step_flops / cpu / peak_cpu:.0f}% "
            f"| {ALL_IMAGES * per_image:.0f} | {needed * per_image:.0f} | "
            f"{run_s / 60:.0f} min ({all_s / 60:.0f} min evaluating all) |"
        )


def _steps(ctx: runner.RunContext, n: int) -> None:
    step = int(ctx.algorithm.step)
    for i in range(n):
        batches = ctx.minibatches(step + i)
        with runner.precision_context(ctx.device, ctx.spec.precision):
            ctx.algorithm.update(batches)


def _eval(ctx: runner.RunContext, idx: torch.Tensor, batch: int) -> None:
    env = ctx.envs[ctx.spec.test_envs[0]]
    ctx.algorithm.eval()
    with torch.inference_mode(), runner.precision_context(ctx.device, ctx.spec.precision):
        accuracy(ctx.algorithm, env, idx, batch)
    ctx.algorithm.train()


if __name__ == "__main__":
    main()
