"""Canonical JSON, stable hashes and named random streams.

Every random choice in the harness is drawn from a stream named by what it is for
(e.g. ``("minibatch", trial_seed, env, epoch)``), so adding a new stream never shifts
an existing one and a resumed run redraws exactly what an uninterrupted one drew.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default, allow_nan=False)


def stable_hash(*parts: Any) -> int:
    """A 63-bit integer hash that is the same on every machine and Python process."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rng(*parts: Any) -> np.random.Generator:
    """A numpy Generator for the stream named by ``parts``."""
    return np.random.Generator(np.random.PCG64(stable_hash(*parts)))


def torch_generator(*parts: Any):
    """A CPU torch.Generator for the stream named by ``parts``."""
    import torch

    return torch.Generator().manual_seed(stable_hash(*parts))


def is_finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
