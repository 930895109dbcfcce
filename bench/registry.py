"""A generic name -> class registry. No domain imports: algorithms and datasets each own one."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable, Generic, Iterable, TypeVar

from bench.errors import UserError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """Maps lowercase snake_case names to classes; imports its provider module (``bench.builtins``
    for algorithms and datasets) on first lookup, so lookups never depend on import order."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package  # imported on first lookup: it imports every built-in provider
        self._entries: dict[str, type[T]] = {}
        self._deferred: dict[str, Callable[[], type[T]]] = {}  # built on first lookup
        self._loaded = package is None
        self._prefixes: dict[str, Callable[[str], type[T]]] = {}
        self._made: dict[str, type[T]] = {}  # classes built from ``prefix:...`` names, by NAME
        self._pending: dict[str, str] = {}  # NAME -> SOURCE, built on first lookup (workers)

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase snake_case")

        def decorator(cls: type[T]) -> type[T]:
            if name in self._deferred or (name in self._entries and self._entries[name] is not cls):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by "
                    f"{self._entries.get(name, 'a deferred definition')!r}"
                )
            if not isinstance(getattr(cls, "VERSION", None), int):
                raise TypeError(
                    f"{self.kind} {name!r}: class {cls.__name__} needs an integer VERSION"
                )
            cls.NAME = name
            self._entries[name] = cls
            return cls

        return decorator

    def register_deferred(self, name: str, build: Callable[[], type[T]]) -> None:
        """Register ``name`` now and build its class on first lookup.

        For classes derived from other entries (a transfer task cut from a dataset): the
        derivation runs once every provider has registered, so it never depends on the order
        in which modules (built-in or plugin) happen to be imported.
        """
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase snake_case")
        if name in self._entries or name in self._deferred:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._deferred[name] = build

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._package)

    def register_prefix(self, prefix: str, factory: Callable[[str], type[T]]) -> None:
        """Names ``prefix:REST`` are built by ``factory(REST)`` (``folder:PATH``) on first lookup.

        The factory's class carries ``NAME`` (canonical, what specs record) and ``SOURCE`` (a
        name that rebuilds it in any process, e.g. with an absolute path; see ``sources``).
        """
        if not _NAME.match(prefix):
            raise ValueError(f"{self.kind} prefix {prefix!r} must be lowercase snake_case")
        self._prefixes[prefix] = factory

    def get(self, name: str) -> type[T]:
        self._load()
        if name in self._entries:
            return self._entries[name]
        if name in self._deferred:
            return self.register(name)(self._deferred.pop(name)())
        if name in self._pending:
            return self.get(self._pending.pop(name))
        prefix, sep, rest = name.partition(":")
        if sep and prefix.lower() in self._prefixes:
            return self._prefixed(prefix.lower(), name, rest)
        folded = [n for n in self._known() if n.lower() == name.lower()]
        if len(folded) == 1:  # PACS -> pacs: names are lowercase, users type them as papers do
            return self.get(folded[0])
        lowered = {n.lower(): n for n in self._known()}
        close = difflib.get_close_matches(name.lower(), lowered, n=3, cutoff=0.5)
        hint = (
            f" Did you mean {', '.join(lowered[c] for c in close)}?"
            if close
            else " A plugin's? Add --import MODULE_OR_FILE."
        )
        forms = ", ".join(p + ":..." for p in sorted(self._prefixes))
        forms = f" Or one of {forms}." if forms else ""
        known = ", ".join(self.names())
        raise UserError(f"unknown {self.kind} {name!r}.{hint}{forms} Known: {known}")

    def canonical(self, name: str) -> str:
        """The name a spec records: ``pacs`` for ``PACS``, ``folder:a`` for ``folder:/x/a``."""
        cls = self.get(name)
        folded = [n for n in self._entries if n.lower() == name.lower()]
        return name if name in self._entries else folded[0] if len(folded) == 1 else cls.NAME

    def _prefixed(self, prefix: str, name: str, rest: str) -> type[T]:
        """``prefix:REST`` whose location exists here is read again on every lookup (a relative
        one is the current directory's; the factory reuses a class only for the same absolute
        location and content); otherwise it is a label made here (a spec's or a board's, a hub
        id) when there is one, else it goes to the factory."""
        location = Path(rest.partition("?")[0]).expanduser()
        if name in self._made and not location.exists():
            return self._made[name]
        return self._build(prefix, rest)

    def _build(self, prefix: str, rest: str) -> type[T]:
        """The factory's class, replacing one of the same location (its content changed, or it
        moved); two live locations may not share a NAME."""
        cls = self._prefixes[prefix](rest)
        known = self._made.get(cls.NAME)
        if known is cls:
            return known
        if known is not None and known.SOURCE == cls.SOURCE:
            self._made[cls.NAME] = cls  # the same location with new content
            return cls
        if known is not None and getattr(known, "location_exists", lambda: False)():
            raise UserError(
                f"{self.kind} {cls.SOURCE} and {known.SOURCE} both get the name {cls.NAME} (names "
                "leave out the folder above, so a moved copy keeps its run ids); rename one of them"
            )
        self._made[cls.NAME] = cls  # new, or the same data moved (the old location is gone)
        return cls

    def sources(self) -> dict[str, str]:
        """NAME -> SOURCE of every ``prefix:`` class made here: what rebuilds them in a worker."""
        return {name: cls.SOURCE for name, cls in self._made.items()}

    def expect(self, sources: dict[str, str]) -> None:
        """Build these classes when their NAME is first looked up (a worker reads what it runs)."""
        self._pending.update({n: s for n, s in sources.items() if n not in self._made})

    def names(self) -> list[str]:
        self._load()
        return sorted(self._known())

    def _known(self) -> set[str]:
        return set(self._entries) | set(self._deferred)

    def __contains__(self, name: str) -> bool:
        self._load()
        if any(
            name in known for known in (self._entries, self._deferred, self._made, self._pending)
        ):
            return True
        prefix, sep, _ = name.partition(":")
        if not (sep and prefix.lower() in self._prefixes):
            return False
        try:  # e.g. a board read in a process that never saw the folder
            self.get(name)
        except UserError:
            return False
        return True


def plugin_reference(text: str) -> str:
    """``--import`` value as workers need it: a module name as given, a ``.py`` file as an absolute
    path."""
    if text.endswith(".py"):
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"--import {text}: no such file")
        return str(path)
    return text


def import_plugins(modules: Iterable[str]) -> None:
    """Import user modules (``--import mylab.algos`` or ``--import path/to/algos.py``): this runs
    their code.

    Their decorators register algorithms and datasets. Importing twice is a no-op, so
    every worker process can call this before it runs anything.
    """
    for module in modules:
        try:
            _import(module)
        except UserError:
            raise
        except SyntaxError as exc:
            raise UserError(
                f"plugin {module}: syntax error at {exc.filename}:{exc.lineno}: {exc.msg}"
            ) from None
        except ImportError as exc:
            raise UserError(
                f"cannot import plugin module {module!r}: {exc} (is its folder on "
                "PYTHONPATH? or pass a .py path)"
            ) from None
        except Exception as exc:  # the plugin's own code failed: say where, in one line
            raise UserError(
                f"plugin {module} failed while importing: {type(exc).__name__}: {exc}"
            ) from None


def _import(module: str) -> None:
    if not module.endswith(".py"):
        importlib.import_module(module)
        return
    path = Path(plugin_reference(module))
    name = (
        "bench_plugin_"
        + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        + "_"
        + re.sub(r"\W", "_", path.stem)
    )
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[name]
        raise
