"""Print the cmnist_irm reproduction table (markdown) from the records the harness wrote.

Usage: python benchmarks/cmnist_irm_table.py sweeps/cmnist_irm
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
from bench.references import REFERENCES

ROWS = [  # (algorithm, dataset, label, the published row's name in bench.references)
    ("erm", "cmnist_irm", "ERM", "ERM"),
    ("irm", "cmnist_irm", "IRM", "IRM"),
    ("vrex", "cmnist_irm", "V-REx", "V-REx"),
    ("fishr", "cmnist_irm", "Fishr", "Fishr"),
    ("erm", "cmnist_irm_gray", "ERM, grayscale (oracle)", "ERM grayscale (oracle)"),
]


def published(dataset: str, name: str) -> str:
    """The published train / test cells of ``name`` on ``dataset``, with their paper and table."""
    ref = next(r for r in REFERENCES if r.dataset == dataset and r.algorithm == name)
    where = ", ".join(ref.source.split(", ")[:2])  # e.g. "Arjovsky et al. 2019 (IRM), Table 1"
    return f"{ref.cells['train envs']} / {ref.cells['test']} ({where})"


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
    for algorithm, dataset, label, name in ROWS:
        runs = sorted(found.get((algorithm, dataset), []), key=lambda r: r["seed"])
        ok = [r for r in runs if r["status"] == "ok"]
        seeds = ",".join(str(r["seed"]) for r in ok) or "-"
        print(
            f"| {label} | n={len(ok)} ({seeds}) | {cell([r['train'] for r in ok])} | "
            f"{cell([r['test'] for r in ok])} | {cell([r['wall'] for r in ok], 1 / 60)} | "
            f"{published(dataset, name)} |"
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
    for algorithm, dataset, label, _ in ROWS:
        ok = [r for r in found.get((algorithm, dataset), []) if r["status"] == "ok"]
        if ok:
            print(
                f"| {label} | "
                + " | ".join(
                    f"{statistics.mean(r['cos'][step] for r in ok):+.2f}"
                    if all(r["cos"].get(step) is not None for r in ok)
                    else "-"  # e.g. the oracle's 101-step runs have no later records
                    for step in steps
                )
                + " |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sweeps/cmnist_irm")
