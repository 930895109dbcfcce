"""The sweep and leaderboard commands: grids of runs, their plan, launch, tables and boards.

It imports torch; ``bench.cli`` imports it only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from bench import cli_checks as checks
from bench import (
    launchers,
    leaderboard,
    plan,
    records,
    report,
    report_files,
    sweep,
    vectorised,
)
from bench.errors import UserError
from bench.execution import cpu_model
from bench.interpret import render
from bench.selection import rule_names
from bench.spec import RunSpec, RuntimeOptions
from bench.transfer.leaderboard import transfer_tables
from bench.transfer.tasks import task_dataset


def _plan(
    args: argparse.Namespace,
    specs: list[RunSpec],
    found: dict[str, list[RunSpec]],
    rules: list[str],
    options: RuntimeOptions,
) -> bool:
    """Print the time estimate (calibrating first with --dry-run, whose plan ends the command)."""
    todo = found["partial"] + found["damaged"] + found["new"]
    launcher = args.launcher or "local"
    jobs, threads = (
        launchers.plan_local(len(todo), args.jobs, args.threads) if launcher == "local" else (1, 1)
    )
    where = f"{jobs} job(s) x {threads} thread(s)" if launcher == "local" else "one run at a time"
    timed = dataclasses.replace(options, threads=threads)
    if args.dry_run:
        missing = plan.missing_calibrations(todo, timed)
        if missing:
            print(f"timing {missing} protocol(s) first: a few steps and one evaluation each")
    vectorise = bool(args.vectorise) and launcher == "local"
    seconds = plan.estimate_s(todo, timed, jobs, args.dry_run, vectorise) if todo else 0.0
    cost = plan.costs(todo, timed)
    if args.dry_run:
        print("\n".join(plan.describe(todo, specs, rules, cost)))
        if args.vectorise:
            print("\n".join(vectorised.describe_units(vectorised.units(todo, jobs))))
    if seconds is not None:
        load = plan.calibration_load(todo, timed) if todo else None
        busy = f" at load average up to {load:.1f}" if load is not None else ""
        left = plan.unfit(todo, timed)
        unfit = f"; {len(left)} run(s) that do not fit in memory left out" if left else ""
        if vectorise:
            where += ", groups vectorised"
        print(
            f"estimate: {plan.format_duration(seconds)} for {len(todo) - len(left)} run(s), "
            f"{where}, calibrated on {cpu_model()}{busy}{unfit}"
        )
    advice = plan.precision_advice(todo, timed, measure=args.dry_run)
    if advice:
        print(advice)
    return bool(args.dry_run)


def _grid(args: argparse.Namespace) -> tuple[sweep.Grid, bool]:
    """The sweep's grid with the flags given, and whether it is the default benchmark (neither
    --algorithms nor --datasets)."""
    default = not (args.algorithms or args.datasets)
    if default:
        grid, skipped = sweep.default_grid()
        for name in skipped:
            print(
                f"warning: default-benchmark algorithm {name!r} is not registered; skipped",
                file=sys.stderr,
            )
    else:
        datasets = checks.names(args.datasets or "cmnist_irm")
        if args.shots is not None:
            datasets = tuple(task_dataset(d, args.shots) for d in datasets)
        grid = sweep.Grid(algorithms=checks.names(args.algorithms or "erm"), datasets=datasets)
    given = {
        "n_hparams": args.n_hparams,
        "n_trials": args.n_trials,
        "test_envs": args.test_envs,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "holdout_fraction": args.holdout_fraction,
        "precision": args.precision,
        "averaging": checks.averaging(args.averaging),
        "uda_fraction": args.uda_fraction,
    }
    grid = dataclasses.replace(
        grid, **{k: v for k, v in given.items() if v is not None}, overrides=checks.overrides(args)
    )
    if args.size != "full":
        grid = dataclasses.replace(grid, size=args.size)
    return grid, default


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    """A sweep: its grid's runs, planned, launched (resuming what exists) and tabulated."""
    if args.trial_seed or args.hparams_seed:
        raise UserError(checks.SEEDS_PICK_ONE_RUN)
    checks.check_launcher_flags(args)
    grid, default = _grid(args)
    if default and args.output_dir == Path("bench_output"):
        args.output_dir = Path("bench_output") / "default"  # keep the benchmark's runs apart
    specs = sweep.expand(grid, args.data_dir, args.download)
    no_validation = all(s.holdout_fraction == 0 for s in specs)
    if args.selection is None and no_validation:
        print(
            "no validation split (holdout fraction 0, e.g. the IRM-paper protocol): "
            "tables use selection 'last'"
        )
    rules = rule_names(args.selection or ("last" if no_validation else "train_val"))
    options = RuntimeOptions(
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        device=checks.device(args.device, args.precision),
        download=args.download,
        progress=False,
        threads=args.threads,
        command=shlex.join(["python", "-m", "bench", *argv]),
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
    _launch(args, specs, options)
    run_ids = [s.run_id for s in specs]
    print()
    if getattr(args, "baseline", None):  # a transfer sweep: tables against the baseline recipe
        print(transfer_tables(args.output_dir, rules, args.baseline, run_ids))
        return 0
    rep = report.build_report(report_files.load_runs(args.output_dir, run_ids), rules)
    print(report.render_tables(rep, "plain"))
    if default:
        print(f"\n{render(rep)}")
        print(f"\nleaderboard: {_default_board(rep, args.output_dir, rules)}")
    # diverged runs are results of the search (shown in the tables), not a failure of the sweep
    return 0


def _launch(args: argparse.Namespace, specs: list[RunSpec], options: RuntimeOptions) -> None:
    """Train what is not done through the chosen launcher and print the counts."""
    result = sweep.launch(
        specs,
        options,
        args.launcher or "local",
        progress=not args.no_progress,
        jobs=args.jobs,
        vectorise=bool(args.vectorise),
        scheduler=args.scheduler,
        cluster=args.slurm_cluster,
        partition=args.slurm_partition,
        timeout_min=args.slurm_timeout or 60,
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


def _default_board(rep: report.Report, output_dir: Path, rules: list[str]) -> Path:
    """The default benchmark's leaderboard page, under its output directory."""
    out = Path(output_dir) / "leaderboard"
    title = "Default benchmark"
    command = _leaderboard_command(output_dir, out, rules, title)
    return leaderboard.write(rep, out, records.git_commit(), command, title)


def _leaderboard_command(runs: Path, out: Path, rules: list[str], title: str) -> str:
    """The ``bench leaderboard`` command that regenerates a board's tables and figures."""
    titled = ["--title", title] if title != "Leaderboard" else []
    args = ["--runs", str(runs), "--out", str(out), "--selection", ",".join(rules), *titled]
    return shlex.join(["python", "-m", "bench", "leaderboard", *args])


def cmd_leaderboard(args: argparse.Namespace) -> int:
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
    command = _leaderboard_command(args.runs, args.out, rules, args.title)
    page = leaderboard.write(
        rep, args.out, records.git_commit(), command, args.title, figures=not args.no_figures
    )
    if args.format:
        print(report.render_tables(rep, args.format, args.spread, args.ci))
    print(f"leaderboard: {page} ({len(runs)} runs)")
    return 0
