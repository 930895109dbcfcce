"""The sweep and leaderboard commands: grids of runs, their plan, launch, tables and boards."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from bench import cli_checks as checks
from bench.errors import UserError
from bench.selection import rule_names

SWEEP_FLAGS = (
    "algorithms",
    "recipes",
    "datasets",
    "n_hparams",
    "n_trials",
    "launcher",
    "jobs",
    "scheduler",
)
TEST_ENV_KEYWORDS = ("single", "all", "pairs")


def add_sweep(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "sweep",
        "any of these (or no --algorithm/--dataset at all: the default benchmark) makes "
        "a sweep; re-running it resumes",
    )
    g.add_argument("--algorithms", default=None, help="comma-separated, e.g. erm,irm,vrex")
    g.add_argument("--datasets", default=None, help="comma-separated, e.g. cmnist,debug")
    g.add_argument(
        "--n-hparams",
        type=int,
        default=None,
        help="hparams samples per cell: seeds 0..K-1, 0 = defaults (default 1)",
    )
    g.add_argument("--n-trials", type=int, default=None, help="trial seeds 0..T-1 (default 1)")
    g.add_argument(
        "--launcher", choices=("local", "dask", "slurm"), default=None, help="default local"
    )
    g.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="local: parallel processes (default: one per core; threads per job = cores // jobs)",
    )
    g.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="dask: address of a running scheduler, e.g. tcp://10.0.0.5:8786",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs the sweep would train, what each selection rule reads and an "
        "estimated wall time (calibrated once per protocol and CPU, then cached); train nothing",
    )
    g.add_argument("--slurm-partition", default=None)
    g.add_argument(
        "--slurm-timeout", type=int, default=60, metavar="MIN", help="slurm: minutes per run"
    )
    g.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="submitit executor (default: slurm if available, else local)",
    )
    g.add_argument(
        "--selection",
        default=None,
        help="rules for the printed tables: train_val, loo, oracle, last, val_env "
        "(comma-separated; default train_val, or last when no run has a validation split)",
    )


def wants_sweep(args: argparse.Namespace) -> bool:
    if args.algorithm is None and args.dataset is None:
        return True  # the default benchmark
    return (
        any(getattr(args, k) is not None for k in SWEEP_FLAGS)
        or (args.test_envs or "") in TEST_ENV_KEYWORDS
        or args.dry_run  # a plan is a sweep's, even of one run
    )


def _plan(
    args: argparse.Namespace, specs: list, found: dict, rules: list[str], options: Any
) -> bool:
    """Print the time estimate (calibrating first with --dry-run, whose plan ends the command)."""
    import dataclasses

    from bench import plan
    from bench.launchers import plan_local

    todo = found["partial"] + found["damaged"] + found["new"]
    launcher = args.launcher or "local"
    jobs, threads = (
        plan_local(len(todo), args.jobs, args.threads) if launcher == "local" else (1, 1)
    )
    where = f"{jobs} job(s) x {threads} thread(s)" if launcher == "local" else "one run at a time"
    if args.dry_run:
        print("\n".join(plan.describe(todo, specs, rules)))
    timed = dataclasses.replace(options, threads=threads)
    seconds = plan.estimate_s(todo, timed, jobs, measure=args.dry_run) if todo else 0.0
    if seconds is not None:
        print(
            f"estimate: {plan.format_duration(seconds)} for {len(todo)} run(s), {where}, "
            f"calibrated on {plan.cpu_model()}"
        )
    return bool(args.dry_run)


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    import dataclasses

    from bench import leaderboard, records, report, report_files, sweep
    from bench.spec import RuntimeOptions

    if args.trial_seed or args.hparams_seed:
        raise UserError(
            "--trial-seed/--hparams-seed pick one run; a sweep takes --n-trials T and "
            "--n-hparams K (seeds 0..T-1, 0..K-1)"
        )
    checks.check_launcher_flags(args)
    if args.recipes:
        if args.algorithms or args.algorithm:
            raise UserError(
                "--recipes is the algorithm list of a transfer sweep; drop --algorithms"
            )
        args.algorithms = ",".join(checks.recipe(name) for name in checks.names(args.recipes))
        if not args.datasets:
            raise UserError("--recipes needs --datasets TASKS (e.g. mnist_ab) to adapt on")
    default = not (args.algorithm or args.dataset or args.algorithms or args.datasets)
    if default and args.output_dir == Path("bench_output"):
        args.output_dir = (
            Path("bench_output") / "default"
        )  # keep the default benchmark's runs apart
    if default:
        grid, skipped = sweep.default_grid()
        for name in skipped:
            print(
                f"warning: default-benchmark algorithm {name!r} is not registered; skipped",
                file=sys.stderr,
            )
    else:
        datasets = checks.names(args.datasets or args.dataset or "cmnist_irm")
        if args.shots is not None or args.recipes:
            from bench.transfer.tasks import task_dataset

            datasets = tuple(task_dataset(d, args.shots) for d in datasets)
        grid = sweep.Grid(
            algorithms=checks.names(args.algorithms or args.algorithm or "erm"), datasets=datasets
        )
    given = {
        "n_hparams": args.n_hparams,
        "n_trials": args.n_trials,
        "test_envs": args.test_envs,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "holdout_fraction": args.holdout_fraction,
        "precision": getattr(args, "precision", None),
    }
    grid = dataclasses.replace(
        grid, **{k: v for k, v in given.items() if v is not None}, overrides=checks.overrides(args)
    )
    if args.size != "full":
        grid = dataclasses.replace(grid, size=args.size)
    specs = sweep.expand(grid, args.data_dir, args.download)
    no_validation = all(s.holdout_fraction == 0 for s in specs)
    if args.selection is None and no_validation:
        print(
            "no validation split (holdout fraction 0, e.g. the IRM-paper protocol): "
            "tables use selection 'last'"
        )
    rules = rule_names(args.selection or ("last" if no_validation else "train_val"))
    command = shlex.join(["python", "-m", "bench", *argv])
    options = RuntimeOptions(
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        device=checks.device(args.device),
        download=args.download,
        progress=False,
        threads=args.threads,
        command=command,
        eval_splits=args.eval_splits,
        imports=tuple(args.imports),
    )
    records.check_output_dir(args.output_dir)
    found = sweep.states(args.output_dir, specs)
    if _plan(args, specs, found, rules, options):
        return 0
    damaged = f" / {len(found['damaged'])} damaged (trained again)" if found["damaged"] else ""
    print(
        f"{'default benchmark: ' if default else ''}{len(specs)} runs: "
        f"{len(found['done'])} done / {len(found['partial'])} partial{damaged} / "
        f"{len(found['new'])} new  (output: {args.output_dir})"
    )
    result = sweep.launch(
        specs,
        options,
        args.launcher or "local",
        progress=not args.no_progress,
        jobs=args.jobs,
        scheduler=args.scheduler,
        cluster=args.slurm_cluster,
        partition=args.slurm_partition,
        timeout_min=args.slurm_timeout,
        on_line=lambda line: print(line, flush=True),  # without a terminal: a line per finished run
    )
    counts = result.counts
    print(
        f"trained {counts['ok']}, diverged {counts['diverged']}, finished meanwhile "
        f"elsewhere {counts['skipped']}, held by another worker {counts['busy']}"
    )
    if counts["busy"]:
        print(
            "runs held by another worker are not in the tables yet; run the same command "
            "again once it is done"
        )
    rep = report.build_report(
        report_files.load_runs(args.output_dir, [s.run_id for s in specs]), rules
    )
    print()
    print(report.render_tables(rep, "plain"))
    if default:
        from bench.interpret import render

        print(f"\n{render(rep)}")
        out = Path(args.output_dir) / "leaderboard"
        title = "Default benchmark"
        page = leaderboard.write(
            rep,
            out,
            records.git_commit(),
            shlex.join(
                [
                    "python",
                    "-m",
                    "bench",
                    "leaderboard",
                    "--runs",
                    str(args.output_dir),
                    "--out",
                    str(out),
                    "--selection",
                    ",".join(rules),
                    "--title",
                    title,
                ]
            ),
            title,
        )
        print(f"\nleaderboard: {page}")
    # diverged runs are results of the search (shown in the tables), not a failure of the sweep
    return 0


def add_leaderboard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs", type=Path, required=True, help="output directory of the sweep(s) (holds runs/)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("leaderboard"),
        help="directory for README.md, selected.csv/json and PNGs",
    )
    p.add_argument(
        "--selection",
        default="train_val,oracle,last",
        help="comma-separated rules: train_val, loo, oracle, last, val_env",
    )
    p.add_argument("--title", default="Leaderboard")
    p.add_argument(
        "--format",
        choices=("markdown", "latex", "plain"),
        default=None,
        help="also print the tables in this format",
    )
    p.add_argument(
        "--spread",
        choices=("std", "se"),
        default="std",
        help="spread printed after ± (with --format)",
    )
    p.add_argument("--ci", action="store_true", help="also print 95%% t-intervals (with --format)")
    p.add_argument("--no-figures", action="store_true")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench import leaderboard, records, report, report_files

    rules = rule_names(args.selection)
    if not args.format and (args.spread != "std" or args.ci):
        raise UserError(
            "--spread and --ci shape the tables printed with --format; add --format "
            "markdown|latex|plain"
        )
    runs = report_files.load_runs(args.runs)
    if not runs:
        raise UserError(f"no runs under {args.runs}/runs; pass the --output-dir of a sweep")
    rep = report.build_report(runs, rules)
    command = shlex.join(
        [
            "python",
            "-m",
            "bench",
            "leaderboard",
            "--runs",
            str(args.runs),
            "--out",
            str(args.out),
            "--selection",
            ",".join(rules),
            *(["--title", args.title] if args.title != "Leaderboard" else []),
        ]
    )
    page = leaderboard.write(
        rep, args.out, records.git_commit(), command, args.title, figures=not args.no_figures
    )
    if args.format:
        print(report.render_tables(rep, args.format, args.spread, args.ci))
    print(f"leaderboard: {page} ({len(runs)} runs)")
    return 0
