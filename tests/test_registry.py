import importlib
import pkgutil

import pytest

import bench.algorithms
import bench.datasets
from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.registry import Registry


class _Thing:
    VERSION = 1


def test_duplicate_name_raises():
    reg = Registry("thing")
    reg.register("a")(_Thing)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("Other", (), {"VERSION": 1}))


def test_unknown_name_lists_close_matches_and_all_names():
    with pytest.raises(UserError) as err:
        ALGORITHMS.get("emr")
    assert "erm" in str(err.value) and "Did you mean" in str(err.value) and "Known:" in str(err.value)


def test_names_must_be_snake_case_and_versioned():
    reg = Registry("thing")
    with pytest.raises(ValueError):
        reg.register("BadName")
    with pytest.raises(TypeError):
        reg.register("ok")(type("NoVersion", (), {}))


@pytest.mark.parametrize("package, registry, helpers", [
    (bench.algorithms, ALGORITHMS, {"base"}),
    (bench.datasets, DATASETS, {"base", "files"}),
])
def test_every_module_registers_something(package, registry, helpers):
    registered_modules = {registry.get(name).__module__ for name in registry.names()}
    for module in pkgutil.iter_modules(package.__path__):
        if module.name in helpers or module.name in getattr(package, "_HELPERS", ()):
            continue
        assert f"{package.__name__}.{module.name}" in registered_modules, f"{module.name} registers nothing"


def test_import_datasets_is_huggingface():
    hf = pytest.importorskip("datasets")
    assert hasattr(hf, "load_dataset"), f"`import datasets` resolved to {hf.__file__}, not HuggingFace"
    assert "bench" not in hf.__file__
