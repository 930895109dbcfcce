"""Command line: a thin argparse layer over the library. User errors exit 2 with one line.

One subcommand per mode, chosen by the user and never inferred from the flags given:
``run`` trains exactly one run (with no arguments at all: the default benchmark),
``sweep`` a grid of runs, ``transfer`` a recipe on a transfer task (one run with
``--task``/``--recipe``, a sweep with ``--tasks``/``--recipes``). A flag of another mode
is parsed only to be refused with one line naming the subcommand that takes it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys

from tabulate import tabulate

from bench import cli_checks as checks
from bench import hparams as hp
from bench import records
from bench.catalog import listing
from bench.cli_args import COMMANDS, parse
from bench.errors import UserError
from bench.registry import import_plugins, plugin_reference
from bench.report_run import run_table, show
from bench.spec import RuntimeOptions, make_spec

# Packages with their own command line, mounted as `bench meta ...`, `bench posthoc ...`: the
# words after the subcommand are theirs (same flags, same one-line errors).
DELEGATED = {
    "meta": "bench.meta.cli",
    "posthoc": "bench.posthoc.__main__",
    "landscape": "bench.transfer.landscape_cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        # Imported only for these subcommands: both packages import torch, which `bench list`,
        # `show` and `--help` never need.
        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        check_mode(args)
        checks.hub_datasets_reachable(args)
        if hasattr(args, "imports"):
            args.imports = [plugin_reference(m) for m in args.imports]
            import_plugins(args.imports)
        if args.command in ("run", "transfer"):
            return {"run": _cmd_run, "transfer": _cmd_transfer}[args.command](args, argv)
        if args.command in ("sweep", "leaderboard"):
            # Imported here for start-up speed: sweeps and boards import torch (seconds on a
            # busy CPU), which `bench list`, `show` and `--help` never need.
            from bench import sweep_cli

            if args.command == "sweep":
                return sweep_cli.cmd_sweep(args, argv)
            return sweep_cli.cmd_leaderboard(args)
        if args.command == "mtl":  # args.func: bench.multitask.cli's, mounted by parse
            args.command_line = shlex.join(["python", "-m", "bench", *argv])
            args.func(args)
            return 0
        return {"list": _cmd_list, "hparams": _cmd_hparams, "show": _cmd_show}[args.command](args)
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


def check_mode(args: argparse.Namespace) -> None:
    """Refuse, before any work, a command line whose mode is wrong or left to guess.

    That is: no subcommand, a flag of another subcommand, one run given a ``--test-envs``
    keyword or options but no algorithm or dataset, a transfer command that mixes or lacks
    its --task/--recipe or --tasks/--recipes pair. Every command a board prints passes it.
    """
    if args.command is None:
        raise UserError(
            f"choose a command: {', '.join(COMMANDS)} (`python -m bench run` alone runs "
            "the default benchmark; --help describes each)"
        )
    checks.refuse_foreign(args, args.command)
    if args.command in ("run", "sweep"):
        checks.uda_fraction(args.uda_fraction)
    if args.command == "run":
        checks.one_run_test_envs(args.test_envs)
        bare = vars(parse(["run"]))
        given = [k for k, v in vars(args).items() if k != "verbose" and v != bare[k]]
        if args.algorithm is None and args.dataset is None and given:
            raise UserError(
                "one run needs --algorithm and/or --dataset; `python -m bench run` alone is the "
                "default benchmark, and `python -m bench sweep` without --algorithms/--datasets "
                "is that benchmark with options (--jobs, --output-dir, ...)"
            )
    elif args.command == "transfer":
        if not (args.task and args.recipe) and not (args.tasks or args.recipes):
            from bench.transfer.tasks import task_names  # start-up speed: torch (see main)

            raise UserError(
                f"a transfer run needs both --task ({', '.join(task_names())}) and --recipe; "
                "a transfer sweep --tasks and --recipes"
            )
        checks.transfer_pairs(args)


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    """Exactly one run; ``bench run`` with no arguments at all is the default benchmark."""
    # Imported here for start-up speed: torch (see main).
    from bench import plan, runner
    from bench.transfer.tasks import task_dataset

    if args.algorithm is None and args.dataset is None:  # nothing else given (check_mode)
        from bench import sweep_cli  # start-up speed: torch (see main)

        return sweep_cli.cmd_sweep(parse(["sweep"]), argv)  # the default benchmark
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
        averaging=checks.averaging(args.averaging),
        data_dir=args.data_dir,
        download=args.download,
        uda_fraction=checks.uda_fraction(args.uda_fraction),
    )
    options = RuntimeOptions(
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        device=checks.device(args.device, args.precision),
        download=args.download,
        progress=not args.no_progress,
        threads=checks.at_least_one(args.threads, "--threads"),
        command=shlex.join(["python", "-m", "bench", *argv]),
        eval_splits=args.eval_splits,
        imports=tuple(args.imports),
    )
    records.check_output_dir(args.output_dir)
    done = (records.run_dir(options.output_dir, spec.run_id) / records.DONE).exists()
    advice = (
        None
        if done
        else plan.precision_advice([spec], options, spec.steps >= plan.ADVICE_MIN_STEPS)
    )
    if advice:
        print(advice)
    outcome = runner.run(spec, options)
    if outcome.status == "busy":
        print(f"run {spec.run_id} is being trained by another worker ({outcome.run_dir})")
        return 0
    if outcome.status == "skipped":
        print(f"run {spec.run_id} is already done ({outcome.run_dir}); nothing to do")
    print(run_table(outcome.last_record, spec.test_envs))
    print(f"status: {outcome.status}   wall: {outcome.wall_s:.1f}s   run dir: {outcome.run_dir}")
    return 1 if outcome.status == "diverged" else 0


def _cmd_transfer(args: argparse.Namespace, argv: list[str]) -> int:
    """A transfer run is a run of the recipe (an algorithm) on the task's dataset for that target
    size; a transfer sweep is a sweep of recipes over tasks."""
    # Imported here for start-up speed: torch (see main).
    from bench.transfer.tasks import task_dataset

    if args.tasks:  # with --recipes and without --task/--recipe (check_mode)
        return _transfer_sweep(args, argv)
    args.recipe = checks.recipe(args.recipe)
    args.dataset, args.algorithm = task_dataset(args.task, args.shots), args.recipe
    args.task = args.recipe = args.shots = (
        None  # translated: the run below sees a plain algorithm x dataset
    )
    return _cmd_run(args, argv)


def _transfer_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    """Recipes x tasks (their ``--shots`` variants) as a plain sweep of algorithms x datasets."""
    # Imported here for start-up speed: torch (see main).
    from bench import sweep_cli
    from bench.transfer.leaderboard import check_baseline
    from bench.transfer.tasks import task_dataset

    args.algorithms = ",".join(checks.recipe(name) for name in checks.names(args.recipes))
    check_baseline(args.baseline)
    tasks = checks.names(args.tasks)
    args.datasets = ",".join(task_dataset(task, args.shots) for task in tasks)
    args.tasks = args.recipes = args.shots = None  # translated, as for one run
    return sweep_cli.cmd_sweep(args, argv)


def _cmd_list(args: argparse.Namespace) -> int:
    print(
        listing(use_cache=not args.imports)
    )  # cached: no torch import while the sources are unchanged
    return 0


def _cmd_hparams(args: argparse.Namespace) -> int:
    # Imported here for start-up speed: the registries import torch (see main).
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
    print(show(args.path))
    return 0
