"""``bench list`` reads the registries from source, without torch, and says what an import says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from bench import catalog

PROBE = (
    "import sys\n"
    "from bench.cli import main\n"
    "main(['list'])\n"
    "print('torch' in sys.modules, any(m.startswith('bench.algorithms.') for m in sys.modules),"
    " file=sys.stderr)\n"
)


def test_source_listing_equals_the_imported_listing():
    # the guard against drift: anything the source read gets wrong shows up as a difference
    source = catalog.render(*catalog.from_source())
    assert source == catalog.render(*catalog.imported())
    assert not [name for name in sys.modules if name.startswith(catalog.PREFIX)]


def test_list_after_a_source_change_does_not_import_torch(tmp_path):
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
        assert out.stdout.rstrip("\n") == catalog.render(*catalog.imported())
    assert len(list((tmp_path / "cache" / "bench").glob("list-*.txt"))) == 2  # rendered twice


def test_algorithms_are_listed_under_their_family():
    text = catalog.render(*catalog.from_source())
    lines = text.splitlines()
    heading = {"irm": "invariance", "erm": "baseline", "coral": "alignment", "sd": "regularisation"}
    for name, family in heading.items():
        row = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        above = [line for line in lines[:row] if line and not line.startswith(" ")]
        assert above[-1] == family
