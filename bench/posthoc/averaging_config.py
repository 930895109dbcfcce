"""The weight-averaging run option: kinds, their parameters and defaults (part of a run's
identity, so light enough for ``bench/spec.py`` to import)."""

from __future__ import annotations

from typing import Any, Mapping

from bench.errors import UserError
from bench.hparams import AT_LEAST_ONE, NON_NEGATIVE, Domain, Fixed, Param, apply_overrides

FRACTION = Domain(0, 1, open_high=True)
AVERAGING: dict[str, dict[str, Param]] = {
    # SWA (Izmailov et al., 2018): uniform average of every iterate from the start step on;
    # 0.75 of the budget, the paper's usual start.
    "swa": {"start_fraction": Fixed(0.75, "first averaged step / steps", domain=FRACTION)},
    # Exponential moving average of the weights, updated after every step.
    "ema": {"decay": Fixed(0.999, "weight of the running average per step", domain=FRACTION)},
    # SWAD (Cha et al., 2021): dense average over the validation-loss valley; the authors'
    # config.yaml values (bench/posthoc/swad.py).
    "swad": {
        "n_converge": Fixed(3, "segments that must rise after the valley's start", AT_LEAST_ONE),
        "n_tolerance": Fixed(
            6, "segments whose minimum loss must stay under the threshold", AT_LEAST_ONE
        ),
        "tolerance_ratio": Fixed(
            0.3, "threshold = valley start's mean loss x (1 + ratio)", NON_NEGATIVE
        ),
    },
}


def resolve_averaging(
    value: str | Mapping[str, Any] | None, holdout_fraction: float
) -> dict[str, Any]:
    """``{}`` for none, else ``{"kind": ..., every parameter}`` with defaults filled in and checked.

    ``value`` is a kind name (``"swad"``) or a mapping with ``kind`` and overrides. SWAD
    finds its window on the training environments' ``out`` splits, so it needs a holdout.
    """
    if not value:
        return {}
    config = {"kind": value} if isinstance(value, str) else dict(value)
    kind = config.pop("kind", None)
    if kind not in AVERAGING:
        raise UserError(f"unknown weight averaging {kind!r}; known: {', '.join(AVERAGING)}")
    if kind == "swad" and holdout_fraction == 0:
        raise UserError("swad picks its window on held-out training data; use a holdout > 0")
    space = AVERAGING[kind]
    return {
        "kind": kind,
        **apply_overrides(space, {k: p.default for k, p in space.items()}, config),
    }
