import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import bench
import bench.algorithms
import bench.datasets
from bench.algorithms import ALGORITHMS, Algorithm
from bench.algorithms.base import FAMILIES
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
    assert (
        "erm" in str(err.value) and "Did you mean" in str(err.value) and "Known:" in str(err.value)
    )


def test_names_must_be_snake_case_and_versioned():
    reg = Registry("thing")
    with pytest.raises(ValueError):
        reg.register("BadName")
    with pytest.raises(TypeError):
        reg.register("ok")(type("NoVersion", (), {}))


def test_an_algorithm_declares_one_of_the_families():
    # other helpers' algorithm files use exactly these strings
    assert FAMILIES == (
        "baseline",
        "invariance",
        "alignment",
        "robust optimisation",
        "gradient matching",
        "meta-learning",
        "augmentation",
        "regularisation",
        "transfer",
    )
    registry = type(ALGORITHMS)("algorithm")
    for bad in ({}, {"FAMILY": "invariant"}, {"FAMILY": "Invariance"}):
        cls = type("Bad", (Algorithm,), {"VERSION": 1, **bad})
        with pytest.raises(ValueError, match="needs FAMILY, one of 'baseline', .*'transfer'"):
            registry.register("bad")(cls)
    assert "bad" not in registry
    good = type("Good", (Algorithm,), {"VERSION": 1, "FAMILY": "robust optimisation"})
    assert registry.register("good")(good).NAME == "good"


@pytest.mark.parametrize(
    "package, registry, helpers",
    [
        (bench.algorithms, ALGORITHMS, {"base"}),
        (bench.datasets, DATASETS, {"base", "files"}),
    ],
)
def test_every_module_registers_something(package, registry, helpers):
    registered_modules = {registry.get(name).__module__ for name in registry.names()}
    for module in pkgutil.iter_modules(package.__path__):
        if module.name in helpers or module.name in getattr(package, "_HELPERS", ()):
            continue
        assert f"{package.__name__}.{module.name}" in registered_modules, (
            f"{module.name} registers nothing"
        )


def hf_datasets_problem(module) -> str | None:
    """Why ``module`` (what ``import datasets`` gave) is not Hugging Face's library; None if it is.

    Checks where the file really is, not what its path is called: a checkout or venv in a
    folder named ``bench`` is fine, bench's own package directory is not.
    """
    where = Path(module.__file__).resolve()
    package_dir = Path(bench.__file__).resolve().parent
    if where.is_relative_to(package_dir):
        return f"`import datasets` resolved to {where}, inside bench's package {package_dir}"
    if not callable(getattr(module, "load_dataset", None)):
        return f"`import datasets` resolved to {where}, which has no load_dataset"
    return None


def test_import_datasets_is_huggingface():
    hf = pytest.importorskip("datasets")
    assert hf_datasets_problem(hf) is None


def test_shadowing_datasets_package_is_reported(tmp_path, monkeypatch):
    """A top-level ``datasets`` package earlier on sys.path must not pass for Hugging Face's."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)  # undone last: the fake cannot outlive us
    monkeypatch.delitem(sys.modules, "datasets")
    shadow = importlib.import_module("datasets")
    assert Path(shadow.__file__).parent == tmp_path / "datasets"
    assert "no load_dataset" in hf_datasets_problem(shadow)


def test_bench_own_datasets_package_is_reported():
    """bench.datasets reached as ``datasets`` (bench/ on sys.path) is flagged by location."""
    assert "inside bench's package" in hf_datasets_problem(bench.datasets)
