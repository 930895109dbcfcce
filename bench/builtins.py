"""Every built-in registration: what the algorithm and dataset registries import on first lookup.

Algorithms and datasets register from their own packages; the transfer tasks and recipes
sit above both (``bench.transfer``) and register from there, so neither package imports
the layer above it. A new family of registrations adds its module here.
"""

import bench.algorithms  # noqa: F401
import bench.datasets  # noqa: F401
import bench.transfer.builtin_recipes  # noqa: F401
import bench.transfer.builtin_tasks  # noqa: F401
