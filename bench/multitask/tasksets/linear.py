"""A generated linear family with controllable relatedness (Evgeniou & Pontil 2004's model).

Task j has weights ``w_j = s_j * w0 + v_j`` with ``||w0|| = 1`` and ``||v_j|| = r``:
- ``related``: ``s_j = 1``; r small means the tasks share most of their weights.
- ``adversarial``: ``s_j = +1`` for even j, ``-1`` for odd j: the tasks look equally close
  to one shared vector, but a shared ``w0`` fitted to all of them cancels, so a model that
  pulls every task towards it is pulled the wrong way (negative transfer).
- ``unrelated``: ``w_j`` independent random directions of norm 1.
Inputs are N(0, I) per task (separate inputs); regression targets ``x.w_j + noise``,
classification labels ``1[x.w_j + noise > 0]``. Every variant of a seed draws the same
inputs, ``w0`` and directions of ``v_j``, so variants differ only in how tasks relate.
Small data by design: 12 training examples per task in 20 dimensions, so one task alone
cannot determine its weights and pooling is what helps or hurts.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from bench.hparams import Fixed
from bench.multitask.tasks import Task, TaskData, TaskSet, as_tensor, register_task_set, split_rows
from bench.seeding import rng

MODES = ("related", "adversarial", "unrelated")


def unit(gen: np.random.Generator, dim: int) -> np.ndarray:
    v = gen.standard_normal(dim)
    return v / np.linalg.norm(v)


def task_weights(mode: str, relatedness: float, n_tasks: int, dim: int, seed: int) -> np.ndarray:
    """(n_tasks, dim) weights: ``s_j w0 + v_j`` (see the module docstring)."""
    gen = rng("mtl_linear", seed, "weights")
    w0 = unit(gen, dim)
    directions = np.stack([unit(gen, dim) for _ in range(n_tasks)])
    if mode == "unrelated":
        return directions
    signs = np.ones(n_tasks) if mode == "related" else np.where(np.arange(n_tasks) % 2, -1.0, 1.0)
    return signs[:, None] * w0[None, :] + relatedness * directions


class LinearFamily(TaskSet):
    """Base of the registered variants; a variant sets MODE, RELATEDNESS and KIND."""

    MODE: ClassVar[str] = "related"
    RELATEDNESS: ClassVar[float] = 0.2
    KIND: ClassVar[str] = "regression"
    DIM: ClassVar[int] = 20
    N_TASKS: ClassVar[int] = 8
    SIZES: ClassVar[dict[str, int]] = {"train": 12, "val": 100, "test": 1000}
    NOISE: ClassVar[float] = 0.1
    INPUT_SHAPE = (20,)
    N_STEPS = 500
    EVAL_EVERY = 100
    HPARAM_OVERRIDES = {
        "depth": Fixed(0, "linear models: the family is linear"),
        "batch_size": Fixed(0, "full batch: 12 examples per task"),
        "lr": Fixed(0.01, "Adam learning rate for full-batch linear models"),
    }
    REFERENCE = "Evgeniou & Pontil 2004, Regularized multi-task learning (KDD)"

    @classmethod
    def tasks(cls) -> tuple[Task, ...]:
        return tuple(Task(f"task_{j}", cls.KIND) for j in range(cls.N_TASKS))

    def build(self) -> dict[str, TaskData]:
        weights = task_weights(self.MODE, self.RELATEDNESS, self.N_TASKS, self.DIM, self.data_seed)
        n = sum(self.SIZES.values())
        out = {}
        for j, task in enumerate(self.TASKS):
            gen = rng("mtl_linear", self.data_seed, "inputs", j)
            x = gen.standard_normal((n, self.DIM))
            target = x @ weights[j] + self.NOISE * gen.standard_normal(n)
            if self.KIND == "classification":
                y = as_tensor(target > 0, dtype=torch.long)
            else:
                y = as_tensor(target)
            out[task.name] = split_rows(as_tensor(x), y, self.SIZES)
        return out


def _variant(name: str, mode: str, kind: str, relatedness: float = 0.2) -> type[LinearFamily]:
    cls = type(
        f"Linear_{name}",
        (LinearFamily,),
        {"MODE": mode, "KIND": kind, "RELATEDNESS": relatedness, "VERSION": 1},
    )
    cls.TASKS = cls.tasks()
    cls.__doc__ = f"Linear family, {mode} tasks (||v_j|| = {relatedness} ||w0||), {kind}."
    return register_task_set(name)(cls)


for _mode in MODES:
    _variant(f"linear_{_mode}", _mode, "regression")
    _variant(f"linear_{_mode}_cls", _mode, "classification")
