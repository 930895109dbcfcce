"""Bring your own data: ``folder:PATH`` (images), with the name grammar ``csv:`` and ``hf:`` share.

A name is ``PREFIX:LOCATION[?key=value&...]``; ``DATASETS.get`` hands it to the factory
registered for the prefix, which reads the layout once and builds a dataset class.

Identity: the class's NAME, which specs and boards record, is the prefix, the folder's
(or file's) own name and the options that differ from their defaults, e.g.
``folder:digits`` or ``folder:digits?image_size=32``. It leaves out where the folder
lives, so a moved (or copied) folder keeps its run ids; its content is in every run id
anyway (``data_paths`` -> content fingerprint). The trade-off: the name alone cannot find
the data, so the class also carries SOURCE, the name with the location made absolute,
which the launchers pass to worker processes (``Registry.sources``). Two different folders
of the same name in one process are refused rather than silently merged.

Lookups: a relative location is resolved against the current directory on every lookup,
and a class is reused only for the same absolute location, options and content
(``once_per_content``), so ``folder:data`` from two directories, or a folder edited
between two runs, never gets a class (or a built dataset) made for other data.

``folder:PATH`` reads ``PATH/<domain>/<class>/<image>``: domains are the environments
(leave-one-domain-out), classes the sub-folders (the same in every domain). Images keep
their native size when all agree, else the most common size; ``?image_size=N`` resizes
all to N x N. All-grayscale folders stay one channel. ``small_cnn`` (global average
pooling) takes any size. Augmentation is the ``augment`` hparam, ``none`` by default.
"""

from __future__ import annotations

import collections
import urllib.parse
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor

from bench.datasets.base import DATASETS, EnvData, Environment, MultiEnvDataset
from bench.datasets.image_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageEnvData,
    bad_image,
    colour_batch,
    crop_flip_batch,
    decode_images,
)
from bench.errors import DataNotFoundError, UserError
from bench.fingerprint import data_fingerprint
from bench.hparams import IntLogUniform, Setting

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
GRAY_MEAN, GRAY_STD = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3


def parse_name(prefix: str, rest: str, defaults: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``LOCATION?k=v&...`` as (location, options); unknown keys and empty locations are refused."""
    location, _, query = rest.partition("?")
    if not location:
        raise UserError(f"{prefix}: needs a location, e.g. {prefix}:path/to/data")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(f"{k} (default {v or 'none'})" for k, v in defaults.items()) or "none"
        bad = ", ".join(unknown)
        raise UserError(f"{prefix}:{rest}: unknown option(s) {bad}; options: {known}")
    return location, {k: v for k, v in options.items() if v != defaults[k]}


def with_options(base: str, options: Mapping[str, str]) -> str:
    """``base?k=v&...`` with the options in sorted order (so equal requests get equal names)."""
    if not options:
        return base
    return base + "?" + urllib.parse.urlencode(sorted(options.items()), safe=",/")


def local_path(prefix: str, location: str) -> Path:
    """The absolute path of ``location``; DataNotFoundError when nothing is there."""
    path = Path(location).expanduser().resolve()
    if not path.exists():
        raise DataNotFoundError(f"{prefix}:{location}: no such file or folder ({path})")
    return path


_BY_CONTENT: dict[tuple[str, str], type] = {}


def once_per_content(source: str, paths: list[Path], make: Callable[[], type]) -> type:
    """``make()``'s class for ``source`` (absolute location and options), made again when the
    content of ``paths`` changed; reading the layout again is what this saves."""
    key = (source, data_fingerprint(paths))
    if key not in _BY_CONTENT:
        _BY_CONTENT[key] = make()
    return _BY_CONTENT[key]


class UserDataset(MultiEnvDataset):
    """Base of the classes the ``folder:``/``csv:``/``hf:`` factories build (data at LOCATION)."""

    VERSION = 1
    SOURCE: ClassVar[str]  # rebuilds this class in any process (absolute location)
    LOCATION: ClassVar[Path | None] = None  # a local file or folder; None for a hub dataset
    N_STEPS = 1001
    EVAL_EVERY = 100
    REFERENCE = "your own data (bring-your-own-data loader; see README)"

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        if cls.LOCATION is not None and not cls.LOCATION.exists():
            message = f"{cls.NAME}: {cls.LOCATION} is gone; pass its new path"
            raise DataNotFoundError(message)
        return [cls.LOCATION] if cls.LOCATION is not None else []

    @classmethod
    def location_exists(cls) -> bool:
        return cls.LOCATION is None or cls.LOCATION.exists()


# --- images -------------------------------------------------------------------------------------


class GrayImageEnvData(ImageEnvData):
    """uint8 (n, 1, h, w); ``batch`` gives floats normalised with ImageNet's mean channel stats."""

    def batch(self, idx: Tensor | None, train: bool = False) -> tuple[Tensor, Tensor]:
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        x = x.float().div_(255.0)
        if train and self.augment is not None:
            x = self.augment(x)
        return (x - GRAY_MEAN) / GRAY_STD, y

    def to(self, device: torch.device | str) -> "GrayImageEnvData":
        return GrayImageEnvData(self.x.to(device), self.y.to(device), self.augment)


def gray_colour_batch(x: Tensor) -> Tensor:
    """Brightness and contrast jitter 0.3 per image for one-channel batches (no saturation)."""

    def factor() -> Tensor:
        return torch.empty(len(x), 1, 1, 1, device=x.device).uniform_(0.7, 1.3)

    x = x * factor()
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * factor() + mean).clamp_(0.0, 1.0)


def crop_flip_colour(x: Tensor) -> Tensor:
    return colour_batch(crop_flip_batch(x))


def crop_flip_gray_colour(x: Tensor) -> Tensor:
    return gray_colour_batch(crop_flip_batch(x))


Transform = Callable[[Tensor], Tensor]
AUGMENTATIONS: dict[str, tuple[Transform, Transform] | None] = {  # (RGB, one channel)
    "none": None,
    "colour": (colour_batch, gray_colour_batch),
    "crop_flip_colour": (crop_flip_colour, crop_flip_gray_colour),
}


class UserImageDataset(UserDataset):
    """Images in memory as uint8; RGB normalised as ImageFolderDataset, grayscale as one channel."""

    FEATURIZER = "small_cnn"
    TINY_PER_CLASS = 4
    CLASSES: ClassVar[tuple[str, ...]]
    HPARAMS = {
        "augment": Setting(
            "none",
            "train-time augmentation: none (the default for your images: no flips of "
            "digits unless chosen), colour jitter, or random resized crop + flip + colour",
            options=tuple(AUGMENTATIONS),
        ),
    }
    HPARAM_OVERRIDES = {
        "batch_size": IntLogUniform(32, "images per domain per step", low=8, high=2**5.5),
    }

    def augmentation(self, hparams: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        pair = AUGMENTATIONS[hparams.get("augment", "none")]
        return None if pair is None else pair[self.INPUT_SHAPE[0] == 1]

    @classmethod
    def env_data(cls, x: Tensor, labels: list[int]) -> EnvData:
        kind = GrayImageEnvData if cls.INPUT_SHAPE[0] == 1 else ImageEnvData
        return kind(x, torch.tensor(labels, dtype=torch.long))


def image_geometry(
    sizes: list[tuple[int, int]], modes: list[str], forced: str
) -> tuple[int, int, int]:
    """(channels, height, width): one channel when every image is grayscale; the native size when
    all agree, else the most common one; ``forced`` (the image_size option) wins."""
    channels = 1 if set(modes) <= GRAY_MODES else 3
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise UserError(f"image_size must be a positive integer (pixels), got {forced!r}")
        return channels, int(forced), int(forced)
    (width, height), _ = collections.Counter(sizes).most_common(1)[0]
    return channels, height, width


# --- folder:PATH --------------------------------------------------------------------------------

FOLDER_OPTIONS = {"image_size": ""}


def _visible(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def scan_folder(root: Path, name: str) -> dict[str, dict[str, list[Path]]]:
    """domain -> class -> image files; one clear error for any departure from the layout."""
    layout = f"expected {root}/<domain>/<class>/<image>"
    if not root.is_dir():
        raise UserError(f"{name}: {root} is not a folder; {layout}")
    domains = [p for p in _visible(root) if p.is_dir()]
    if len(domains) < 2:
        found = f"found {len(domains)} domain folder(s) in {root}"
        raise UserError(f"{name}: {found}; need at least 2 ({layout})")
    found: dict[str, dict[str, list[Path]]] = {}
    for domain in domains:
        entries = _visible(domain)
        stray = [p for p in entries if not p.is_dir()]
        if stray:
            raise UserError(f"{name}: {stray[0]} is not inside a class folder; {layout}")
        found[domain.name] = {c.name: _images(c, name) for c in entries}
    _check_classes(found, name)
    return found


def _images(folder: Path, name: str) -> list[Path]:
    files = _visible(folder)
    other = [p for p in files if p.is_dir() or p.suffix.lower() not in IMAGE_EXTENSIONS]
    if other:
        raise UserError(
            f"{name}: {other[0]} is not an image file ({', '.join(IMAGE_EXTENSIONS)}); "
            "move it out of the class folders"
        )
    return files


def _check_classes(found: Mapping[str, Mapping[str, list[Path]]], name: str) -> None:
    """Every domain must hold the same class folders, and some images."""
    union = sorted(set().union(*(set(c) for c in found.values())))
    for domain, classes in found.items():
        missing = [c for c in union if c not in classes]
        if missing:
            raise UserError(
                f"{name}: domain {domain!r} lacks class folder(s) {', '.join(missing)} that other "
                f"domains have; every domain needs the same classes ({', '.join(union)})"
            )
        if not any(classes.values()):
            raise UserError(f"{name}: domain {domain!r} has no images")
    if len(union) < 2:
        raise UserError(f"{name}: found {len(union)} class folder(s); need at least 2")


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(size, mode) from the image header (PIL reads no pixels here)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise bad_image(path, exc) from None


class FolderDataset(UserImageDataset):
    """Images in ``<domain>/<class>/`` folders (a class made by ``folder:PATH``)."""

    def build(self) -> dict[str, EnvData]:
        layout = scan_folder(self.LOCATION, self.NAME)  # again: the files may have changed since
        size, mode = self.INPUT_SHAPE[1:], "L" if self.INPUT_SHAPE[0] == 1 else "RGB"
        envs: dict[str, EnvData] = {}
        for domain in self.env_names():
            paths, labels = [], []
            for label, name in enumerate(self.CLASSES):
                files = layout[domain].get(name, [])
                files = files[: self.TINY_PER_CLASS] if self.size == "tiny" else files
                paths += files
                labels += [label] * len(files)
            envs[domain] = self.env_data(decode_images(paths, tuple(size), mode), labels)
        return envs


def make_folder_dataset(rest: str) -> type[FolderDataset]:
    """The dataset class of ``folder:REST`` (see the module docstring)."""
    location, options = parse_name("folder", rest, FOLDER_OPTIONS)
    root = local_path("folder", location)
    source = with_options(f"folder:{root}", options)
    return once_per_content(source, [root], lambda: _folder_class(root, options, source))


def _folder_class(root: Path, options: dict[str, str], source: str) -> type[FolderDataset]:
    name = with_options(f"folder:{root.name}", options)
    layout = scan_folder(root, name)
    files = [f for classes in layout.values() for fs in classes.values() for f in fs]
    headers = [_header(f) for f in files]
    channels, height, width = image_geometry(
        [h[0] for h in headers], [h[1] for h in headers], options.get("image_size", "")
    )
    classes = tuple(next(iter(layout.values())))
    attrs = {
        "NAME": name,
        "SOURCE": source,
        "LOCATION": root,
        "ENVIRONMENTS": tuple(Environment(d) for d in layout),
        "CLASSES": classes,
        "NUM_CLASSES": len(classes),
        "INPUT_SHAPE": (channels, height, width),
        "__doc__": f"Your images in {root.name}/<domain>/<class>/ ({len(files)} files).",
        "__module__": __name__,
    }
    return type(f"Folder_{root.name}", (FolderDataset,), attrs)


DATASETS.register_prefix("folder", make_folder_dataset)
