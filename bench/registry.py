"""A generic name -> class registry. No domain imports: algorithms and datasets each own one."""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Callable, Generic, TypeVar

from bench.errors import UserError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """Maps lowercase snake_case names to classes; loads its package's modules on first lookup."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package  # modules of this package are imported lazily for registration
        self._entries: dict[str, type[T]] = {}
        self._loaded = package is None

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase snake_case")

        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            if not isinstance(getattr(cls, "VERSION", None), int):
                raise TypeError(f"{self.kind} {name!r}: class {cls.__name__} needs an integer VERSION")
            cls.NAME = name
            self._entries[name] = cls
            return cls

        return decorator

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._package)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


def import_plugins(modules: list[str]) -> None:
    """Import user modules (``--import mylab.algos``) so their decorators register classes."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"cannot import plugin module {module!r}: {exc}") from exc
