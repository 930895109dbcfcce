"""Command-line values checked before anything runs: devices, counts, and flags that fit the mode.

A flag that does not apply to the chosen subcommand is refused with one line naming the
subcommand that takes it, never ignored (see ``FOREIGN`` and ``refuse``); every failure is a
UserError, which the CLI prints as one line, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any

from bench.downloads import hub_precheck
from bench.errors import UserError

ONE_RUN_FLAGS = ("--algorithm", "--dataset", "--trial-seed", "--hparams-seed")
SWEEP_FLAGS = (
    "--algorithms",
    "--datasets",
    "--n-hparams",
    "--n-trials",
    "--launcher",
    "--jobs",
    "--scheduler",
    "--dry-run",
    "--vectorise",
    "--slurm-partition",
    "--slurm-timeout",
    "--slurm-cluster",
    "--selection",
)
TRANSFER_FLAGS = ("--task", "--recipe", "--tasks", "--recipes", "--baseline")
REMOVED_FLAGS = ("--no-stack",)  # old commands (and published boards) still carry it
# DG flags a multi-task command refuses, and what it takes instead.
MTL_NAMES = {
    "--algorithm": "a METHOD (`bench mtl run METHOD TASKS`)",
    "--dataset": "a task set TASKS (`bench mtl run METHOD TASKS`)",
    "--algorithms": "--methods (`bench mtl sweep --methods ...`)",
    "--datasets": "--tasks, task sets (`bench mtl sweep --tasks ...`)",
    "--n-trials": "--trials T (`bench mtl sweep --trials T`: trial seeds 0..T-1)",
    "--n-hparams": "--hparams-samples K (`bench mtl sweep`: K random draws besides the defaults)",
    "--test-envs": "nothing: multi-task runs have task sets, not test environments",
}
# Per subcommand, the flags of the others: parsed (hidden) only to be refused in one line.
FOREIGN: dict[str, tuple[str, ...]] = {
    "run": SWEEP_FLAGS + TRANSFER_FLAGS + REMOVED_FLAGS,
    "sweep": ONE_RUN_FLAGS + TRANSFER_FLAGS + REMOVED_FLAGS,
    "transfer": ("--algorithm", "--dataset", "--algorithms", "--datasets", "--uda-fraction")
    + REMOVED_FLAGS,
    "mtl": tuple(MTL_NAMES),
}
# What a sweep's --test-envs keywords expand into (bench.sweep.test_env_choices; named here
# because bench.sweep imports torch).
TEST_ENV_KEYWORDS = {
    "single": "the dataset's protocol (its declared test environments, or each in turn)",
    "all": "one run per environment",
    "pairs": "the protocol's runs plus every leave-one-out pair",
}
SEEDS_PICK_ONE_RUN = (
    "--trial-seed/--hparams-seed pick one run; a sweep takes --n-trials T and --n-hparams K "
    "(seeds 0..T-1, 0..K-1)"
)


def dest(flag: str) -> str:
    """The attribute argparse stores ``flag`` under."""
    return flag.lstrip("-").replace("-", "_")


def refuse_foreign(args: argparse.Namespace, command: str) -> None:
    """One line for the first flag of another subcommand given to ``command``."""
    for flag in FOREIGN.get(command, ()):
        if getattr(args, dest(flag), None) is not None:
            raise UserError(foreign_flag(flag, command))


def foreign_flag(flag: str, command: str) -> str:
    """Why ``flag`` does not belong to ``command``, and the command line it does belong to."""
    if flag in REMOVED_FLAGS:
        return (
            f"{flag} is gone: stacked training was removed, so training is always one run at a "
            "time unless a sweep is given --vectorise (records identical either way); drop the flag"
        )
    if command == "mtl":
        return (
            f"{flag} is a domain-generalization flag; a multi-task command takes "
            f"{MTL_NAMES[flag]} (see `python -m bench mtl list`)"
        )
    if command == "transfer":
        dg = "sweep" if flag in SWEEP_FLAGS else "run"
        return (
            f"{flag} is not a transfer flag: a transfer run takes --task and --recipe, a "
            f"transfer sweep --tasks and --recipes (for DG runs: `python -m bench {dg} {flag} ...`)"
        )
    if flag in ("--trial-seed", "--hparams-seed"):
        return SEEDS_PICK_ONE_RUN
    if flag in ONE_RUN_FLAGS:
        return (
            f"{flag} names one run's {dest(flag)}; a sweep takes {flag}s: `python -m bench sweep "
            f"{flag}s ...` (one run: `python -m bench run {flag} ...`)"
        )
    owner = "sweep" if flag in SWEEP_FLAGS else "transfer"
    return f"{flag} is a {owner} flag; use `python -m bench {owner} {flag} ...`"


def one_run_test_envs(text: str | None) -> None:
    """One run's --test-envs are environment names; a keyword would expand into several runs."""
    if text in TEST_ENV_KEYWORDS:
        raise UserError(
            f"--test-envs {text}: one run needs explicit environments (comma-separated names); "
            f"`python -m bench sweep --test-envs {text}` trains {TEST_ENV_KEYWORDS[text]}"
        )


def transfer_pairs(args: argparse.Namespace) -> None:
    """``transfer`` takes --task and --recipe (one run) or --tasks and --recipes (a sweep, the only
    one of the two that takes sweep flags)."""
    if args.tasks or args.recipes:
        if args.task or args.recipe:
            raise UserError(
                "--task/--recipe name one transfer run and --tasks/--recipes a transfer sweep; "
                "give one pair"
            )
        if not (args.tasks and args.recipes):
            raise UserError(
                "a transfer sweep needs --tasks (e.g. mnist_ab) and --recipes (e.g. "
                "scratch,finetune)"
            )
        return
    for flag in SWEEP_FLAGS:
        if getattr(args, dest(flag), None) not in (None, False):
            raise UserError(
                f"{flag} is a sweep flag; --task/--recipe name one run, a transfer sweep takes "
                f"--tasks and --recipes: `python -m bench transfer --tasks ... --recipes ... "
                f"{flag} ...`"
            )


def device(text: str, precision: str | None = None) -> str:
    """A device torch knows and this machine has, able to run ``precision``; one line otherwise."""
    import torch  # on use: this module is imported by `bench list` and `--help` (start-up speed)

    from bench.execution import check_precision

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {text}: not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {text}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif parsed.type != "cpu":
        raise UserError(f"--device {text}: only cpu and cuda are supported")
    if precision:
        check_precision(parsed, precision)
    return text


def at_least_one(value: int | None, flag: str) -> int | None:
    """``value`` unchanged (None = the default), or a UserError for counts below 1."""
    if value is not None and value < 1:
        raise UserError(f"{flag} must be >= 1, got {value}")
    return value


def refuse(args: argparse.Namespace, flags: dict[str, str], mode: str) -> None:
    """UserError naming every flag of ``flags`` that was given although it does not apply to
    ``mode``."""
    given = [flag for dest, flag in flags.items() if getattr(args, dest, None) not in (None, False)]
    if given:
        raise UserError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {mode}"
        )


def check_launcher_flags(args: argparse.Namespace) -> None:
    """Counts must be positive and each launcher's flags go with that launcher only."""
    at_least_one(args.jobs, "--jobs")
    at_least_one(args.threads, "--threads")
    launcher = args.launcher or "local"
    if launcher != "local":
        refuse(
            args,
            {"jobs": "--jobs", "vectorise": "--vectorise"},
            f"--launcher {launcher} (it is for --launcher local)",
        )
    if launcher != "dask":
        refuse(
            args, {"scheduler": "--scheduler"}, f"--launcher {launcher} (it is for --launcher dask)"
        )
    if launcher != "slurm":
        refuse(
            args,
            {
                "slurm_partition": "--slurm-partition",
                "slurm_timeout": "--slurm-timeout",
                "slurm_cluster": "--slurm-cluster",
            },
            f"--launcher {launcher} (they are for --launcher slurm)",
        )


def uda_fraction(value: float | None) -> float:
    """The share of each test environment given unlabeled to training: 0 (None) is domain
    generalisation, anything in (0, 1) domain adaptation."""
    if value is None:
        return 0.0
    if not 0.0 <= value < 1.0:
        raise UserError(
            f"--uda-fraction must lie in [0, 1) (the share of each test environment given "
            f"unlabeled to training; 0 = domain generalisation), got {value}"
        )
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"--hparams is not valid JSON ({exc.msg} at column {exc.colno}): {text}"
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"--hparams must be a JSON object like '{{\"lr\": 0.001}}', got {text}")
    return value


def averaging(text: str | None) -> str | dict[str, Any] | None:
    """--averaging: a kind name, or a JSON object with ``kind`` and parameters."""
    if text is None or not text.lstrip().startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"--averaging is not valid JSON ({exc.msg} at column {exc.colno}): {text}"
        ) from None
    return value


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--hparams`` plus ``--weights`` (the ResNet featurizers' ``weights`` hparam)."""
    overrides = json_object(args.hparams)
    if args.weights is not None:
        from bench.start_weights import weights_value  # on use: torch (start-up speed)

        overrides["weights"] = weights_value(args.weights)
    return overrides


def recipe(name: str) -> str:
    """A registered transfer recipe's name (case-insensitive), or one line with a suggestion."""
    # On use: the registries import torch (start-up speed, see ``device``).
    from bench.algorithms import ALGORITHMS
    from bench.transfer.recipes import Recipe

    recipes = [n for n in ALGORITHMS.names() if issubclass(ALGORITHMS.get(n), Recipe)]
    name = name.lower()
    if name not in recipes:
        close = difflib.get_close_matches(name, recipes, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown recipe {name!r}.{hint} Recipes: {', '.join(recipes)}")
    return name


def names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def hub_datasets_reachable(args: argparse.Namespace) -> None:
    """``hf:NAME`` datasets on the hub: one line now, before the registries import torch (seconds
    on a busy machine), when the ``datasets`` package is missing or the hub is unreachable."""
    given = [getattr(args, "dataset", None), *(getattr(args, "datasets", None) or "").split(",")]
    for name in filter(None, given):
        if name.lower().startswith("hf:"):
            location = name[3:].split("?")[0]
            if location and not Path(location).expanduser().exists():  # else a save_to_disk folder
                hub_precheck(location, "a folder written by save_to_disk, passed as hf:FOLDER")
