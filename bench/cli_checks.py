"""Command-line values checked before anything runs: devices, counts, and flags that fit the mode.

A flag that does not apply to the chosen mode is refused with one line, never ignored
(see ``refuse``); every failure is a UserError, which the CLI prints as one line, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any

from bench.errors import UserError

# Flags that only mean something in some modes: given elsewhere they are refused, never ignored.
SWEEP_ONLY = {
    "selection": "--selection",
    "slurm_partition": "--slurm-partition",
    "slurm_cluster": "--slurm-cluster",
}


def device(text: str) -> str:
    """A device torch knows and this machine has; one line otherwise."""
    import torch

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
            {"jobs": "--jobs"},
            f"--launcher {launcher} (it is for --launcher local)",
        )
    if launcher != "dask":
        refuse(
            args, {"scheduler": "--scheduler"}, f"--launcher {launcher} (it is for --launcher dask)"
        )
    if launcher != "slurm":
        refuse(
            args,
            {"slurm_partition": "--slurm-partition", "slurm_cluster": "--slurm-cluster"},
            f"--launcher {launcher} (they are for --launcher slurm)",
        )


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


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--hparams`` plus ``--weights`` (the ResNet featurizers' ``weights`` hparam)."""
    overrides = json_object(args.hparams)
    if args.weights is not None:
        from bench.start_weights import weights_value

        overrides["weights"] = weights_value(args.weights)
    return overrides


def recipe(name: str) -> str:
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


def names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())
