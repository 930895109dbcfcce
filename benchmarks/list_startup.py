"""Start-up time of ``python -m bench list``: first call (fills the catalogue cache) and cached calls.

Usage: python benchmarks/list_startup.py [--repeat 5]

Runs each command in a fresh interpreter with a private, empty XDG_CACHE_HOME, so the
first ``bench list`` renders the catalogue (importing every registered module and with
them torch) and later ones read the cache. ``python -c pass`` and ``import torch`` are
timed alongside: the floor, and what an uncached listing cannot avoid.
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
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        first = wall([sys.executable, "-m", "bench", "list"], env)
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "python -m bench list (cached)": [sys.executable, "-m", "bench", "list"],
        }
        times = {name: [wall(cmd, env) for _ in range(args.repeat)] for name, cmd in rows.items()}
    print("| command | median s | min s |")
    print("|---|---|---|")
    print(f"| python -m bench list (first call, fills the cache) | {first:.2f} | {first:.2f} |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")


if __name__ == "__main__":
    main()
