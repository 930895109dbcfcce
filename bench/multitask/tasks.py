"""Multi-task sets: several tasks (each with its own label, loss and metric) built together.

A task set is not a ``MultiEnvDataset``: environments share one label and differ in
distribution, while tasks differ in what is predicted. Each task has its own train, val
and test splits; inputs may be shared (MNIST attributes: one image, several labels) or
separate (the linear family: each task draws its own examples). Task sets are registered
in ``TASK_SETS`` (built-ins in ``bench/multitask/tasksets/``), seeded by the trial seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.hparams import Param
from bench.registry import Registry

TASK_SETS: Registry["TaskSet"] = Registry("task set", "bench.multitask.tasksets")
register_task_set = TASK_SETS.register

SPLITS = ("train", "val", "test")
KINDS = ("classification", "regression")


@dataclass(frozen=True)
class Task:
    """One task: ``n_outputs`` is the number of classes (1 = one logit, labels {0, 1}) or 1 for
    regression."""

    name: str
    kind: str
    n_outputs: int = 1

    @property
    def metric(self) -> str:
        return "acc" if self.kind == "classification" else "mse"

    def loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        if self.kind == "regression":
            return F.mse_loss(outputs[:, 0], y)
        if self.n_outputs == 1:
            return F.binary_cross_entropy_with_logits(outputs[:, 0], y.float())
        return F.cross_entropy(outputs, y)

    def evaluate(self, outputs: Tensor, y: Tensor) -> float:
        """Accuracy for classification, mean squared error for regression."""
        if self.kind == "regression":
            return float(F.mse_loss(outputs[:, 0], y))
        predicted = (outputs[:, 0] > 0).long() if self.n_outputs == 1 else outputs.argmax(1)
        return float((predicted == y).float().mean())

    def score(self, value: float) -> float:
        """Higher is better: accuracy itself, minus the error of a regression."""
        return value if self.kind == "classification" else -value


@dataclass(frozen=True)
class Split:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


TaskData = dict[str, Split]  # split name -> examples of one task


class TaskSet:
    """Base: subclasses declare ``TASKS`` and ``INPUT_SHAPE`` and build ``{task: {split: Split}}``.

    ``MAIN_TASK`` is the task a pretrain-then-finetune run fine-tunes on (the others are its
    auxiliary tasks). ``HPARAM_OVERRIDES`` replaces method defaults for this set (e.g. a linear
    trunk for the linear family); everything it sets is part of the run's identity.
    """

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    TASKS: ClassVar[tuple[Task, ...]] = ()
    INPUT_SHAPE: ClassVar[tuple[int, ...]] = ()
    MAIN_TASK: ClassVar[str | None] = None  # None: the first task
    N_STEPS: ClassVar[int] = 1000
    EVAL_EVERY: ClassVar[int] = 100
    HPARAM_OVERRIDES: ClassVar[dict[str, Param]] = {}
    REFERENCE: ClassVar[str] = ""

    def __init__(self, root: str | None, data_seed: int, size: str = "full") -> None:
        self.root, self.data_seed, self.size = root, data_seed, size
        self.data: dict[str, TaskData] = self.build()
        missing = [t.name for t in self.TASKS if set(self.data.get(t.name, {})) != set(SPLITS)]
        if missing:
            raise TypeError(f"{self.NAME}: build() lacks the splits {SPLITS} of {missing}")

    def build(self) -> dict[str, TaskData]:
        raise NotImplementedError

    @classmethod
    def main_task(cls) -> str:
        return cls.MAIN_TASK or cls.TASKS[0].name

    @classmethod
    def task_names(cls) -> list[str]:
        return [t.name for t in cls.TASKS]

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        """Files the set reads (fingerprinted into the run id); none for generated sets."""
        return []

    def describe(self) -> dict[str, Any]:
        return {t.name: {s: len(self.data[t.name][s]) for s in SPLITS} for t in self.TASKS}


def split_rows(x: Tensor, y: Tensor, sizes: dict[str, int]) -> TaskData:
    """Consecutive rows of ``x``/``y`` as the train, val and test splits of the given sizes."""
    out, start = {}, 0
    for name in SPLITS:
        out[name] = Split(x[start : start + sizes[name]], y[start : start + sizes[name]])
        start += sizes[name]
    return out


def as_tensor(array: Any, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.as_tensor(array, dtype=dtype)
