"""``bench list`` reads the registries from source, without torch, and says what an import says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from bench import catalog

PROBE = (
    "import sys\n"
    "from bench.cli import main\n"
    "main(['list'])\n"
    "print('torch' in sys.modules, any(m.startswith('bench.algorithms.') for m in sys.modules),"
    " file=sys.stderr)\n"
)


@pytest.fixture(scope="module")
def imported_listing() -> str:
    """The listing of the imported registries, in a fresh interpreter: other tests register
    temporary algorithms and datasets in this one."""
    code = "from bench import catalog; print(catalog.render(*catalog.imported()), end='')"
    env = {**os.environ, "PYTHONPATH": str(catalog.PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_source_listing_equals_the_imported_listing(imported_listing):
    # the guard against drift: anything the source read gets wrong shows up as a difference
    assert catalog.render(*catalog.from_source()) == imported_listing
    assert not [name for name in sys.modules if name.startswith(catalog.PREFIX)]


def test_list_after_a_source_change_does_not_import_torch(tmp_path, imported_listing):
    package = tmp_path / "src" / "bench"
    shutil.copytree(catalog.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "PYTHONPATH": str(package.parent),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }

    def bench_list() -> subprocess.CompletedProcess:
        run = [sys.executable, "-c", PROBE]
        return subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True)

    first = bench_list()
    erm = package / "algorithms" / "erm.py"
    later = time.time() + 10
    os.utime(erm, (later, later))  # an edit: the cached listing no longer matches the source
    again = bench_list()
    for out in (first, again):
        assert out.returncode == 0, out.stderr
        assert out.stderr.split() == ["False", "False"], out.stderr  # no torch, no registry import
        assert out.stdout.rstrip("\n") == imported_listing
    assert len(list((tmp_path / "cache" / "bench").glob("list-*.txt"))) == 2  # rendered twice


def test_algorithms_are_listed_under_their_family():
    text = catalog.render(*catalog.from_source())
    lines = text.splitlines()
    heading = {"irm": "invariance", "erm": "baseline", "coral": "alignment", "sd": "regularisation"}
    for name, family in heading.items():
        row = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        above = [line for line in lines[:row] if line and not line.startswith(" ")]
        assert above[-1] == family
