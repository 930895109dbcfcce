"""Few-shot datasets: each builds a ``ClassPool`` with class-disjoint meta-train/val/test splits.

``subspace`` is generated: every class is a Gaussian whose mean lies in a low-dimensional
subspace shared by all classes, with large nuisance noise outside it, so tasks share
structure a meta-learner can find (project onto the subspace) and a learner trained from
scratch on a few shots cannot. ``mnist`` makes digit x rotation classes (Omniglot's trick of
rotations as new classes, Santoro et al. 2016), split by digit so no meta-test digit is seen
in meta-training. ``pacs`` makes (object, domain) classes split by object; ``pacs_cross``
splits them by domain instead: meta-train on art and cartoon, select on photo, test on
sketch (a cross-domain few-shot setting, as Chen et al. 2019's mini-ImageNet -> CUB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from bench.datasets import DATASETS
from bench.datasets.files import MNISTFiles, shuffled_mnist
from bench.datasets.image_folder import IMAGENET_MEAN, IMAGENET_STD
from bench.datasets.rotated_mnist import rotate
from bench.hparams import Fixed, Param
from bench.meta.episodes import ClassPool
from bench.registry import Registry
from bench.seeding import rng

FEW_SHOT_DATASETS: Registry["FewShotDataset"] = Registry("few-shot dataset")
register_few_shot = FEW_SHOT_DATASETS.register


class FewShotDataset:
    """Base: declares input shape, default featurizer and hparam overrides; ``pool`` builds."""

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    INPUT_SHAPE: ClassVar[tuple[int, ...]]
    FEATURIZER: ClassVar[str] = "mlp"
    N_STEPS: ClassVar[int] = 2000
    EVAL_EVERY: ClassVar[int] = 250
    HPARAM_OVERRIDES: ClassVar[dict[str, Param]] = {}

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        """Files read (fingerprinted into the run id); none for generated data."""
        return []

    @classmethod
    def pool(cls, root: str | None, data_seed: int, size: str) -> ClassPool:
        raise NotImplementedError


@register_few_shot("subspace")
class Subspace(FewShotDataset):
    """100 Gaussian classes in R^32 (64 train / 16 val / 20 test): means ``U z`` with ``U`` a
    random 32x4 orthonormal basis shared by all classes and ``z ~ N(0, I)``; noise std 0.3
    inside the subspace and 1.0 in the 28 directions outside it."""

    DIM, RANK, CLASSES, PER_CLASS = 32, 4, (64, 16, 20), 60
    INSIDE, OUTSIDE = 0.3, 1.0
    INPUT_SHAPE = (32,)
    N_STEPS, EVAL_EVERY = 500, 100
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(64, "hidden width: small vectors"),
        "mlp_depth": Fixed(2, "two hidden blocks"),
    }

    @classmethod
    def pool(cls, root: str | None, data_seed: int, size: str) -> ClassPool:
        gen = rng(cls.NAME, data_seed, "data")
        basis, _ = np.linalg.qr(gen.standard_normal((cls.DIM, cls.DIM)))
        inside, outside = basis[:, : cls.RANK], basis[:, cls.RANK :]
        n_classes, per_class = sum(cls.CLASSES), cls.PER_CLASS if size == "full" else 25
        means = gen.standard_normal((n_classes, cls.RANK)) @ inside.T
        noise_in = gen.standard_normal((n_classes, per_class, cls.RANK)) * cls.INSIDE
        noise_out = gen.standard_normal((n_classes, per_class, cls.DIM - cls.RANK)) * cls.OUTSIDE
        x = means[:, None, :] + noise_in @ inside.T + noise_out @ outside.T
        labels = np.repeat(np.arange(n_classes), per_class)
        a, b = cls.CLASSES[0], cls.CLASSES[0] + cls.CLASSES[1]
        order = gen.permutation(n_classes).tolist()
        splits = {"train": order[:a], "val": order[a:b], "test": order[b:]}
        x = torch.from_numpy(x.reshape(-1, cls.DIM)).float()
        return ClassPool(x, torch.from_numpy(labels), splits)


@register_few_shot("mnist")
class MNISTRotations(MNISTFiles, FewShotDataset):
    """40 classes digit x rotation (0, 90, 180, 270 degrees), 200 images each (20 tiny), split
    by digit: meta-train 0-4 (20 classes), meta-val 5-6 (8), meta-test 7-9 (12)."""

    ANGLES = (0, 90, 180, 270)
    DIGITS = {"train": (0, 1, 2, 3, 4), "val": (5, 6), "test": (7, 8, 9)}
    PER_CLASS = 200
    INPUT_SHAPE = (1, 28, 28)
    FEATURIZER = "small_cnn"
    N_STEPS, EVAL_EVERY = 2000, 250

    @classmethod
    def pool(cls, root: str | None, data_seed: int, size: str) -> ClassPool:
        images, digits = shuffled_mnist(root, False, cls.NAME, data_seed)
        per_class = cls.PER_CLASS if size == "full" else 20
        xs, labels, names = [], [], {}
        splits: dict[str, list[int]] = {s: [] for s in cls.DIGITS}
        for split, split_digits in cls.DIGITS.items():
            for digit in split_digits:
                rows = np.flatnonzero(digits == digit)[: per_class * len(cls.ANGLES)]
                for k, angle in enumerate(cls.ANGLES):
                    c = digit * len(cls.ANGLES) + k
                    xs.append(rotate(images[rows[k :: len(cls.ANGLES)]], angle))
                    labels += [c] * len(xs[-1])
                    splits[split].append(c)
                    names[c] = f"{digit}@{angle}"
        x = torch.cat(xs).mul_(255).round_().to(torch.uint8)  # 4x smaller in memory than float
        return ClassPool(x, torch.tensor(labels), splits, _unit_float, names)


def _unit_float(rows: Tensor) -> Tensor:
    return rows.float().div_(255.0)


def _imagenet_normalised(rows: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rows.float().div_(255.0) - mean) / std


class PACSPairs(FewShotDataset):
    """(object, domain) classes of bench's 64-px PACS; subclasses say which pairs go where."""

    INPUT_SHAPE = (3, 64, 64)
    FEATURIZER = "small_cnn"
    N_STEPS, EVAL_EVERY = 2000, 250

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        return DATASETS.get("pacs").data_paths(root)

    @classmethod
    def split_of(cls, obj: str, domain: str) -> str:
        raise NotImplementedError

    @classmethod
    def pool(cls, root: str | None, data_seed: int, size: str) -> ClassPool:
        pacs: Any = DATASETS.get("pacs")(root, data_seed, size=size)
        xs, labels, names = [], [], {}
        splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for d, (domain, env) in enumerate(pacs.envs.items()):
            for o, obj in enumerate(pacs.CLASSES):
                c = d * len(pacs.CLASSES) + o
                xs.append(env.x[env.y == o])
                labels += [c] * len(xs[-1])
                splits[cls.split_of(obj, domain)].append(c)
                names[c] = f"{obj}@{domain}"
        return ClassPool(torch.cat(xs), torch.tensor(labels), splits, _imagenet_normalised, names)


@register_few_shot("pacs")
class PACSObjects(PACSPairs):
    """28 (object, domain) classes split by object: meta-train dog, elephant, giraffe (12
    classes), meta-val guitar, horse (8), meta-test house, person (8)."""

    OBJECTS = {"dog": "train", "elephant": "train", "giraffe": "train", "guitar": "val"}
    OBJECTS |= {"horse": "val", "house": "test", "person": "test"}

    @classmethod
    def split_of(cls, obj: str, domain: str) -> str:
        return cls.OBJECTS[obj]


@register_few_shot("pacs_cross")
class PACSCrossDomain(PACSPairs):
    """Split by domain: meta-train art_painting + cartoon (14 classes), meta-val photo (7),
    meta-test sketch (7): the test tasks are new classes in an unseen style."""

    DOMAINS = {"art_painting": "train", "cartoon": "train", "photo": "val", "sketch": "test"}

    @classmethod
    def split_of(cls, obj: str, domain: str) -> str:
        return cls.DOMAINS[domain]
