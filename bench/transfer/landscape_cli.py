"""``python -m bench landscape``: the loss
landscape of a scratch and a pretrained transfer run (``bench.transfer.landscape``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

import torch

from bench import records
from bench.errors import UserError
from bench.transfer.landscape import compare, find_runs


def _check_task(paths: Sequence[Path], task: str) -> None:
    for path in paths:
        if (path / records.SPEC).exists():
            found = records.read_json(path / records.SPEC)["spec"]["dataset"]
            if found != task:
                raise UserError(f"{path}: a run of {found}, not of --task {task}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench landscape", description=__doc__)
    parser.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="an output directory (runs chosen by --task/--recipes/--trial-seed), or run dirs",
    )
    parser.add_argument("--task", required=True, help="the transfer task the runs are on")
    parser.add_argument("--recipes", default="scratch,finetune", help="with an output directory")
    parser.add_argument("--trial-seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", default="transfer_landscape.png", help="PNG; numbers beside it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        paths = [Path(p) for p in args.runs]
        if len(paths) == 1 and not (paths[0] / records.SPEC).exists():
            paths = find_runs(paths[0], args.task, args.recipes.split(","), args.trial_seed)
        _check_task(paths, args.task)
        result = compare(paths, Path(args.out), args.data_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder: read-only, full, not a folder, ...
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{result['figure']} ({shlex.join(str(p) for p in paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
