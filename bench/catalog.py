"""The ``bench list`` catalogue, read from the package's source without importing torch.

Importing the registries imports torch (seconds on a busy CPU) only to read class
attributes: names, docstrings, versions, families, environments. So the catalogue runs
the registry modules' own source in a private namespace in which every third-party
module (torch, numpy, PIL, ...) is a stand-in that accepts any use (the technique of
Sphinx's ``autodoc_mock_imports``) and ``bench`` modules are read from their files. The
classes and registries that come out are the real ones, minus anything computed by a
library, which the catalogue never shows. They sit in ``sys.modules`` only while they run,
under a private prefix, so a later real import is unaffected. ``tests/test_catalog.py``
checks that this listing equals the one made by importing the registries for real; a
module the stand-ins cannot run makes ``bench list`` import them for real (slower).

The rendered text is also cached under a key made of every source file's path, size and
modification time. Plugin modules (``--import``) are imported for real: their
registrations are not in the package's source.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Mapping

from bench.user_cache import cache_dir

PACKAGE = Path(__file__).resolve().parent
REGISTRIES = ("bench.builtins",)  # every built-in provider, as the registries load them
PREFIX = "bench_catalog_source."  # the source-read modules' names: never a real module's


class _StandIn:
    """Any object of a library the catalogue does not load: every use gives another one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> "_StandIn":
        if name.startswith("__") and name.endswith("__"):  # e.g. __wrapped__, __array__
            raise AttributeError(name)
        return _StandIn()

    def __call__(self, *args: Any, **kwargs: Any) -> "_StandIn":
        return _StandIn()

    def __mro_entries__(self, bases: tuple) -> tuple[type, ...]:
        return (_StandIn,)  # ``class Algorithm(nn.Module)`` subclasses the stand-in

    def __getitem__(self, key: Any) -> "_StandIn":
        return _StandIn()

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def _other(self, *args: Any) -> "_StandIn":
        return _StandIn()

    __or__ = __ror__ = __add__ = __radd__ = __sub__ = __rsub__ = _other
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __pow__ = __neg__ = _other


class _SourceLoader:
    """Runs ``bench`` modules from their files into ``self.modules`` with stand-in libraries."""

    def __init__(self) -> None:
        self.modules: dict[str, types.ModuleType] = {}
        self._builtins = {**vars(builtins), "__import__": self._import}
        # importlib with import_module, which bench's package __init__s and Registry._load call
        self._importlib = types.ModuleType("importlib")

    def load(self, name: str) -> types.ModuleType:
        name = name.removeprefix(PREFIX)  # ``import_module(f"{__name__}.x")`` in a package
        if name in self.modules:
            return self.modules[name]
        parent, _, last = name.rpartition(".")
        folder = self.load(parent).__path__[0] if parent else str(PACKAGE.parent)
        if name in self.modules:  # the parent package imported it, as Python's import does
            return self.modules[name]
        path = Path(folder, last)
        is_package = (path / "__init__.py").is_file()
        path = path / "__init__.py" if is_package else path.with_suffix(".py")
        if not path.is_file():
            raise ImportError(f"No module named {name!r}", name=name)
        # dataclasses look a class's module up in sys.modules while they make the class
        module = sys.modules[PREFIX + name] = types.ModuleType(PREFIX + name)
        module.__file__ = str(path)
        module.__package__ = name if is_package else parent
        module.__builtins__ = self._builtins
        if is_package:
            module.__path__ = [str(path.parent)]
        self.modules[name] = module
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
        if parent:
            setattr(self.modules[parent], last, module)
        return module

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Any = None,
        fromlist: tuple[str, ...] | None = (),
        level: int = 0,
    ) -> Any:
        if level:
            package = globals["__package__"].rsplit(".", level - 1)[0]
            name = f"{package}.{name}" if name else package
        top = name.partition(".")[0]
        if top == "bench":
            module = self.load(name)
            for item in fromlist or ():
                if item != "*" and not hasattr(module, item):
                    self.load(f"{name}.{item}")  # a submodule: ``from bench import hparams``
            return module if fromlist else self.modules["bench"]
        if top == "importlib":
            builtins.__import__(name, globals, locals, fromlist, 0)  # e.g. importlib.metadata
            self._importlib.__dict__.update(vars(importlib), import_module=self.load)
            return self._importlib
        if top in sys.stdlib_module_names:
            return builtins.__import__(name, globals, locals, fromlist, 0)
        return _StandIn()


def from_source() -> tuple[Any, Any, Mapping[str, types.ModuleType]]:
    """(algorithm registry, dataset registry, their modules), read without importing torch."""
    loader = _SourceLoader()
    try:
        for package in REGISTRIES:
            loader.load(package)
    finally:
        for name in [name for name in sys.modules if name.startswith(PREFIX)]:
            del sys.modules[name]
    algorithms = loader.modules["bench.algorithms"].ALGORITHMS
    datasets = loader.modules["bench.datasets"].DATASETS
    return algorithms, datasets, {m.__name__: m for m in loader.modules.values()}


def imported() -> tuple[Any, Any, Mapping[str, types.ModuleType]]:
    """The same, from the real registries (plugins imported with ``--import`` included)."""
    # lazy: only a listing with plugins pays for the registries (and torch)
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    return ALGORITHMS, DATASETS, sys.modules


def render(algorithms: Any, datasets: Any, modules: Mapping[str, types.ModuleType]) -> str:
    """Algorithms under their family headings, then datasets with their environments."""
    from tabulate import tabulate

    def summary(cls: type) -> str:
        """The docstring's first paragraph on one line."""
        doc = (cls.__doc__ or modules[cls.__module__].__doc__ or "").strip()
        return " ".join(doc.split("\n\n")[0].split())

    families = modules[type(algorithms).__module__].FAMILIES  # bench.algorithms.base's
    classes = {name: algorithms.get(name) for name in algorithms.names()}
    groups = [[n for n, cls in classes.items() if cls.FAMILY == f] for f in families]
    rows = [[n, classes[n].VERSION, summary(classes[n])] for group in groups for n in group]
    table = tabulate(rows, headers=["name", "version", "description"]).splitlines()
    lines = ["Algorithms, by family", *("  " + line for line in table[:2])]
    for family, group in zip(families, groups):
        if group:  # one table, so the columns line up across families
            lines += [family, *("  " + table.pop(2) for _ in group)]
    rows = []
    for name in datasets.names():
        cls = datasets.get(name)
        test = "leave-one-out" if cls.TEST_ENVS is None else ",".join(cls.TEST_ENVS)
        shape = "x".join(map(str, cls.INPUT_SHAPE))
        envs = ", ".join(cls.env_names())
        rows.append([name, envs, test, shape, cls.NUM_CLASSES, cls.FEATURIZER, cls.N_STEPS])
    headers = ["name", "environments", "test envs", "input", "classes", "featurizer", "steps"]
    lines += ["\nDatasets", tabulate(rows, headers=headers)]
    lines.append(
        "\nYour own data (README, Bring your own data): folder:PATH (<domain>/<class>/<image>), "
        "csv:PATH?env=env&label=label, hf:NAME?env=domain&label=label"
    )
    return "\n".join(lines)


def fingerprint() -> str:
    """Changes whenever any source file of the package (or the Python version) changes."""
    h = hashlib.sha256(sys.version.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        stat = path.stat()
        h.update(f"{path.relative_to(PACKAGE)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def listing(use_cache: bool = True) -> str:
    """The catalogue from the package's source, cached on disk; ``use_cache=False`` (plugins
    were given) renders the imported registries instead, which hold the plugins too."""
    if not use_cache:
        return render(*imported())
    path = cache_dir() / f"list-{fingerprint()}.txt"
    if path.exists():
        return path.read_text()
    try:
        registries = from_source()
    except Exception:  # a module the stand-ins cannot run: the same text, seconds slower
        registries = imported()
    text = render(*registries)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:  # a read-only home only costs speed
        pass
    return text
