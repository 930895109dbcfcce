"""``python -m bench.meta``: one run, a small sweep, a board. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from bench import records
from bench.errors import UserError
from bench.meta import board as boards
from bench.meta.base import METHODS
from bench.meta.few_shot import FEW_SHOT_DATASETS
from bench.meta.runner import run
from bench.meta.spec import TEST_EPISODES, VAL_EPISODES, MetaSpec, make_meta_spec


def _protocol_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="few-shot dataset (see `list`)")
    p.add_argument("--way", type=int, default=5, help="classes per episode (default 5)")
    p.add_argument("--query", type=int, default=15, help="queries per class (default 15)")
    p.add_argument("--steps", type=int, help="meta-training steps (default: the dataset's)")
    p.add_argument("--eval-every", type=int, help="steps between meta-validations")
    p.add_argument("--val-episodes", type=int, default=VAL_EPISODES, help="validation episodes")
    p.add_argument("--test-episodes", type=int, default=TEST_EPISODES, help="meta-test episodes")
    p.add_argument("--size", default="full", choices=("full", "tiny"))
    p.add_argument("--hparams", default="{}", help="JSON overrides, e.g. '{\"inner_lr\": 0.05}'")
    p.add_argument("--data-dir", help="folder holding mnist.npz / pacs (default: bench's search)")
    p.add_argument("--output-dir", default="bench_output", help="runs go to DIR/meta_runs")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.meta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one seeded run")
    one.add_argument("--method", required=True, help="meta-learning method (see `list`)")
    one.add_argument("--shot", type=int, default=1, help="support examples per class")
    one.add_argument("--trial-seed", type=int, default=0)
    one.add_argument("--hparams-seed", type=int, default=0, help="0 = defaults")
    _protocol_flags(one)
    many = sub.add_parser("sweep", help="methods x shots x trials x hparams samples, in turn")
    many.add_argument("--methods", nargs="+", required=True)
    many.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    many.add_argument("--trials", type=int, default=3, help="trial seeds 0..N-1")
    many.add_argument("--hparams-samples", type=int, default=1, help="hparams seeds 0..N-1")
    _protocol_flags(many)
    show = sub.add_parser("board", help="tables (markdown) and a figure of accuracy vs shots")
    show.add_argument("--output-dir", default="bench_output")
    show.add_argument("--out", help="write the markdown here (default: print it)")
    show.add_argument("--figure", help="write the accuracy-vs-shots figure here (.png)")
    sub.add_parser("list", help="methods and few-shot datasets")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "python -m bench.meta " + shlex.join(argv)
    try:
        if args.command == "list":
            print("methods:", ", ".join(METHODS.names()))
            print("datasets:", ", ".join(FEW_SHOT_DATASETS.names()))
            return 0
        if args.command == "board":
            return _board(args, command)
        if args.threads:
            torch.set_num_threads(args.threads)
        for spec in _specs(args):
            outcome = run(spec, args.output_dir, args.data_dir, command)
            test = outcome.test["eval"] if outcome.test else None
            result = f"test {test['acc']:.4f} ± {test['ci95']:.4f}" if test else "no result"
            print(
                f"{spec.method} {spec.way}-way {spec.shot}-shot trial {spec.trial_seed} "
                f"hparams {spec.hparams_seed}: {outcome.status}, {result} ({outcome.run_dir})"
            )
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output or data directory: missing, read-only, full, ...
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _overrides(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--hparams is not JSON ({exc.msg}): {text}") from None
    if not isinstance(value, dict):
        raise UserError(f"--hparams must be a JSON object, got {text}")
    return value


def _specs(args: argparse.Namespace) -> list[MetaSpec]:
    """Every spec first (validated before anything trains), in a stable order."""
    common = dict(
        dataset=args.dataset,
        way=args.way,
        query=args.query,
        overrides=_overrides(args.hparams),
        steps=args.steps,
        eval_every=args.eval_every,
        val_episodes=args.val_episodes,
        test_episodes=args.test_episodes,
        size=args.size,
        data_dir=args.data_dir,
    )
    if args.command == "run":
        return [
            make_meta_spec(
                args.method,
                shot=args.shot,
                trial_seed=args.trial_seed,
                hparams_seed=args.hparams_seed,
                **common,
            )
        ]
    if min(args.trials, args.hparams_samples) < 1:
        raise UserError("--trials and --hparams-samples must be >= 1")
    return [
        make_meta_spec(method, shot=shot, trial_seed=trial, hparams_seed=h, **common)
        for trial in range(args.trials)
        for shot in args.shots
        for method in args.methods
        for h in range(args.hparams_samples)
    ]


def _board(args: argparse.Namespace, command: str) -> int:
    runs = boards.collect(args.output_dir)
    results = boards.select(runs)
    if not results:
        raise UserError(f"no finished meta-learning runs under {args.output_dir}")
    if args.figure:
        boards.plot(results, args.figure)
    text = boards.board(results, runs, command, records.git_commit(), args.figure)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0
