"""Run files: atomic replacement, exact on-disk formats, truncation on resume, provenance.

Written against surviving mutants of bench/records.py (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench import records


def _lines(path: Path, steps) -> None:
    path.write_text("".join(json.dumps({"step": s, "v": s / 2}) + "\n" for s in steps))


def test_truncate_keeps_records_up_to_the_checkpoint_step_and_drops_a_torn_line(tmp_path):
    path = tmp_path / records.RESULTS
    _lines(path, [0, 1, 2, 3])
    with open(path, "a") as f:
        f.write('{"step": 4')
    records.truncate_records(path, 2)
    kept = "".join(json.dumps({"step": s, "v": s / 2}) + "\n" for s in [0, 1, 2])
    assert path.read_text() == kept


def test_write_json_is_indented_sorted_and_newline_terminated(tmp_path):
    path = tmp_path / "spec.json"
    records.write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert records.read_json(path) == {"a": [1, 2], "b": 1}


def test_write_atomic_fsyncs_the_new_content_before_replacing(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    seen = []
    real_fsync = os.fsync

    def spy(fd):
        seen.append((os.fstat(fd).st_size, path.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    records.write_atomic(path, lambda f: f.write(b"new content"))
    assert seen == [(len(b"new content"), b"old")] and path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["f"]


def test_write_atomic_leaves_the_old_file_and_no_temp_file_when_writing_fails(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.write_atomic(path, fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=Path(records.__file__).parent, capture_output=True, text=True
    )


def test_git_commit_is_head_of_this_checkout_with_dirty_flag():
    head = _git("rev-parse", "HEAD")
    if head.returncode != 0:
        pytest.skip("bench is not installed from a git checkout")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    assert records.git_commit() == head.stdout.strip() + ("-dirty" if dirty else "")


def test_git_commit_marks_tracked_changes_as_dirty(tmp_path, monkeypatch):
    """A checkout with an edited tracked file gives ``<sha>-dirty``; untracked files do not
    count."""

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    git("init", "-q")
    (tmp_path / "records.py").write_text("v1")
    git("add", "records.py")
    git("commit", "-qm", "v1")
    sha = git("rev-parse", "HEAD").strip()
    monkeypatch.setattr(records, "__file__", str(tmp_path / "records.py"))
    (tmp_path / "untracked").write_text("x")
    assert records.git_commit() == sha
    (tmp_path / "records.py").write_text("v2")
    assert records.git_commit() == sha + "-dirty"


def test_git_commit_is_none_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "__file__", str(tmp_path / "records.py"))
    assert records.git_commit() is None
    monkeypatch.undo()

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert records.git_commit() is None


def test_provenance_names_versions_commit_host_and_device():
    import platform

    import torch

    import bench

    prov = records.provenance("cpu")
    assert prov["device"] == "cpu" and prov["bench"] == bench.__version__
    assert prov["torch"] == torch.__version__ and prov["python"] == platform.python_version()
    assert prov["git"] == records.git_commit() and prov["host"] == platform.node()
    assert prov["numpy"] == __import__("numpy").__version__ and prov["torchvision"]
