"""The hparam search behind ``spurious_toy``'s declared settings (``SEARCHED_HPARAMS`` in bench/datasets/spurious_toy.py).

Usage: PYTHONPATH=. nice -n 10 python benchmarks/spurious_toy_search.py [--trials 3] [--jobs 2] [--output-dir /tmp/spurious_toy_search]

For IRM, V-REx and Fishr, every grid point is a sweep of the harness (``--hparams`` overrides,
3 trials, the dataset's steps and holdout), scored on the TRAINING environments' held-out
(``out``) splits only. Per run the ``train_val`` rule picks the checkpoint with the best mean
``out`` accuracy over the two training environments; per grid point, over trials:

- ``val``: the mean of that validation accuracy;
- ``gap``: the mean of |out accuracy of train_0.1 - out accuracy of train_0.2| at that checkpoint.

Choice (constrained training-domain validation): among the grid points with ``gap`` <= 2
points, the highest ``val``; if none, the smallest gap. Why the constraint: plain mean
validation accuracy on the training domains always prefers the weakest penalty, because a model
that uses the spurious colour scores higher there (85% vs 75%) -- that is the very failure the
benchmark exists to show, and the table below shows it (the weakest penalties top ``val``).
What these methods promise is a predictor that works equally well in every training environment;
``gap`` checks that promise on held-out training data (the colour makes train_0.1 ten points
easier than train_0.2; the invariant shape does not), and ``val`` picks the best such model.
Ties (within 0.1 points) go to the earlier grid point. The test environment's accuracy is
printed in the last column for the record only: the choice never reads it. Runs are cached in
the output directory, so a re-run only prints.

Result on this machine (AMD EPYC, 2 cores; 72 runs, about 2 minutes), copied into
SEARCHED_HPARAMS of bench/datasets/spurious_toy.py:

| method | lr | penalty weight | anneal | train-domain val | train-env gap (<= 2) | test (not used) |
|---|---|---|---|---|---|---|
| irm | 0.001 | 100 | 0 | 73.1 | 5.1 | 30.7 |
| irm | 0.001 | 1000 | 0 | 70.5 | 4.3 | 34.0 |
| irm | 0.001 | 10000 | 0 | 70.5 | 4.3 | 34.0 |
| irm | 0.001 | 100000 | 0 | 70.5 | 4.3 | 34.0 |
| irm | 0.01 | 100 | 0 | 77.5 | 1.4 | 63.3 |
| irm | 0.01 | 1000 | 0 | 67.8 | 3.3 | 43.0 |
| irm | 0.01 | 10000 | 0 | 63.2 | 3.6 | 34.3 |
| irm | 0.01 | 100000 | 0 | 62.8 | 3.3 | 36.8 |
| vrex | 0.001 | 100 | 0 | 81.7 | 5.8 | 32.8 |
| vrex | 0.001 | 1000 | 0 | 77.1 | 3.4 | 54.4 |
| vrex | 0.001 | 10000 | 0 | 75.1 | 1.0 | 69.0 |
| vrex | 0.001 | 100000 | 0 | 73.5 | 4.6 | 39.6 |
| vrex | 0.01 | 100 | 0 | 78.3 | 4.7 | 48.7 |
| vrex | 0.01 | 1000 | 0 | 77.6 | 4.0 | 52.1 |
| vrex | 0.01 | 10000 | 0 | 75.7 | 0.9 | 69.2 |
| vrex | 0.01 | 100000 | 0 | 75.6 | 1.4 | 73.2 |
| fishr | 0.001 | 1000 | 0 | 83.2 | 6.5 | 23.2 |
| fishr | 0.001 | 10000 | 0 | 79.4 | 4.3 | 45.6 |
| fishr | 0.001 | 100000 | 0 | 73.9 | 3.9 | 50.8 |
| fishr | 0.001 | 1e+06 | 0 | 73.2 | 4.2 | 38.2 |
| fishr | 0.01 | 1000 | 0 | 83.4 | 6.6 | 20.2 |
| fishr | 0.01 | 10000 | 0 | 77.8 | 3.6 | 52.6 |
| fishr | 0.01 | 100000 | 0 | 75.8 | 1.1 | 72.7 |
| fishr | 0.01 | 1e+06 | 0 | 75.0 | 1.6 | 73.3 |

chosen (constrained training-domain validation):
  irm: {'lr': 0.01, 'irm_lambda': 100.0, 'irm_penalty_anneal_iters': 0}  (val 77.5, gap 1.4)
  vrex: {'lr': 0.01, 'vrex_lambda': 10000.0, 'vrex_penalty_anneal_iters': 0}  (val 75.7, gap 0.9)
  fishr: {'lr': 0.01, 'lambda': 100000.0, 'penalty_anneal_iters': 0, 'ema': 0.0}  (val 75.8, gap 1.1)
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from bench import report, report_files, sweep
from bench.spec import RuntimeOptions

DATASET = "spurious_toy"
LRS = (0.001, 0.01)
MAX_GAP = 0.02
GRIDS = {  # method -> (penalty key, anneal key, penalty weights, anneal steps, fixed extras)
    "irm": ("irm_lambda", "irm_penalty_anneal_iters", (1e2, 1e3, 1e4, 1e5), (0,), {}),
    "vrex": ("vrex_lambda", "vrex_penalty_anneal_iters", (1e2, 1e3, 1e4, 1e5), (0,), {}),
    "fishr": ("lambda", "penalty_anneal_iters", (1e3, 1e4, 1e5, 1e6), (0,), {"ema": 0.0}),
}


def grid_points(trials: int) -> list[tuple[str, dict, list]]:
    """(algorithm, overrides, specs) for every grid point."""
    out = []
    for algorithm, (weight_key, anneal_key, weights, anneals, extra) in GRIDS.items():
        for lr, weight, anneal in itertools.product(LRS, weights, anneals):
            overrides = {"lr": lr, weight_key: weight, anneal_key: anneal, **extra}
            out.append(
                (
                    algorithm,
                    overrides,
                    sweep.expand(
                        sweep.Grid((algorithm,), (DATASET,), n_trials=trials, overrides=overrides)
                    ),
                )
            )
    return out


def score(output_dir: Path, specs: list) -> tuple[float, float, float]:
    """(val, gap, test) of one grid point: see the module docstring."""
    rep = report.build_report(
        report_files.load_runs(output_dir, [s.run_id for s in specs]), "train_val"
    )
    chosen = [s for s in rep.selected["train_val"] if s.acc is not None]
    records = {(r.run_id, rec["step"]): rec for r in rep.runs for rec in r.records}
    gaps = []
    for s in chosen:
        ev = records[(s.run_id, s.step)]["eval"]
        gaps.append(abs(ev["train_0.1"]["out"]["acc"] - ev["train_0.2"]["out"]["acc"]))
    return (
        statistics.mean(s.val for s in chosen),
        statistics.mean(gaps),
        statistics.mean(s.acc for s in chosen),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/spurious_toy_search"))
    args = parser.parse_args()
    grid = grid_points(args.trials)
    everything = [spec for _, _, specs in grid for spec in specs]
    sweep.launch(
        everything,
        RuntimeOptions(output_dir=args.output_dir, progress=False),
        "local",
        progress=True,
        jobs=args.jobs,
    )
    print(
        "| method | lr | penalty weight | anneal | train-domain val | train-env gap (<= "
        f"{100 * MAX_GAP:g}) | test (not used) |"
    )
    print("|---|---|---|---|---|---|---|")
    scored: dict[str, list[tuple[float, float, dict]]] = {}
    for algorithm, overrides, specs in grid:
        val, gap, test = score(args.output_dir, specs)
        scored.setdefault(algorithm, []).append((val, gap, overrides))
        weight_key, anneal_key = GRIDS[algorithm][:2]
        print(
            f"| {algorithm} | {overrides['lr']:g} | {overrides[weight_key]:g} | "
            f"{overrides[anneal_key]} | {100 * val:.1f} | {100 * gap:.1f} | "
            f"{100 * test:.1f} |"
        )
    print("\nchosen (constrained training-domain validation):")
    for algorithm, points in scored.items():
        val, gap, overrides = choose(points)
        print(f"  {algorithm}: {overrides}  (val {100 * val:.1f}, gap {100 * gap:.1f})")


def choose(points: list[tuple[float, float, dict]]) -> tuple[float, float, dict]:
    """Highest val among gap <= MAX_GAP (first wins ties within 0.1 points); else the smallest gap."""
    feasible = [p for p in points if p[1] <= MAX_GAP]
    if not feasible:
        return min(points, key=lambda p: p[1])
    best = feasible[0]
    for point in feasible[1:]:
        if point[0] > best[0] + 1e-3:
            best = point
    return best


if __name__ == "__main__":
    main()
