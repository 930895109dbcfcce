"""Datasets: one file per family. Importing this package registers all of them.

This is ``bench.datasets`` on purpose: a top-level ``datasets`` package would shadow
HuggingFace's. Import that one lazily as ``import datasets as hf_datasets``.
"""

import importlib
import pkgutil

from bench.datasets.base import (
    DATASETS,
    EnvData,
    Environment,
    MultiEnvDataset,
    load_dataset,
    register_dataset,
)

# Helpers register no names (domainbed_hparams: tables the image folders import); user_data and
# user_tables register the ``folder:``, ``csv:`` and ``hf:`` prefixes (bring your own data), so
# they are imported here by hand.
_HELPERS = {"base", "files", "domainbed_hparams", "user_data", "user_tables"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")
importlib.import_module(f"{__name__}.user_data")
importlib.import_module(f"{__name__}.user_tables")

__all__ = [
    "DATASETS",
    "EnvData",
    "Environment",
    "MultiEnvDataset",
    "load_dataset",
    "register_dataset",
]
