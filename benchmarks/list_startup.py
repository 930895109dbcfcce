"""Start-up time of ``python -m bench list``: cold (no cache, as after a source change) and cached.

Usage: python benchmarks/list_startup.py [--repeat 5]

Runs each command in a fresh interpreter. A cold ``bench list`` gets an empty
XDG_CACHE_HOME, so it reads the registries from source (bench/catalog.py, no torch); a
cached one reads the text the previous call stored. ``python -c pass`` is the floor;
importing the registries (and with them torch) is what listing cost before it read source.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _timing import machine


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    bench_list = [sys.executable, "-m", "bench", "list"]
    registries = "import bench.algorithms, bench.datasets"
    rows = {
        "python -c pass": [sys.executable, "-c", "pass"],
        f"python -c '{registries}'": [sys.executable, "-c", registries],
        "python -m bench list (cold: empty cache)": bench_list,
        "python -m bench list (cached)": bench_list,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "XDG_CACHE_HOME": cache}
            for name, cmd in rows.items():  # the cold call fills the cache the cached one reads
                times[name].append(wall(cmd, env))
    print("| command | median s | min s |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")


if __name__ == "__main__":
    main()
