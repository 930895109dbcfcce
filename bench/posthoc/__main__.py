"""``python -m bench.posthoc``: adapt at test time, combine, board (after training).

Runs with weight averaging are trained by ``python -m bench sweep ... --averaging swad``
(or ``bench run``): one way to train, so one recorded command per run.

    python -m bench.posthoc tta --runs out --method t3a [--config '{"filter_k": 20}']
    python -m bench.posthoc combine --runs out --method ensemble [--algorithms erm]
    python -m bench.posthoc board --runs out --out out/board --selection train_val,oracle
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from bench import records
from bench.commands import current_syntax
from bench.errors import UserError
from bench.posthoc import board, combine, tta
from bench.report_files import load_runs
from bench.selection import Run


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"not JSON: {text!r} ({exc.msg})") from None


def _names(text: str | None) -> set[str] | None:
    return None if not text else {n.strip() for n in text.split(",")}


def _finished(output_dir: str, algorithms: set[str] | None) -> list[Run]:
    """The directory's finished runs without averaging (post-hoc methods start from these)."""
    runs = [
        r
        for r in load_runs(output_dir)
        if r.status == "ok"
        and not r.spec.get("averaging")
        and (algorithms is None or r.spec["algorithm"] in algorithms)
    ]
    if not runs:
        which = f" of {', '.join(sorted(algorithms))}" if algorithms else ""
        raise UserError(f"{output_dir}: no finished run{which} without weight averaging")
    return runs


def cmd_tta(args: argparse.Namespace, command: str) -> int:
    config = _json(args.config) if args.config else {}
    if not isinstance(config, dict):
        raise UserError(f"--config must be a JSON object, got {args.config!r}")
    runs = _finished(args.runs, _names(args.algorithms))
    for run in runs:
        path = tta.adapt_run(
            records.run_dir(args.runs, run.run_id), args.method, config, args.data_dir, command
        )
        print(f"{run.run_id}: {path}")
    print(f"adapted {len(runs)} run(s) with {args.method}")
    return 0


def cmd_combine(args: argparse.Namespace, command: str) -> int:
    groups: dict[str, list[Run]] = {}
    for run in _finished(args.runs, _names(args.algorithms)):
        key = {k: v for k, v in run.spec.items() if k not in ("hparams_seed", "hparams")}
        groups.setdefault(json.dumps(key, sort_keys=True, default=str), []).append(run)
    made = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        dirs = [records.run_dir(args.runs, r.run_id) for r in members]
        print(combine.combine(dirs, args.method, args.runs, args.data_dir, command))
        made += 1
    if not made:
        raise UserError(
            f"{args.runs}: no cell trial with 2 or more finished runs (sweep with "
            "--n-hparams 2 or more)"
        )
    print(f"combined {made} cell trial(s) with {args.method}")
    return 0


def cmd_board(args: argparse.Namespace, command: str) -> int:
    page = board.write_board(args.runs, args.out, args.selection, command)
    print(f"wrote {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.posthoc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    adapt = sub.add_parser("tta", help="test-time adaptation of every finished run")
    adapt.add_argument("--method", required=True, choices=sorted(tta.SPACES))
    adapt.add_argument("--config", help='JSON overrides, e.g. {"filter_k": 20}')
    comb = sub.add_parser("combine", help="ensemble or DiWA of each cell trial's runs")
    comb.add_argument("--method", required=True, choices=combine.METHODS)
    for p in (adapt, comb):
        p.add_argument("--algorithms", help="only these algorithms (comma-separated)")
    show = sub.add_parser("board", help="leaderboard with the post-hoc rows")
    show.add_argument("--out", required=True)
    show.add_argument("--selection", default="train_val")
    for p in (adapt, comb, show):
        p.add_argument("--runs", required=True, help="the output directory of the runs")
    for p in (adapt, comb):
        p.add_argument("--data-dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "bench.posthoc", *argv])
    if argv[:1] == ["train"]:
        print(
            f"error: weight averaging is a sweep option now: {current_syntax(command)}",
            file=sys.stderr,
        )
        return 2
    args = build_parser().parse_args(argv)
    try:
        handler = {"tta": cmd_tta, "combine": cmd_combine, "board": cmd_board}
        return handler[args.command](args, command)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
