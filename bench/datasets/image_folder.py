"""Multi-domain image folders ``<root>/<DIRNAME>/<domain>/<class>/*``: PACS, VLCS, OfficeHome,
TerraIncognita, DomainNet.

One class serves every layout: a subclass declares its folder, domains (= environments,
leave-one-domain-out) and classes, and construction checks them against the folders
(and the per-domain/class counts where they are known, as for PACS). Images are
decoded once (PIL), resized to IMAGE_SIZE (64 px: CPU-sized) and kept
in memory as uint8; each batch is converted to float and ImageNet-normalised. The
``augment`` setting picks a vectorised version of DomainBed's train transform
(random resized crop of 70-100% area, horizontal flip, brightness/contrast/saturation
jitter 0.3, 10% grayscale; hue jitter is left out), colour jitter only, or none; it
is applied to training batches only.

These registered names are **the CPU protocol** (64 px, ``small_cnn``, evaluation every
100 steps, random init): a protocol of its own, not DomainBed's. DomainBed's protocol
(ResNet-50 from ImageNet at 224 px, BatchNorm frozen, lr 5e-5, evaluation every 300 /
1000 steps, DomainBed's augmentation with hue) is registered beside each as
``<name>_domainbed`` (bench/datasets/domainbed_images.py); published DomainBed rows are
shown only on boards of that protocol.

Data: ``../shared/data/pacs`` is a 64 px copy of PACS. Other layouts must be obtained
(e.g. with DomainBed's ``download.py``) and placed under ``--data-dir``; they raise the
missing-data error until then. With ``--download`` a dataset that declares HUB_ID is
fetched once from the HuggingFace hub (``datasets`` library) and written in this layout.
Note that DomainNet (586k images) needs ~7 GB of memory at 64 px.

Defaults: ``small_cnn``, 5001 steps, evaluation every 100, batch 32 per domain.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.datasets.domainbed_hparams import algorithm_hparams
from bench.datasets.files import data_roots, find_data, hub_datasets
from bench.errors import DataNotFoundError, UserError, reason
from bench.hparams import IntLogUniform, Setting

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEnvData(EnvData):
    """uint8 images (n, 3, s, s) in memory; ``batch`` gives float, augmented when training, then
    normalised."""

    def batch(self, idx: Tensor | None, train: bool = False) -> tuple[Tensor, Tensor]:
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        x = x.float().div_(255.0)
        if train and self.augment is not None:
            x = self.augment(x)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std, y

    def to(self, device: torch.device | str) -> "ImageEnvData":
        return ImageEnvData(self.x.to(device), self.y.to(device), self.augment)


def augment_batch(x: Tensor) -> Tensor:
    """Per-image random resized crop (70-100% area, aspect 3/4..4/3) + flip, colour jitter 0.3, 10%
    grayscale.

    ``x`` is float in [0, 1]; randomness comes from the global torch RNG, which the runner seeds and
    checkpoints.
    """
    return colour_batch(crop_flip_batch(x))


def crop_flip_batch(x: Tensor) -> Tensor:
    """Per-image random resized crop (70-100% area, aspect 3/4..4/3) and horizontal flip,
    vectorised."""
    n, device = len(x), x.device
    area = torch.empty(n, device=device).uniform_(0.7, 1.0)
    aspect = torch.exp(
        torch.empty(n, device=device).uniform_(-0.2877, 0.2877)
    )  # log(3/4) .. log(4/3)
    w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    tx, ty = (
        (1 - w) * (2 * torch.rand(n, device=device) - 1),
        (1 - h) * (2 * torch.rand(n, device=device) - 1),
    )
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, tx, h, ty
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def colour_batch(x: Tensor) -> Tensor:
    """Per-image brightness/contrast/saturation jitter 0.3 and 10% grayscale, vectorised (no hue
    jitter)."""
    n, device = len(x), x.device

    def factor() -> Tensor:
        return torch.empty(n, 1, 1, 1, device=device).uniform_(0.7, 1.3)

    gray_weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
    x = x * factor()  # brightness
    gray = (x * gray_weights).sum(1, keepdim=True)
    x = (x - gray.mean((2, 3), keepdim=True)) * factor() + gray.mean(
        (2, 3), keepdim=True
    )  # contrast
    gray = (x * gray_weights).sum(1, keepdim=True)
    x = (x - gray) * factor() + gray  # saturation
    to_gray = (torch.rand(n, 1, 1, 1, device=device) < 0.1).float()
    x = to_gray * (x * gray_weights).sum(1, keepdim=True).expand_as(x) + (1 - to_gray) * x
    return x.clamp_(0.0, 1.0)


def decode_images(paths: list[Path], size: int | tuple[int, int], mode: str = "RGB") -> Tensor:
    """uint8 (n, C, H, W) decoded with PIL in ``mode`` (RGB: C = 3, L: C = 1).

    Resized (Lanczos) unless already ``size``: a side length or (height, width).
    """
    import numpy as np
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    out = np.empty((len(paths), height, width, len(mode)), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.LANCZOS)
                out[i] = np.asarray(image).reshape(height, width, len(mode))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's
            raise bad_image(path, exc) from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def bad_image(path: Path, exc: BaseException) -> UserError:
    """The one line for a file PIL cannot read."""
    return UserError(
        f"cannot decode image {path} ({reason(exc)}); "
        "replace or delete it (the first bad file found; later ones are not checked yet)"
    )


class ImageFolderDataset(MultiEnvDataset):
    """Base for ``<DIRNAME>/<domain>/<class>/*``; CLASSES None = discovered (must agree across
    domains)."""

    VERSION = 1
    DIRNAME: ClassVar[str]
    CLASSES: ClassVar[tuple[str, ...] | None] = None
    COUNTS: ClassVar[dict[str, tuple[int, ...]] | None] = None  # per domain, in CLASSES order
    HUB_ID: ClassVar[str | None] = None
    IMAGE_SIZE: ClassVar[int] = 64
    INPUT_SHAPE = (3, 64, 64)
    FEATURIZER = "small_cnn"
    N_STEPS = 5001
    EVAL_EVERY = 100
    TINY_PER_CLASS = 4
    REFERENCE = (
        "bench's CPU protocol on DomainBed's datasets (64 px, small_cnn from scratch): not "
        "DomainBed's protocol"
    )
    AUGMENTATIONS: ClassVar[dict[str, Callable[[Tensor], Tensor] | None]] = {
        "crop_flip_colour": augment_batch,
        "colour": colour_batch,
        "none": None,
    }
    HPARAMS = {
        "augment": Setting(
            "crop_flip_colour",
            "train-time augmentation: random resized crop + flip + colour jitter and "
            "grayscale (DomainBed's, without hue), colour only (e.g. digits), or none",
            options=tuple(AUGMENTATIONS),
        ),
    }
    # DomainBed's large-image batch size: int(2^U(3, 5.5))
    HPARAM_OVERRIDES = {
        "batch_size": IntLogUniform(32, "images per domain per step", low=8, high=2**5.5)
    }

    def augmentation(self, hparams: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        return self.AUGMENTATIONS[hparams.get("augment", "none")]

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        layout = f"{cls.DIRNAME}/<domain>/<class>/*.jpg with domains {', '.join(cls.env_names())}"
        how = f"Expected layout: {layout}." + (
            " Or add --download to fetch it from the HuggingFace hub." if cls.HUB_ID else ""
        )
        return [find_data(root, [cls.DIRNAME], cls.NAME, how)]

    def _root(self) -> Path:
        try:
            return self.data_paths(self.root)[0]
        except DataNotFoundError:
            if not (self.download and self.HUB_ID):
                raise
            return fetch_from_hub(self, data_roots(self.root)[0] / self.DIRNAME)

    def _classes(self, root: Path) -> tuple[str, ...]:
        """Declared domains must exist; every domain must hold exactly the declared (or the same)
        classes."""
        found_domains = sorted(p.name for p in root.iterdir() if p.is_dir())
        missing = [d for d in self.env_names() if d not in found_domains]
        if missing:
            raise UserError(
                f"{self.NAME}: {root} lacks domain folder(s) {', '.join(missing)}; found "
                f"{', '.join(found_domains) or 'none'}"
            )
        classes = self.CLASSES
        for domain in self.env_names():
            found = tuple(sorted(p.name for p in (root / domain).iterdir() if p.is_dir()))
            if classes is None:
                classes = found
            if set(found) != set(classes):
                raise UserError(
                    f"{self.NAME}: {root / domain} has classes {list(found)}, expected "
                    f"{list(classes)}"
                )
        if len(classes) != self.NUM_CLASSES:
            raise UserError(
                f"{self.NAME}: found {len(classes)} classes in {root}, expected {self.NUM_CLASSES}"
            )
        return tuple(classes)

    def build(self) -> dict[str, EnvData]:
        root = self._root()
        classes = self._classes(root)
        envs: dict[str, EnvData] = {}
        for domain in self.env_names():
            paths, labels, counts = [], [], []
            for label, name in enumerate(classes):
                files = sorted(
                    (p for p in (root / domain / name).iterdir() if p.suffix.lower() in EXTENSIONS),
                    key=lambda p: p.name,
                )
                counts.append(len(files))
                if self.size == "tiny":
                    files = files[: self.TINY_PER_CLASS]
                paths += files
                labels += [label] * len(files)
            if (
                self.COUNTS is not None
                and self.size == "full"
                and tuple(counts) != self.COUNTS[domain]
            ):
                raise UserError(
                    f"{self.NAME}/{domain}: per-class image counts {counts} != official "
                    f"{list(self.COUNTS[domain])} ({', '.join(classes)}); the copy under "
                    f"{root} is incomplete"
                )
            envs[domain] = ImageEnvData(
                decode_images(paths, self.IMAGE_SIZE), torch.tensor(labels, dtype=torch.long)
            )
        return envs


def fetch_from_hub(dataset: ImageFolderDataset, target: Path) -> Path:
    """Write HUB_ID's images (columns image, domain, label) as ``target/<domain>/<class>/<i>.jpg``.

    Images are resized to IMAGE_SIZE. The copy is written beside ``target`` and renamed at
    the end, so a failed download leaves no partial folder that would pass for the data.
    """
    layout = f"{target}/<domain>/<class>/*.jpg"
    hf_datasets = hub_datasets(dataset.HUB_ID, layout)
    log.info("downloading %s from the HuggingFace hub into %s", dataset.HUB_ID, target)
    try:
        hub = hf_datasets.load_dataset(dataset.HUB_ID, split="train")
    except Exception as exc:  # network, authentication and hub errors come in many types
        message = f"downloading {dataset.HUB_ID} from the HuggingFace hub failed ({reason(exc)})"
        raise DataNotFoundError(f"{message}; put the images in {layout}") from None
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    names = _HubNames(hub.features)
    size = (dataset.IMAGE_SIZE, dataset.IMAGE_SIZE)
    for i, row in enumerate(hub):
        folder = partial / names.part("domain", row["domain"]) / names.part("label", row["label"])
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].convert("RGB").resize(size).save(folder / f"{i}.jpg", quality=90)
    partial.rename(target)
    return target


class _HubNames:
    """Hub domain and class names made safe as single path components (the hub is not trusted)."""

    def __init__(self, features: Mapping[str, Any]) -> None:
        self.features = features
        self.seen: dict[tuple[str, str], Any] = {}

    def part(self, column: str, value: Any) -> str:
        feature = self.features[column]
        name = feature.int2str(value) if hasattr(feature, "int2str") else str(value)  # ClassLabel
        safe = re.sub(r"[/\\\x00-\x1f]", "_", name).lstrip(". ").rstrip()
        if not safe:
            raise UserError(
                f"hub {column} name {name!r} is not usable as a folder name; "
                "fetch the images by hand into the folder layout"
            )
        if self.seen.setdefault((column, safe), name) != name:
            first = self.seen[column, safe]
            raise UserError(f"hub {column} names {first!r} and {name!r} both become {safe!r}")
        return safe


def _envs(*names: str) -> tuple[Environment, ...]:
    return tuple(Environment(name) for name in names)


@register_dataset("pacs")
class PACS(ImageFolderDataset):
    """PACS (Li et al., 2017): 7 classes in 4 styles; leave one domain out."""

    ALGORITHM_HPARAMS = algorithm_hparams("pacs")

    DIRNAME = "pacs"
    ENVIRONMENTS = _envs("art_painting", "cartoon", "photo", "sketch")
    CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    NUM_CLASSES = 7
    COUNTS = {
        "art_painting": (379, 255, 285, 184, 201, 295, 449),
        "cartoon": (389, 457, 346, 135, 324, 288, 405),
        "photo": (189, 202, 182, 186, 199, 280, 432),
        "sketch": (772, 740, 753, 608, 816, 80, 160),
    }
    HUB_ID = "flwrlabs/pacs"


@register_dataset("vlcs")
class VLCS(ImageFolderDataset):
    """VLCS (Fang et al., 2013), DomainBed's folder names; 5 classes."""

    ALGORITHM_HPARAMS = algorithm_hparams("vlcs")

    DIRNAME = "VLCS"
    ENVIRONMENTS = _envs("Caltech101", "LabelMe", "SUN09", "VOC2007")
    CLASSES = ("bird", "car", "chair", "dog", "person")
    NUM_CLASSES = 5


@register_dataset("office_home")
class OfficeHome(ImageFolderDataset):
    """OfficeHome (Venkateswara et al., 2017), DomainBed's folder names; 65 classes discovered
    from the folders."""

    ALGORITHM_HPARAMS = algorithm_hparams("office_home")

    DIRNAME = "office_home"
    ENVIRONMENTS = _envs("Art", "Clipart", "Product", "Real World")
    NUM_CLASSES = 65


@register_dataset("terra_incognita")
class TerraIncognita(ImageFolderDataset):
    """TerraIncognita (Beery et al., 2018) as DomainBed: four camera-trap locations, 10 classes
    discovered."""

    ALGORITHM_HPARAMS = algorithm_hparams("terra_incognita")

    DIRNAME = "terra_incognita"
    ENVIRONMENTS = _envs("location_100", "location_38", "location_43", "location_46")
    NUM_CLASSES = 10


@register_dataset("domain_net")
class DomainNet(ImageFolderDataset):
    """DomainNet (Peng et al., 2019): six styles, 345 classes discovered; DomainBed uses 5001
    steps too."""

    ALGORITHM_HPARAMS = algorithm_hparams("domain_net")

    DIRNAME = "domain_net"
    ENVIRONMENTS = _envs("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    NUM_CLASSES = 345
    HPARAM_OVERRIDES = {
        "batch_size": IntLogUniform(
            32, "images per domain per step (DomainBed: int(2^U(3, 5)))", low=8, high=2**5
        )
    }
