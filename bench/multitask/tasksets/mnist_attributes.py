"""MNIST multi-attribute tasks: one image, three labels (digit, parity, digit > 4).

Shared inputs: every task sees the same images. Train and val are disjoint random subsets
of MNIST's training set, test a random subset of its test set, all drawn per trial seed
(small by default, 2000 training images, so sharing can matter). The attributes are
functions of the digit, so the tasks are related by construction and to different
degrees: parity and "> 4" are both coarsenings of the digit, unrelated to each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.datasets.files import MNISTFiles, load_mnist
from bench.hparams import Fixed
from bench.multitask.tasks import Split, Task, TaskData, TaskSet, as_tensor, register_task_set
from bench.seeding import rng

ATTRIBUTES = {
    "digit": lambda d: d,
    "parity": lambda d: d % 2,
    "greater_than_4": lambda d: (d > 4).astype(np.int64),
}


@register_task_set("mnist_attributes")
class MNISTAttributes(TaskSet):
    VERSION = 1
    TASKS = (
        Task("digit", "classification", 10),
        Task("parity", "classification", 1),
        Task("greater_than_4", "classification", 1),
    )
    INPUT_SHAPE = (1, 28, 28)
    SIZES = {"full": (2000, 1000, 2000), "tiny": (300, 100, 200)}  # train, val, test
    N_STEPS = 1000
    EVAL_EVERY = 100
    HPARAM_OVERRIDES = {"width": Fixed(256, "hidden width"), "depth": Fixed(2, "hidden layers")}
    REFERENCE = "MNIST (LeCun et al. 1998), attributes of the digit label"

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        return MNISTFiles.data_paths(root)

    def build(self) -> dict[str, TaskData]:
        x_train, y_train, x_test, y_test = load_mnist(self.root)
        n_train, n_val, n_test = self.SIZES[self.size]
        pick = rng("mtl_mnist", self.data_seed, "train").permutation(len(x_train))
        test = rng("mtl_mnist", self.data_seed, "test").permutation(len(x_test))[:n_test]
        rows = {
            "train": (x_train, y_train, pick[:n_train]),
            "val": (x_train, y_train, pick[n_train : n_train + n_val]),
            "test": (x_test, y_test, test),
        }
        images = {s: as_tensor(x[i][:, None]).div_(255.0) for s, (x, _, i) in rows.items()}
        out: dict[str, TaskData] = {}
        for task in self.TASKS:
            label = ATTRIBUTES[task.name]
            out[task.name] = {
                s: Split(images[s], as_tensor(label(y[i]).astype(np.int64), dtype=torch.long))
                for s, (_, y, i) in rows.items()
            }
        return out
