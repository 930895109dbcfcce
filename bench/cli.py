"""Command line: a thin argparse layer over the library. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.errors import UserError

# Options whose values may start with "-" (e.g. the environment "-90%").
_DASH_VALUES = ("--test-envs",)


def _join_dash_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _DASH_VALUES and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--hparams is not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise UserError(f"--hparams must be a JSON object like '{{\"lr\": 0.001}}', got {text}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help="import a plugin module that registers algorithms or datasets")


def _add_run(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--algorithm", default="erm")
    p.add_argument("--dataset", default="cmnist_irm")
    p.add_argument("--test-envs", default=None, help="comma-separated environment names (default: the dataset's)")
    p.add_argument("--trial-seed", type=int, default=0)
    p.add_argument("--hparams-seed", type=int, default=0, help="0 = defaults; K > 0 = K-th random-search sample")
    p.add_argument("--hparams", type=_json_object, default={}, metavar="JSON", help="overrides, e.g. '{\"lr\": 0.001}'")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the dataset's)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: the dataset's)")
    p.add_argument("--holdout-fraction", type=float, default=None)
    p.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: a few hundred examples, for smoke tests")
    p.add_argument("--output-dir", type=Path, default=Path("bench_output"))
    p.add_argument("--data-dir", default=None, help="folder with the data files (default: $BENCH_DATA, ./data, ../shared/data)")
    p.add_argument("--download", action="store_true", help="download missing data where the dataset supports it")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Domain-generalization and transfer benchmark harness.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    _add_run(sub.add_parser("run", help="train one run"))
    p = sub.add_parser("list", help="algorithms and datasets with their environments")
    _add_common(p)
    p = sub.add_parser("hparams", help="hyperparameter space and resolved values")
    _add_common(p)
    p.add_argument("--algorithm", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--hparams-seed", type=int, default=0)
    p.add_argument("--trial-seed", type=int, default=0)
    p = sub.add_parser("show", help="summary of a run directory (or every run under an output directory)")
    p.add_argument("path", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from bench.registry import import_plugins

        import_plugins(getattr(args, "imports", []))
        if args.command in (None, "run"):
            if args.command is None:
                args = parser.parse_args(["run"])
            return _cmd_run(args, argv)
        return {"list": _cmd_list, "hparams": _cmd_hparams, "show": _cmd_show}[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from bench import runner
    from bench.report_run import run_table
    from bench.spec import RuntimeOptions, make_spec

    spec = make_spec(
        args.algorithm,
        args.dataset,
        test_envs=args.test_envs.split(",") if args.test_envs else None,
        trial_seed=args.trial_seed,
        hparams_seed=args.hparams_seed,
        overrides=args.hparams,
        steps=args.steps,
        eval_every=args.eval_every,
        holdout_fraction=args.holdout_fraction,
        size=args.size,
    )
    options = RuntimeOptions(
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        device=args.device,
        download=args.download,
        progress=not args.no_progress,
        threads=args.threads,
        command=shlex.join(["python", "-m", "bench", *argv]),
    )
    outcome = runner.run(spec, options)
    if outcome.status == "busy":
        print(f"run {spec.run_id} is being trained by another worker ({outcome.run_dir})")
        return 0
    if outcome.status == "skipped":
        print(f"run {spec.run_id} is already done ({outcome.run_dir}); nothing to do")
    print(run_table(outcome.last_record, spec.test_envs))
    print(f"status: {outcome.status}   wall: {outcome.wall_s:.1f}s   run dir: {outcome.run_dir}")
    return 1 if outcome.status == "diverged" else 0


def _cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    rows = [[name, cls.VERSION, (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]] for name, cls in ((n, ALGORITHMS.get(n)) for n in ALGORITHMS.names())]
    print("Algorithms")
    print(tabulate(rows, headers=["name", "version", "description"]))
    rows = []
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        test = "leave-one-out" if cls.TEST_ENVS is None else ",".join(cls.TEST_ENVS)
        rows.append([name, ", ".join(cls.env_names()), test, "x".join(map(str, cls.INPUT_SHAPE)), cls.NUM_CLASSES, cls.FEATURIZER, cls.N_STEPS])
    print("\nDatasets")
    print(tabulate(rows, headers=["name", "environments", "test envs", "input", "classes", "featurizer", "steps"]))
    return 0


def _cmd_hparams(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench import hparams as hp
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    space = hp.space_for(ALGORITHMS.get(args.algorithm), DATASETS.get(args.dataset))
    values = hp.sample(space, args.algorithm, args.dataset, args.hparams_seed, args.trial_seed)
    rows = [[key, repr(values[key]), repr(param.default), param.describe(), param.doc] for key, param in sorted(space.items())]
    print(f"{args.algorithm} on {args.dataset}, hparams_seed={args.hparams_seed}, trial_seed={args.trial_seed}")
    print(tabulate(rows, headers=["key", "value", "default", "search", "doc"]))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from bench.report_run import show

    print(show(args.path))
    return 0
