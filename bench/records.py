"""Run directories and their files: atomic writes, JSON-lines records, tolerant readers."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

SCHEMA = 1
SPEC, RESULTS, CHECKPOINT, DONE = "spec.json", "results.jsonl", "checkpoint.pt", "done"


def run_dir(output_dir: str | Path, run_id: str) -> Path:
    return Path(output_dir) / "runs" / run_id


def write_atomic(path: Path, write) -> None:
    """Write through ``write(file_object)`` to a temp file, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync, so a crash leaves at most a torn last line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete records; a torn (unparsable) last line from a crash is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: corrupt record on line {i + 1}") from None
    return records


def truncate_records(path: Path, last_step: int) -> None:
    """Keep records up to ``last_step`` (the checkpoint's), atomically."""
    kept = [r for r in read_records(path) if r["step"] <= last_step]
    write_atomic(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


def iter_runs(output_dir: str | Path) -> Iterator[Path]:
    """Every run directory under ``output_dir/runs`` that has a spec."""
    root = Path(output_dir) / "runs"
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / SPEC).exists():
                yield d


def git_commit() -> str | None:
    """HEAD of the checkout this package lives in (suffix ``-dirty`` with local changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def _static_provenance() -> tuple[tuple[str, Any], ...]:
    """Computed once per process: git and package metadata do not change during a sweep."""
    import torch

    import bench

    return (
        ("git", git_commit()),
        ("bench", bench.__version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", _version("torchvision")),
        ("numpy", _version("numpy")),
        ("host", platform.node()),
    )


def provenance(device: str) -> dict[str, Any]:
    """Versions and commit recorded with every run, so a number can be traced to its code."""
    return {**dict(_static_provenance()), "device": device}
