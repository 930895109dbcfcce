"""Checkpoint state that loads with ``torch.load(weights_only=True)``: RNG states as tensors.

A file planted in a shared output directory must not run code for whoever resumes a
sweep, so checkpoints hold tensors and plain types only, and an unreadable one means
"do not resume" (the runner then restarts the run from scratch).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG the run draws from, as tensors and plain types (checkpoints load with
    weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        # one tensor, not 625 ints: pickling them was a third of a small run's checkpoint time
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss_next),
        "numpy": (
            name,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    if isinstance(internal, torch.Tensor):  # checkpoints before 2026-11-30 hold the tuple
        internal = tuple(internal.tolist())
    random.setstate((version, internal, gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint's state (tensors and plain types only: a planted file cannot run code), or
    None if unreadable."""
    try:
        state = torch.load(
            path, map_location="cpu", weights_only=True
        )  # RNG states must stay CPU tensors
    except (
        Exception
    ) as exc:  # torch raises many types for a corrupt or hostile file; all mean "do not resume"
        log.warning(
            "checkpoint %s is unreadable (%s: %s)",
            path,
            type(exc).__name__,
            str(exc).splitlines()[0][:200] if str(exc) else "",
        )
        return None
    if not isinstance(state, dict) or not {"algorithm", "rng", "step", "wall_s"} <= set(state):
        log.warning("checkpoint %s is not a bench checkpoint", path)
        return None
    return state
