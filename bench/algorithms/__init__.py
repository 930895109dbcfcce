"""Algorithms: one file each. Importing this package registers all of them."""

import importlib
import pkgutil

from bench.algorithms.base import ALGORITHMS, Algorithm, register_algorithm

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ALGORITHMS", "Algorithm", "register_algorithm"]
