"""A generated teacher-network family: the setting of Lippl & Lindsey (NeurIPS 2024).

A one-hidden-layer ReLU teacher with unit-norm units ``u_k`` on inputs x ~ N(0, I_d);
a task is ``y = sum_k a_k (relu(u_k . x) - E relu)`` over its own set of units, signs
``a_k = +-1``, plus a little noise. The ``aux`` task uses ``N_AUX_UNITS`` units with many
examples; the ``main`` task (few examples) reuses ``N_SHARED`` of them and adds ``N_NEW``
units of its own:
- ``teacher_nested``: main uses 2 of aux's 6 units and nothing new (the paper's "nested
  sparsity" task, where pretrain-then-finetune with small rescaling should shine);
- ``teacher_mixed``: main uses 2 of aux's units and 2 new ones (shared and task-specific
  features: reuse helps only in part);
- ``teacher_disjoint``: main shares no unit with aux (a control for negative transfer).
Tasks draw separate inputs; every variant of a seed draws the same units and inputs.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from bench.hparams import Fixed
from bench.multitask.tasks import Task, TaskData, TaskSet, as_tensor, register_task_set, split_rows
from bench.seeding import rng

_MEAN_RELU = 1.0 / math.sqrt(2.0 * math.pi)  # E relu(z), z ~ N(0, 1)


class TeacherFamily(TaskSet):
    """Base of the registered variants; a variant sets N_SHARED and N_NEW."""

    N_SHARED: ClassVar[int] = 2
    N_NEW: ClassVar[int] = 0
    N_AUX_UNITS: ClassVar[int] = 6
    DIM: ClassVar[int] = 15
    SIZES: ClassVar[dict[str, dict[str, int]]] = {
        "main": {"train": 64, "val": 200, "test": 2000},
        "aux": {"train": 2048, "val": 200, "test": 2000},
    }
    NOISE: ClassVar[float] = 0.05
    TASKS = (Task("main", "regression"), Task("aux", "regression"))
    MAIN_TASK = "main"
    INPUT_SHAPE = (15,)
    N_STEPS = 2000
    EVAL_EVERY = 200
    HPARAM_OVERRIDES = {
        "depth": Fixed(1, "one hidden ReLU layer, as the teacher (the paper's student)"),
        "width": Fixed(100, "hidden width"),
        "batch_size": Fixed(64, "examples per task per step"),
    }
    REFERENCE = (
        "Lippl & Lindsey 2024, Inductive biases of multi-task learning and finetuning "
        "(teacher-student ReLU networks)"
    )

    def units(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Teacher units and signs of aux, of main: main's shared units are aux's first N_SHARED."""
        gen = rng("mtl_teacher", self.data_seed, "units")
        n_units = self.N_AUX_UNITS + 4  # room for up to 4 main-only units; fixed across variants
        u = gen.standard_normal((n_units, self.DIM))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        signs = np.where(gen.random(n_units) < 0.5, -1.0, 1.0)
        aux = np.arange(self.N_AUX_UNITS)
        main = np.concatenate([aux[: self.N_SHARED], self.N_AUX_UNITS + np.arange(self.N_NEW)])
        return u, signs, aux, main

    def build(self) -> dict[str, TaskData]:
        u, signs, aux, main = self.units()
        out = {}
        for name, chosen in (("main", main), ("aux", aux)):
            sizes = self.SIZES[name]
            gen = rng("mtl_teacher", self.data_seed, "inputs", name)
            x = gen.standard_normal((sum(sizes.values()), self.DIM))
            hidden = np.maximum(x @ u[chosen].T, 0.0) - _MEAN_RELU
            y = hidden @ signs[chosen] + self.NOISE * gen.standard_normal(len(x))
            out[name] = split_rows(as_tensor(x), as_tensor(y), sizes)
        return out


@register_task_set("teacher_nested")
class TeacherNested(TeacherFamily):
    """Main reuses 2 of the auxiliary task's 6 teacher units and has none of its own."""

    VERSION = 1


@register_task_set("teacher_mixed")
class TeacherMixed(TeacherFamily):
    """Main reuses 2 auxiliary units and adds 2 of its own."""

    VERSION = 1
    N_NEW = 2


@register_task_set("teacher_disjoint")
class TeacherDisjoint(TeacherFamily):
    """Main shares no unit with the auxiliary task: pooling can only hurt or not matter."""

    VERSION = 1
    N_SHARED = 0
    N_NEW = 2
