"""The command line's parser: every subcommand's flags, and the flags of other subcommands each
one accepts only to refuse them (``cli_checks.FOREIGN``).

Building it imports nothing heavy, so ``bench list``, ``show`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import cli_checks as checks
from bench.spec import PRECISIONS

COMMANDS = (
    "run",
    "sweep",
    "transfer",
    "leaderboard",
    "list",
    "hparams",
    "show",
    "mtl",
    "meta",
    "posthoc",
    "landscape",
)
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


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` (without the program name) parsed; argparse itself exits 2 on a malformed line."""
    mtl = next((w for w in argv if not w.startswith("-")), None) == "mtl"
    return build_parser(mtl).parse_args(_join_dash_values(argv))


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


def _add_training(p: argparse.ArgumentParser) -> None:
    """Flags of every command that trains: what a run is (beyond its names) and where it runs."""
    _add_common(p)
    p.add_argument(
        "--test-envs",
        default=None,
        help="comma-separated environment names (default: the dataset's); a sweep also takes "
        "single, all (each env in turn) or pairs",
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
        "--shots",
        type=int,
        default=None,
        help="target examples per class of a transfer task (10, 50, 100; default: all)",
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
        choices=PRECISIONS,
        default=None,
        help="fp32 (default); fp32-onednn: linear layers in oneDNN's fp32 kernels, faster on "
        "AMD CPUs, equal to fp32 up to rounding; bf16: autocast training and evaluation",
    )
    p.add_argument(
        "--averaging",
        default=None,
        metavar="KIND_OR_JSON",
        help="weight averaging during training, recorded beside the raw model: swa, ema or swad "
        '(defaults), or JSON with kind and parameters, e.g. \'{"kind": "ema", "decay": 0.99}\'',
    )


def _add_uda(p: argparse.ArgumentParser) -> None:
    """Run and sweep only: a transfer recipe adapts to a labelled target."""
    p.add_argument(
        "--uda-fraction",
        type=float,
        default=None,
        metavar="F",
        help="unsupervised domain adaptation: give this share of each test environment to "
        "training, unlabeled, and evaluate the rest (default 0: domain generalisation)",
    )


def _add_seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trial-seed", type=int, default=0)
    p.add_argument(
        "--hparams-seed",
        type=int,
        default=0,
        help="0 = defaults; K > 0 = K-th random-search sample",
    )


def _add_transfer(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "transfer", "pretrain -> adapt: one run trains --recipe on --task's target"
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
    g.add_argument("--tasks", default=None, help="comma-separated tasks of a transfer sweep")
    g.add_argument("--recipes", default=None, help="comma-separated recipes of a transfer sweep")
    g.add_argument(
        "--baseline",
        default="scratch",
        help="the recipe a transfer sweep's tables test the others against (default scratch)",
    )


def _refuse_foreign(p: argparse.ArgumentParser, command: str) -> None:
    """Accept other subcommands' flags (hidden) only so that ``main`` refuses them in one line."""
    for flag in checks.FOREIGN[command]:
        p.add_argument(flag, nargs="?", const=True, default=None, help=argparse.SUPPRESS)


def _add_sweep(p: argparse.ArgumentParser, grid: bool = True) -> None:
    """The sweep flags; ``grid=False`` leaves out --algorithms/--datasets (a transfer sweep names
    --recipes and --tasks instead)."""
    g = p.add_argument_group("sweep", "a grid of runs; re-running the same command resumes it")
    if grid:
        g.add_argument(
            "--algorithms",
            default=None,
            help="comma-separated, e.g. erm,irm,vrex (default erm; with no --datasets either: "
            "the default benchmark)",
        )
        g.add_argument(
            "--datasets",
            default=None,
            help="comma-separated, e.g. cmnist,debug (default cmnist_irm)",
        )
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
    g.add_argument(
        "--vectorise",
        action="store_true",
        default=None,
        help="local: train runs of one shape (trials and hparam samples of ERM, V-REx, "
        "GroupDRO, IRM, Fishr, CORAL, MMD or IB-ERM on an MLP) as one batched unit per worker; "
        "records identical to one by one (bench/vectorised/)",
    )
    g.add_argument("--slurm-partition", default=None)
    g.add_argument(
        "--slurm-timeout",
        type=int,
        default=None,
        metavar="MIN",
        help="slurm: minutes per run (default 60)",
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


def _add_mtl(p: argparse.ArgumentParser) -> None:
    """``bench mtl run|sweep|board|landscape|list``: the multi-task package's own commands, each
    also accepting the DG flags it refuses (``cli_checks.MTL_NAMES``)."""
    # Imported only for `bench mtl`: the multi-task package imports torch, which `bench list`,
    # `show` and `--help` never need.
    from bench.multitask.cli import add_commands

    sub = p.add_subparsers(dest="mtl_command", required=True)
    add_commands(sub)
    for command in sub.choices.values():
        _refuse_foreign(command, "mtl")


def build_parser(mtl: bool = False) -> argparse.ArgumentParser:
    """The whole parser; ``mtl`` mounts ``bench mtl``'s subcommands (they import torch)."""
    parser = argparse.ArgumentParser(
        prog="bench", description="Domain-generalization and transfer benchmark harness."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("run", help="train one run; with no arguments at all, the default benchmark")
    p.add_argument("--algorithm", default=None, help="the run's algorithm (default erm)")
    p.add_argument("--dataset", default=None, help="the run's dataset (default cmnist_irm)")
    _add_seeds(p)
    _add_training(p)
    _add_uda(p)
    _refuse_foreign(p, "run")
    p = sub.add_parser(
        "sweep",
        help="train a grid of runs (re-running resumes); without --algorithms and --datasets, "
        "the default benchmark",
    )
    _add_training(p)
    _add_uda(p)
    _add_sweep(p)
    _refuse_foreign(p, "sweep")
    p = sub.add_parser(
        "transfer",
        help="adapt a recipe to a transfer task: one run (--task, --recipe) or a sweep "
        "(--tasks, --recipes, sweep flags)",
    )
    _add_transfer(p)
    _add_seeds(p)
    _add_training(p)
    _add_sweep(p, grid=False)
    _refuse_foreign(p, "transfer")
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
    for name, what in (
        ("meta", "meta-learning (few-shot episodes): run, sweep, board, list"),
        ("posthoc", "test-time adaptation, ensembles/DiWA and their boards: tta, combine, board"),
        ("landscape", "loss landscape of a scratch and a pretrained transfer run (a figure)"),
    ):  # handled by bench.cli.DELEGATED before this parser runs; listed here for --help
        sub.add_parser(name, add_help=False, help=f"{what} (`bench {name} --help`)")
    p = sub.add_parser(
        "mtl",
        help="multi-task learning: run, sweep, board, landscape, list (`bench mtl --help`)",
    )
    _add_common(p)
    if mtl:
        _add_mtl(p)
    return parser
