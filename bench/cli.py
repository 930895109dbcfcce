"""Command line: a thin argparse layer over the library. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from bench import cli_checks as checks
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
        raise UserError(
            f"--hparams is not valid JSON ({exc.msg} at column {exc.colno}): {text}"
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"--hparams must be a JSON object like '{{\"lr\": 0.001}}', got {text}")
    return value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--hparams`` plus ``--weights`` (the ResNet featurizers' ``weights`` hparam)."""
    overrides = _json_object(args.hparams)
    if args.weights is not None:
        from bench.start_weights import weights_value

        overrides["weights"] = weights_value(args.weights)
    return overrides


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
    _add_sweep(p)
    _add_leaderboard(
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
            "leaderboard": _cmd_leaderboard,
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

    if _wants_sweep(args):
        return _cmd_sweep(args, argv)
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
        overrides=_overrides(args),
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


def _recipe(name: str) -> str:
    """A registered transfer recipe's name (case-insensitive), or one line with a suggestion."""
    from bench.algorithms import ALGORITHMS
    from bench.transfer.recipes import Recipe

    recipes = [n for n in ALGORITHMS.names() if issubclass(ALGORITHMS.get(n), Recipe)]
    name = name.lower()
    if name not in recipes:
        close = difflib.get_close_matches(name, recipes, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown recipe {name!r}.{hint} Recipes: {', '.join(recipes)}")
    return name


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
    args.recipe = _recipe(args.recipe)
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
_SWEEP_FLAGS = (
    "algorithms",
    "recipes",
    "datasets",
    "n_hparams",
    "n_trials",
    "launcher",
    "jobs",
    "scheduler",
)
_TEST_ENV_KEYWORDS = ("single", "all", "pairs")


def _add_sweep(p: argparse.ArgumentParser) -> None:
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
        "--no-stack",
        action="store_true",
        help="local: train every run on its own (default: tiny same-shape ERM runs train together)",
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


def _wants_sweep(args: argparse.Namespace) -> bool:
    if args.algorithm is None and args.dataset is None:
        return True  # the default benchmark
    return (
        any(getattr(args, k) is not None for k in _SWEEP_FLAGS)
        or (args.test_envs or "") in _TEST_ENV_KEYWORDS
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


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    import dataclasses

    from bench import leaderboard, records, report, sweep
    from bench.selection import rule_names
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
        args.algorithms = ",".join(_recipe(name) for name in _names(args.recipes))
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
        datasets = _names(args.datasets or args.dataset or "cmnist_irm")
        if args.shots is not None or args.recipes:
            from bench.transfer.tasks import task_dataset

            datasets = tuple(task_dataset(d, args.shots) for d in datasets)
        grid = sweep.Grid(
            algorithms=_names(args.algorithms or args.algorithm or "erm"), datasets=datasets
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
        grid, **{k: v for k, v in given.items() if v is not None}, overrides=_overrides(args)
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
        stack=not args.no_stack,
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
    rep = report.build_report(report.load_runs(args.output_dir, [s.run_id for s in specs]), rules)
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


def _add_leaderboard(p: argparse.ArgumentParser) -> None:
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


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench import leaderboard, records, report
    from bench.selection import rule_names

    rules = rule_names(args.selection)
    if not args.format and (args.spread != "std" or args.ci):
        raise UserError(
            "--spread and --ci shape the tables printed with --format; add --format "
            "markdown|latex|plain"
        )
    runs = report.load_runs(args.runs)
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
