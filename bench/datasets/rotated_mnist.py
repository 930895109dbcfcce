"""Rotated MNIST (``rmnist``), as DomainBed (Gulrajani & Lopez-Paz, 2021).

MNIST train+test (70k) shuffled; environment i takes images i::6 and rotates them by
0, 15, 30, 45, 60 or 75 degrees (bilinear, zero fill); 1x28x28 in [0, 1]; 10 classes;
DomainBed's MNIST CNN, 5001 steps, evaluation every 100; leave one domain out.
Rotation runs once per environment on the whole uint8 batch (torchvision).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.datasets.base import (
    DOMAINBED_SMALL_IMAGES,
    EnvData,
    Environment,
    MultiEnvDataset,
    register_dataset,
)
from bench.datasets.files import MNISTFiles, shuffled_mnist

ANGLES = (0, 15, 30, 45, 60, 75)


def rotate(images: np.ndarray, angle: float) -> torch.Tensor:
    """uint8 (n, 28, 28) -> float (n, 1, 28, 28) in [0, 1], rotated counter-clockwise by ``angle``
    degrees."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    x = (
        torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
    )  # float: bilinear on uint8 is much slower
    return F.rotate(x, angle, interpolation=InterpolationMode.BILINEAR, fill=0)


@register_dataset("rmnist")
class RotatedMNIST(MNISTFiles, MultiEnvDataset):
    VERSION = 1
    ENVIRONMENTS = tuple(Environment(f"{a}", {"angle": a}) for a in ANGLES)
    INPUT_SHAPE = (1, 28, 28)
    NUM_CLASSES = 10
    FEATURIZER = "mnist_cnn"
    N_STEPS = 5001
    EVAL_EVERY = 100
    TINY = 1200
    HPARAM_OVERRIDES = DOMAINBED_SMALL_IMAGES
    REFERENCE = (
        "DomainBed (Gulrajani & Lopez-Paz 2021): RotatedMNIST, MNIST CNN, hparams_registry.py"
    )

    def build(self) -> dict[str, EnvData]:
        images, digits = shuffled_mnist(
            self.root,
            self.download,
            self.NAME,
            self.data_seed,
            self.TINY if self.size == "tiny" else None,
        )
        n = len(self.ENVIRONMENTS)
        return {
            env.name: EnvData(
                rotate(images[i::n], env.params["angle"]), torch.from_numpy(digits[i::n])
            )
            for i, env in enumerate(self.ENVIRONMENTS)
        }
