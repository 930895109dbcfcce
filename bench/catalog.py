"""The ``bench list`` catalogue, cached on disk so that listing does not pay for importing torch.

The catalogue is a pure function of the package's source files: registering an
algorithm or dataset means editing (or adding) a module under ``bench/``. So the
rendered text is stored under a key made of every source file's path, size and
modification time, and a later ``bench list`` with the same sources prints it without
importing the registries (and with them torch, several seconds on a busy CPU). Plugin
modules (``--import``) bypass the cache: their registrations are not in the key.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench"


def fingerprint() -> str:
    """Changes whenever any source file of the package (or the Python version) changes."""
    h = hashlib.sha256(sys.version.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        stat = path.stat()
        h.update(f"{path.relative_to(PACKAGE)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def render() -> str:
    """Algorithms and datasets with their environments, as tables (imports every registered
    module)."""
    from tabulate import tabulate

    # lazy: a cached listing must not pay for the registries (and torch); only a miss does
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    def summary(cls: type) -> str:
        """The docstring's first paragraph on one line."""
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
        return " ".join(doc.split("\n\n")[0].split())

    algorithms = [
        [name, ALGORITHMS.get(name).VERSION, summary(ALGORITHMS.get(name))]
        for name in ALGORITHMS.names()
    ]
    datasets = []
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        test = "leave-one-out" if cls.TEST_ENVS is None else ",".join(cls.TEST_ENVS)
        datasets.append(
            [
                name,
                ", ".join(cls.env_names()),
                test,
                "x".join(map(str, cls.INPUT_SHAPE)),
                cls.NUM_CLASSES,
                cls.FEATURIZER,
                cls.N_STEPS,
            ]
        )
    return "\n".join(
        [
            "Algorithms",
            tabulate(algorithms, headers=["name", "version", "description"]),
            "\nDatasets",
            tabulate(
                datasets,
                headers=[
                    "name",
                    "environments",
                    "test envs",
                    "input",
                    "classes",
                    "featurizer",
                    "steps",
                ],
            ),
            "\nYour own data (README, Bring your own data): folder:PATH "
            "(<domain>/<class>/<image>), "
            "csv:PATH?env=env&label=label, hf:NAME?env=domain&label=label",
        ]
    )


def listing(use_cache: bool = True) -> str:
    """``render()``, read from the cache when the sources are unchanged; written back when
    possible."""
    if not use_cache:
        return render()
    path = cache_dir() / f"list-{fingerprint()}.txt"
    if path.exists():
        return path.read_text()
    text = render()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:  # a read-only home only costs speed
        pass
    return text
