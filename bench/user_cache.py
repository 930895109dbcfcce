"""Small caches of this machine's measurements under ``$XDG_CACHE_HOME/bench`` (default
``~/.cache/bench``): the plan's calibrations, data fingerprints, the algorithm list. Best
effort: a missing, corrupt or read-only cache only costs measuring again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.records import write_json


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench"


def read_cache(name: str) -> dict[str, Any]:
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}


def write_cache(name: str, cache: dict[str, Any]) -> None:
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / name, cache)
    except OSError:
        pass
