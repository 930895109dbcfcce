"""Full-size construction time of every registered dataset (image folders such as PACS listed separately).

Usage: python benchmarks/dataset_construction.py [--data-dir DIR] [--threads N]
Prints a markdown table (seconds, examples, environments) and the total for the
non-image datasets, whose budget is 30 s on the reference machine. Imports
(torch, torchvision, sklearn) are warmed first so each row is construction only.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision  # noqa: F401  (warm the import so the first image dataset is not charged for it)

from bench.datasets import DATASETS
from bench.datasets.image_folder import ImageFolderDataset
from bench.errors import DataNotFoundError


def measure(name: str, data_dir: str | None) -> tuple[float | None, int, int]:
    """(seconds or None when the data is missing, examples, environments) for one full-size build."""
    cls = DATASETS.get(name)
    start = time.perf_counter()
    try:
        data = cls(data_dir, data_seed=0, size="full")
    except DataNotFoundError:
        return None, 0, len(cls.env_names())
    return time.perf_counter() - start, sum(len(env) for env in data.envs.values()), len(data.envs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = DATASETS.names()
    groups = {
        "datasets (budget: 30 s in total)": [
            n for n in names if not issubclass(DATASETS.get(n), ImageFolderDataset)
        ],
        "image folders": [n for n in names if issubclass(DATASETS.get(n), ImageFolderDataset)],
    }
    for title, members in groups.items():
        print(f"\n{title}\n\n| dataset | seconds | examples | environments |\n|---|---:|---:|---:|")
        total = 0.0
        for name in members:
            seconds, examples, n_envs = measure(name, args.data_dir)
            total += seconds or 0.0
            shown = "data missing" if seconds is None else f"{seconds:.2f}"
            print(f"| {name} | {shown} | {examples:,} | {n_envs} |", flush=True)
        print(f"| **total** | **{total:.1f}** | | |")


if __name__ == "__main__":
    main()
