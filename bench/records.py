"""Run directories and their files: atomic writes, JSON-lines records, strict readers.

A run directory is trusted only when it is whole: a readable spec of the current
identity scheme, records for exactly the steps the spec implies (a diverged run: a
prefix of them), and a ``done`` file. ``check_run`` says what is wrong otherwise,
so selection never builds a number from a short or corrupt run.
"""

from __future__ import annotations

import functools
import io
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

from bench import __version__
from bench.errors import UserError

SCHEMA = 2
IDENTITY = (
    2  # the run-id scheme (see spec.RunSpec); runs written under another are refused, never mixed
)
SPEC, RESULTS, CHECKPOINT, DONE = "spec.json", "results.jsonl", "checkpoint.pt", "done"
_TEMP_PREFIXES = tuple(f".{name}." for name in (SPEC, RESULTS, CHECKPOINT, DONE))


class DamagedRun(UserError):
    """A run directory's files are unreadable or inconsistent; the message says which and why."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: shared output directories stay shared


def record_steps(steps: int, eval_every: int) -> list[int]:
    """The steps a complete run records: every ``eval_every``-th from 0, and the last."""
    return [s for s in range(steps) if s % eval_every == 0 or s == steps - 1]


def run_dir(output_dir: str | Path, run_id: str) -> Path:
    return Path(output_dir) / "runs" / run_id


def write_atomic(path: Path, write) -> None:
    """Write through ``write(file_object)`` to a temp file, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; every file of a run gets the same mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def torch_bytes(obj: Any) -> bytes:
    """What ``torch.save(obj, path)`` writes, serialised in memory."""
    import torch  # lazy: reports read records without importing torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically, serialised in memory first: one write instead of torch's many
    small ones to a file (a tenth of a small run's record time; same bytes)."""
    write_bytes(path, torch_bytes(obj))


def write_json(path: Path, obj: Any) -> None:
    write_atomic(
        path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    )


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync, so a crash leaves at most a torn last line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line (a crash mid-append) is ignored, a corrupt earlier one
    raises DamagedRun."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedRun(f"{path}: unreadable ({exc})") from None
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if i != len(lines) - 1:
                raise DamagedRun(f"{path}: corrupt record on line {i + 1}") from None
            continue
        records.append(record)
    return records


def read_spec(directory: Path) -> dict[str, Any]:
    """A run's spec.json, checked to be of the current identity scheme; DamagedRun otherwise."""
    path = Path(directory) / SPEC
    try:
        info = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedRun(f"{path}: unreadable ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict) or "run_id" not in info:
        raise DamagedRun(f"{path}: not a run spec")
    if info["spec"].get("identity") != IDENTITY:
        raise LegacyRun(f"{path} was written by an older bench")
    return info


def check_run(
    directory: Path, spec: Mapping[str, Any] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(status, records) of a run directory: ok, diverged, partial, or DamagedRun saying what is
    wrong.

    A finished run must have records for exactly the steps its spec implies (a diverged
    one: a prefix of them, ending at the step it diverged); records of an unfinished run
    must be such a prefix too. ``spec`` (the request) must equal the recorded one.
    """
    directory = Path(directory)
    info = read_spec(directory)
    if directory.name != info["run_id"]:
        raise DamagedRun(f"{directory}: spec.json belongs to run {info['run_id']}")
    if spec is not None and dict(spec) != info["spec"]:
        raise DamagedRun(f"{directory / SPEC}: recorded spec differs from the requested one")
    found = read_records(directory / RESULTS)
    steps = [r.get("step") for r in found]
    expected = record_steps(info["spec"]["steps"], info["spec"]["eval_every"])
    if steps != expected[: len(steps)] or any(r.get("run_id") != info["run_id"] for r in found):
        raise DamagedRun(
            f"{directory / RESULTS}: records at steps {_span(steps)} do not follow the "
            f"expected {_span(expected)}"
        )
    if not (directory / DONE).exists():
        return "partial", found
    try:
        done = read_json(directory / DONE)
        status = done["status"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedRun(f"{directory / DONE}: unreadable ({exc})") from None
    if status == "ok" and steps != expected:
        raise DamagedRun(
            f"{directory / RESULTS}: finished run has {len(steps)} of {len(expected)} evaluations"
        )
    if status not in ("ok", "diverged"):
        raise DamagedRun(f"{directory / DONE}: unknown status {status!r}")
    return status, found


def _span(steps: list[Any]) -> str:
    if len(steps) <= 4:
        return str(steps)
    return f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)})"


def clean_temp_files(directory: Path) -> None:
    """Remove temp files an interrupted atomic write left behind (call while holding the run's
    lock)."""
    for path in Path(directory).iterdir():
        if path.name.startswith(_TEMP_PREFIXES):
            path.unlink(missing_ok=True)


def reset_run(directory: Path) -> None:
    """Forget a run's state (spec, records, checkpoint, done) so it is trained again from
    scratch."""
    for name in (SPEC, RESULTS, CHECKPOINT, DONE):
        (Path(directory) / name).unlink(missing_ok=True)
    clean_temp_files(directory)


class LegacyRun(UserError):
    """A run written under an older run-id scheme: its id does not cover everything that made it."""


def check_output_dir(output_dir: str | Path) -> None:
    """Refuse an output directory holding runs of an older identity scheme: they must not be mixed
    in."""
    old = []
    for d in iter_runs(output_dir):
        try:
            read_spec(d)
        except LegacyRun:
            old.append(d.name)
        except DamagedRun:
            continue  # reported and repaired run by run
    if old:
        raise LegacyRun(
            f"{output_dir} holds {len(old)} run(s) written by an older bench whose run "
            "ids ignore resolved hparams "
            f"and data (e.g. runs/{old[0]}); use a new --output-dir, or move "
            f"{Path(output_dir) / 'runs'} away and re-run"
        )


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
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
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
    import torch  # lazy: reports read records without importing torch

    return (
        ("git", git_commit()),
        ("bench", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", _version("torchvision")),
        ("numpy", _version("numpy")),
        ("host", platform.node()),
    )


def provenance(device: str) -> dict[str, Any]:
    """Versions and commit recorded with every run, so a number can be traced to its code."""
    return {**dict(_static_provenance()), "device": device}
