"""Registration does not depend on module names or import order (issue 14).

Transfer tasks cut from a dataset used to be derived when their module was imported, so a
dataset file named ``wb_toy.py`` (imported after ``transfer_tasks.py``, alphabetically) was an
"unknown dataset" as a task's base, while ``a_wb_toy.py`` worked. Tasks are now derived on
first lookup, once every module has registered.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import bench.builtins
from bench import records, runner
from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.registry import Registry, import_plugins
from bench.spec import RuntimeOptions, make_spec

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = """
from bench.transfer.tasks import env_task

env_task("wb_shift", "wb_toy", source=("e0", "e1"), target="e2", shots=(10,))
"""
DATASET = '''
from bench.datasets import register_dataset
from bench.datasets.debug import Debug


@register_dataset("wb_toy")
class WbToy(Debug):
    """debug's data under another name, registered after the task that uses it."""
'''


@pytest.fixture
def wb_plugin(tmp_path, monkeypatch):
    """A plugin package whose task module is imported before the dataset it is cut from."""
    package = tmp_path / "wbplug"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a_tasks.py").write_text(TASKS)
    (package / "wb_toy.py").write_text(DATASET)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(DATASETS.names())
    import_plugins(["wbplug.a_tasks", "wbplug.wb_toy"])  # alphabetical: the task module first
    yield sorted(set(DATASETS.names()) - before)
    for name in set(DATASETS.names()) - before:
        DATASETS._entries.pop(name, None)
        DATASETS._deferred.pop(name, None)
    for module in [m for m in sys.modules if m.partition(".")[0] == "wbplug"]:
        del sys.modules[module]  # the plugin's only: the run imported libraries lazily


def test_a_dataset_registered_after_its_task_is_a_transfer_base(wb_plugin, tmp_path):
    assert wb_plugin == ["wb_shift", "wb_shift_k10", "wb_toy"]
    task = DATASETS.get("wb_shift")
    assert task.INPUT_SHAPE == DATASETS.get("wb_toy").INPUT_SHAPE
    assert task.__module__ == "wbplug.a_tasks"  # the plugin's source is part of run identity
    assert DATASETS.get("wb_shift_k10").SHOTS == 10
    spec = make_spec("finetune", "wb_shift", size="tiny", steps=2, overrides={"pretrain_steps": 2})
    options = RuntimeOptions(output_dir=tmp_path / "out", progress=False, threads=1)
    outcome = runner.run(spec, options)
    assert outcome.status == "ok" and (outcome.run_dir / records.DONE).exists()
    transfer = records.read_json(outcome.run_dir / records.SPEC)["transfer"]
    assert transfer["pretrain"]["data"]["dataset"] == "wb_toy:e0+e1"


def test_a_deferred_name_is_listed_built_once_and_never_registered_twice():
    registry: Registry = Registry("thing")
    built = []

    def build() -> type:
        built.append(1)
        return type("Late", (), {"VERSION": 1})

    registry.register_deferred("late", build)
    assert registry.names() == ["late"] and "late" in registry and built == []
    assert registry.get("LATE") is registry.get("late") and built == [1]
    with pytest.raises(ValueError, match="already registered"):
        registry.register_deferred("late", build)
    registry.register_deferred("later", build)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("later")(type("Eager", (), {"VERSION": 1}))


def test_every_builtin_provider_registers_something():
    """``bench.builtins`` lists what the registries load; each entry must register a class."""
    tree = ast.parse(Path(bench.builtins.__file__).read_text())
    providers = [
        alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    ]
    modules = {
        cls.__module__ for reg in (ALGORITHMS, DATASETS) for cls in map(reg.get, reg.names())
    }
    silent = [p for p in providers if not any(m == p or m.startswith(p + ".") for m in modules)]
    assert providers and not silent, f"providers registering nothing: {silent}"
