"""Is ``--dry-run``'s estimate within 30% of the measured wall time of a small sweep?

Side by side in one process: plan (calibrating with a cold cache), then train the same
sweep and compare. Usage, from the repository root:

    python benchmarks/plan_estimate.py [--datasets spurious_toy] [--algorithms erm,irm,vrex]
        [--n-trials 3] [--n-hparams 1] [--hparams JSON] [--vectorise]

Prints the estimate, the measured time, their ratio and the CPU; the README of this folder
keeps the latest figure.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO

from bench import cli
from bench.execution import cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="erm,irm,vrex")
    parser.add_argument("--datasets", default="spurious_toy")
    parser.add_argument("--n-trials", default="3")
    parser.add_argument("--n-hparams", default="1")
    parser.add_argument("--hparams", default=None, help="JSON overrides, as on the sweep")
    parser.add_argument("--vectorise", action="store_true", help="groups trained vectorised")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = f"{tmp}/cache"
        sweep = [
            "sweep",
            "--algorithms",
            args.algorithms,
            "--datasets",
            args.datasets,
            "--n-trials",
            args.n_trials,
            "--n-hparams",
            args.n_hparams,
            *(["--hparams", args.hparams] if args.hparams else []),
            *(["--vectorise"] if args.vectorise else []),
            "--no-progress",
            "--output-dir",
            f"{tmp}/out",
        ]
        text = StringIO()
        with redirect_stdout(text):
            cli.main([*sweep, "--dry-run"])
        line = next(x for x in text.getvalue().splitlines() if x.startswith("estimate: "))
        minutes, seconds = re.search(r"(\d+) min (\d+) s", line).groups()
        estimate = 60 * int(minutes) + int(seconds)
        start = time.perf_counter()
        with redirect_stdout(StringIO()):
            cli.main(sweep)
        measured = time.perf_counter() - start
    print(
        f"{line}\nmeasured: {measured:.1f} s; estimate / measured = {estimate / measured:.2f}; "
        f"CPU {cpu_model()}"
    )


if __name__ == "__main__":
    main()
