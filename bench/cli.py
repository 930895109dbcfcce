"""Command line: a thin argparse layer over the library. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from bench import cli_checks as checks
from bench import sweep_cli
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


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import a plugin (a module name on sys.path, or a .py file) that registers "
        "algorithms or datasets; "
        "repeatable; this RUNS the plugin's code, in this process and in every worker",
    )


def _add_run(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--algorithm", default=None, help="one run of this algorithm (default erm)")
    p.add_argument(
        "--dataset",
        default=None,
        help="one run on this dataset (default cmnist_irm); with neither: the default benchmark",
    )
    p.add_argument(
        "--test-envs",
        default=None,
        help="comma-separated environment names (default: the dataset's)",
    )
    p.add_argument("--trial-seed", type=int, default=0)
    p.add_argument(
        "--hparams-seed",
        type=int,
        default=0,
        help="0 = defaults; K > 0 = K-th random-search sample",
    )
    p.add_argument(
        "--hparams", default="{}", metavar="JSON", help="overrides, e.g. '{\"lr\": 0.001}'"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="start weights of a ResNet featurizer: imagenet (torchvision's, cached or "
        "downloaded), none, or a state_dict file",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the dataset's)"
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="evaluate every N steps (default: the dataset's)",
    )
    p.add_argument("--holdout-fraction", type=float, default=None)
    p.add_argument(
        "--size",
        choices=("full", "tiny"),
        default="full",
        help="tiny: a few hundred examples, for smoke tests",
    )
    p.add_argument("--output-dir", type=Path, default=Path("bench_output"))
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the data files (default: $BENCH_DATA, ./data, ../shared/data)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download missing data where the dataset supports it",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--eval-splits",
        choices=("needed", "all"),
        default="needed",
        help="needed: skip training envs' in splits that no selection rule reads (default); "
        "all: evaluate every split",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=None,
        help="bf16: autocast training and evaluation (default fp32)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Domain-generalization and transfer benchmark harness."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser(
        "run",
        help="train one run (a transfer run with --task and --recipe), a sweep (--algorithms, "
        "--datasets, ...), or with no arguments the default benchmark",
    )
    _add_run(p)
    _add_transfer(p)
    sweep_cli.add_sweep(p)
    sweep_cli.add_leaderboard(
        sub.add_parser(
            "leaderboard",
            help="leaderboard markdown, per-trial CSV/JSON and figures from a runs directory",
        )
    )
    p = sub.add_parser("list", help="algorithms and datasets with their environments")
    _add_common(p)
    p = sub.add_parser("hparams", help="hyperparameter space and resolved values")
    _add_common(p)
    p.add_argument("--algorithm", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--hparams-seed", type=int, default=0)
    p.add_argument("--trial-seed", type=int, default=0)
    p = sub.add_parser(
        "show", help="summary of a run directory (or every run under an output directory)"
    )
    p.add_argument("path", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        from bench.registry import import_plugins, plugin_reference

        if hasattr(args, "imports"):
            args.imports = [plugin_reference(m) for m in args.imports]
            import_plugins(args.imports)
        if args.command in (None, "run"):
            if args.command is None:
                args = parser.parse_args(["run"])
            return _cmd_transfer(args, argv) if args.task or args.recipe else _cmd_run(args, argv)
        return {
            "list": _cmd_list,
            "hparams": _cmd_hparams,
            "show": _cmd_show,
            "leaderboard": sweep_cli.cmd_leaderboard,
        }[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output or data directory: not a folder, read-only, full, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"error: {where}{exc.strerror or exc}; check the path, its permissions and free space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from bench import records, runner
    from bench.report_run import run_table
    from bench.spec import RuntimeOptions, make_spec
    from bench.transfer.tasks import task_dataset

    if sweep_cli.wants_sweep(args):
        return sweep_cli.cmd_sweep(args, argv)
    checks.refuse(args, checks.SWEEP_ONLY, "one run")
    dataset = args.dataset or "cmnist_irm"
    if args.shots is not None:
        dataset = task_dataset(dataset, args.shots)
    spec = make_spec(
        args.algorithm or "erm",
        dataset,
        test_envs=args.test_envs.split(",") if args.test_envs else None,
        trial_seed=args.trial_seed,
        hparams_seed=args.hparams_seed,
        overrides=checks.overrides(args),
        steps=args.steps,
        eval_every=args.eval_every,
        holdout_fraction=args.holdout_fraction,
        size=args.size,
        precision=args.precision,
        data_dir=args.data_dir,
        download=args.download,
    )
    options = RuntimeOptions(
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        device=checks.device(args.device),
        download=args.download,
        progress=not args.no_progress,
        threads=checks.at_least_one(args.threads, "--threads"),
        command=shlex.join(["python", "-m", "bench", *argv]),
        eval_splits=args.eval_splits,
        imports=tuple(args.imports),
    )
    records.check_output_dir(args.output_dir)
    outcome = runner.run(spec, options)
    if outcome.status == "busy":
        print(f"run {spec.run_id} is being trained by another worker ({outcome.run_dir})")
        return 0
    if outcome.status == "skipped":
        print(f"run {spec.run_id} is already done ({outcome.run_dir}); nothing to do")
    print(run_table(outcome.last_record, spec.test_envs))
    print(f"status: {outcome.status}   wall: {outcome.wall_s:.1f}s   run dir: {outcome.run_dir}")
    return 1 if outcome.status == "diverged" else 0


def _add_transfer(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "transfer", "pretrain -> adapt: the run trains --recipe on --task's target"
    )
    g.add_argument(
        "--task", default=None, help="transfer task (a dataset with a source), e.g. mnist_ab"
    )
    g.add_argument(
        "--recipe",
        default=None,
        help="adaptation recipe: scratch, linear_probe, finetune, lp_ft, surgical, "
        "frozen_first_n, reinit_above_n, self_pretrain",
    )
    g.add_argument(
        "--recipes",
        default=None,
        help="comma-separated recipes for a transfer sweep over --datasets TASKS (with --shots K)",
    )
    g.add_argument(
        "--shots",
        type=int,
        default=None,
        help="target examples per class (10, 50, 100; default: all)",
    )


def _cmd_transfer(args: argparse.Namespace, argv: list[str]) -> int:
    """A transfer run is a run of the recipe (an algorithm) on the task's dataset for that target
    size."""
    from bench.transfer.tasks import task_dataset, task_names

    if not args.task or not args.recipe:
        raise UserError(
            f"a transfer run needs both --task ({', '.join(task_names())}) and --recipe"
        )
    if args.algorithms or args.datasets or args.algorithm or args.dataset:
        raise UserError(
            "--task/--recipe name one transfer setting; for several, sweep --recipes "
            "RECIPES --datasets TASKS [--shots K]"
        )
    args.recipe = checks.recipe(args.recipe)
    args.dataset, args.algorithm = task_dataset(args.task, args.shots), args.recipe
    args.task = args.recipe = args.shots = (
        None  # translated: the run (or sweep) below sees a plain algorithm x dataset
    )
    return _cmd_run(args, argv)


def _cmd_list(args: argparse.Namespace) -> int:
    from bench.catalog import listing

    print(
        listing(use_cache=not args.imports)
    )  # cached: no torch import while the sources are unchanged
    return 0


def _cmd_hparams(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench import hparams as hp
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    space = hp.space_for(ALGORITHMS.get(args.algorithm), DATASETS.get(args.dataset))
    args.algorithm = ALGORITHMS.canonical(args.algorithm)  # the names runs draw with
    args.dataset = DATASETS.canonical(args.dataset)
    values = hp.sample(space, args.algorithm, args.dataset, args.hparams_seed, args.trial_seed)
    rows = [
        [
            key,
            repr(values[key]),
            repr(param.default),
            param.describe(),
            str(param.domain or "any"),
            param.doc,
        ]
        for key, param in sorted(space.items())
    ]
    print(
        f"{args.algorithm} on {args.dataset}, hparams_seed={args.hparams_seed}, "
        f"trial_seed={args.trial_seed}"
    )
    print(tabulate(rows, headers=["key", "value", "default", "search", "allowed", "doc"]))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from bench.report_run import show

    print(show(args.path))
    return 0


# --- sweeps and the leaderboard (bench/sweep.py, launchers.py, report.py, leaderboard.py) ---
