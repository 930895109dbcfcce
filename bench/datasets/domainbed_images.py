"""DomainBed's image protocol (Gulrajani & Lopez-Paz, ICLR 2021) beside the CPU one.

For every image-folder dataset ``<name>`` (PACS, VLCS, OfficeHome, TerraIncognita,
DomainNet) this registers ``<name>_domainbed``: the same folders, decoded at 224 px,
a ResNet-50 started from torchvision's ImageNet weights with BatchNorm kept in eval
mode (DomainBed's ``freeze_bn``), Adam at lr 5e-5 (search 10^U(-5, -3.5)), batch 32
(int(2^U(3, 5.5)); DomainNet int(2^U(3, 5))), DANN's discriminator lr likewise,
evaluation every 300 steps (DomainNet 1000), 5001 steps, and DomainBed's train
transform per image (RandomResizedCrop(224, scale 0.7-1), horizontal flip,
ColorJitter(0.3, 0.3, 0.3, 0.3), 10% grayscale). Facts from DomainBed's
hparams_registry.py, datasets.py and networks.py.

Known difference: DomainBed crops from the original-resolution image; here images are
decoded at 224 px first (the shared PACS copy is 64 px, so its 224-px images are
upsampled: that copy cannot reproduce DomainBed's numbers). Training this protocol to
convergence needs a GPU (``--device cuda``).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor

from bench.datasets.base import register_dataset
from bench.datasets.domainbed_hparams import LARGE_IMAGES
from bench.datasets.image_folder import (
    PACS,
    VLCS,
    DomainNet,
    ImageFolderDataset,
    OfficeHome,
    TerraIncognita,
)
from bench.hparams import Fixed, IntLogUniform, LogUniform, Setting

SIZE = 224


def domainbed_augment(x: Tensor) -> Tensor:
    """DomainBed's train transform, image by image (float in [0, 1]; the runner-seeded RNG)."""
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomResizedCrop(x.shape[-1], scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.3, 0.3, 0.3, 0.3),
            v2.RandomGrayscale(p=0.1),
        ]
    )
    return torch.stack([transform(image) for image in x])


def _overrides(base: type[ImageFolderDataset]) -> dict[str, Any]:
    high_batch = 2**5 if base.NAME == "domain_net" else 2**5.5
    return {
        "weights": Fixed("imagenet", "DomainBed: torchvision's ImageNet weights"),
        "freeze_bn": Setting(
            True, "DomainBed: BatchNorm in eval mode while training", options=(False, True)
        ),
        "lr": LogUniform(5e-5, "DomainBed large images: Adam lr", low=1e-5, high=10**-3.5),
        "lr_d": LogUniform(
            5e-5, "DomainBed large images: discriminator lr", low=1e-5, high=10**-3.5
        ),
        "batch_size": IntLogUniform(
            32, "DomainBed: images per domain per step", low=8, high=high_batch
        ),
    }


class DomainBedImages(ImageFolderDataset):
    """Mixin body of every ``<name>_domainbed`` variant (see the module docstring)."""

    IMAGE_SIZE = SIZE
    REFERENCE = (
        "DomainBed (Gulrajani & Lopez-Paz 2021): ResNet-50 from ImageNet, 224 px, frozen BatchNorm"
    )
    INPUT_SHAPE = (3, SIZE, SIZE)
    FEATURIZER = "resnet50"
    EVAL_EVERY = 300
    AUGMENTATIONS: ClassVar[dict[str, Callable[[Tensor], Tensor] | None]] = {
        "domainbed": domainbed_augment,
        "none": None,
    }
    HPARAMS = {
        "augment": Setting(
            "domainbed",
            "DomainBed's train transform (with hue jitter), or none",
            options=("domainbed", "none"),
        ),
    }

    def augmentation(self, hparams: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        return self.AUGMENTATIONS[hparams.get("augment", "none")]


def _register(base: type[ImageFolderDataset]) -> None:
    name = base.NAME
    attrs = {
        "__doc__": f"{' '.join((base.__doc__ or name).split(chr(10) * 2)[0].split())} "
        "DomainBed's protocol (ResNet-50).",
        "__module__": __name__,
        "EVAL_EVERY": 1000 if name == "domain_net" else 300,
        "HPARAM_OVERRIDES": _overrides(base),
        "ALGORITHM_HPARAMS": {**base.ALGORITHM_HPARAMS, **LARGE_IMAGES},
    }
    variant = type(f"{base.__name__}DomainBed", (DomainBedImages, base), attrs)
    register_dataset(f"{name}_domainbed")(variant)


for _base in (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet):
    _register(_base)
