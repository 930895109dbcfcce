"""Print the cmnist_irm reproduction table (markdown) from the records the harness wrote.

Usage: python benchmarks/cmnist_irm_table.py /work/runs/cmnist_irm
Train accuracy is the mean over the two training environments (as the IRM code's
``train_acc``), test accuracy the test environment's, both at the last step. A last
table gives the ``grad_cos`` diagnostic (mean pairwise cosine of the per-environment
head gradients, averaged over the steps since the previous record) at every record.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench import records

ROWS = [
    ("erm", "cmnist_irm", "ERM"),
    ("irm", "cmnist_irm", "IRM"),
    ("vrex", "cmnist_irm", "V-REx"),
    ("fishr", "cmnist_irm", "Fishr"),
    ("erm", "cmnist_irm_gray", "ERM, grayscale (oracle)"),
]
PUBLISHED = {
    "ERM": "87.4 ± 0.2 / 17.1 ± 0.6 (IRM paper)",
    "IRM": "70.8 ± 0.9 / 66.9 ± 2.5 (IRM paper)",
    "V-REx": "test 67.2 ± 1.5 (Fishr paper)",
    "Fishr": "test 69.5 ± 1.0 (Fishr paper)",
    "ERM, grayscale (oracle)": "73.5 ± 0.2 / 73.0 ± 0.4 (IRM paper)",
}


def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else float("nan")
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def collect(output_dir: Path) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for run in records.iter_runs(output_dir):
        if (
            not (run / records.DONE).exists()
            or records.read_json(run / records.SPEC)["spec"]["size"] != "full"
        ):
            continue
        spec = records.read_json(run / records.SPEC)["spec"]
        last = records.read_records(run / records.RESULTS)[-1]
        done = records.read_json(run / records.DONE)
        train = [v["in"]["acc"] for env, v in last["eval"].items() if env not in spec["test_envs"]]
        test = [last["eval"][env]["in"]["acc"] for env in spec["test_envs"]]
        cosines = {
            r["step"]: r["train"].get("grad_cos")
            for r in records.read_records(run / records.RESULTS)
        }
        found.setdefault((spec["algorithm"], spec["dataset"]), []).append(
            {
                "cos": cosines,
                "seed": spec["trial_seed"],
                "train": sum(train) / len(train),
                "test": sum(test) / len(test),
                "wall": done["wall_s"],
                "status": done["status"],
                "step": last["step"],
                "git": last["meta"]["git"],
            }
        )
    return found


def main(output_dir: str) -> None:
    found = collect(Path(output_dir))
    print(
        "| method | restarts (trial seeds) | train acc % | test acc % | wall time per "
        "run, min | published train / test % |"
    )
    print("|---|---|---|---|---|---|")
    for algorithm, dataset, label in ROWS:
        runs = sorted(found.get((algorithm, dataset), []), key=lambda r: r["seed"])
        ok = [r for r in runs if r["status"] == "ok"]
        seeds = ",".join(str(r["seed"]) for r in ok) or "-"
        print(
            f"| {label} | n={len(ok)} ({seeds}) | {cell([r['train'] for r in ok])} | "
            f"{cell([r['test'] for r in ok])} | {cell([r['wall'] for r in ok], 1 / 60)} | "
            f"{PUBLISHED[label]} |"
        )
    print()
    print(
        "| algorithm | dataset | trial seed | last step | train % | test % | wall s | "
        "status | git |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (algorithm, dataset), runs in sorted(found.items()):
        for r in sorted(runs, key=lambda r: r["seed"]):
            print(
                f"| {algorithm} | {dataset} | {r['seed']} | {r['step']} | "
                f"{100 * r['train']:.1f} | {100 * r['test']:.1f} | {r['wall']:.0f} | "
                f"{r['status']} | {r['git']} |"
            )
    steps = sorted({step for runs in found.values() for r in runs for step in r["cos"]})
    print()
    print("grad_cos (mean over restarts) at each record step:")
    print()
    print("| method | " + " | ".join(map(str, steps)) + " |")
    print("|---|" + "---|" * len(steps))
    for algorithm, dataset, label in ROWS:
        ok = [r for r in found.get((algorithm, dataset), []) if r["status"] == "ok"]
        if ok:
            print(
                f"| {label} | "
                + " | ".join(
                    f"{statistics.mean(r['cos'][step] for r in ok):+.2f}" for step in steps
                )
                + " |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/runs/cmnist_irm")
