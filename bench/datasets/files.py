"""Locating data files, with one clear error when they are missing."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.downloads import hub_precheck, install_hint, require_host
from bench.errors import DataNotFoundError, UserError, reason
from bench.seeding import rng

ENV_VAR = "BENCH_DATA"
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def data_roots(explicit: str | None) -> list[Path]:
    """Where to look: ``--data-dir`` alone if given, else $BENCH_DATA, ./data and the checkout's
    ../shared/data."""
    if explicit:
        return [Path(explicit).expanduser()]
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(Path("data"))
    roots.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    return roots


def find_data(explicit: str | None, candidates: list[str], what: str, how_to_get: str) -> Path:
    """The first existing ``root/candidate``; else DataNotFoundError naming every path searched."""
    searched = []
    for root in data_roots(explicit):
        for candidate in candidates:
            path = root / candidate
            if path.exists():
                return path
            searched.append(str(path))
    raise DataNotFoundError(
        f"{what} not found; looked for {', '.join(searched)}. {how_to_get} "
        f"Pass --data-dir DIR (or set {ENV_VAR}=DIR) to the folder that holds it."
    )


MNIST_CANDIDATES = ["mnist.npz", "MNIST/raw"]
MNIST_HOW = (
    "Get mnist.npz (arrays x_train, y_train, x_test, y_test; the repository's "
    "../shared/data has one), "
    "or add --download to fetch MNIST with torchvision into DIR/MNIST/raw."
)


class MNISTFiles:
    """Mixin for datasets built from MNIST: declares the file they read."""

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        return [find_data(root, MNIST_CANDIDATES, "MNIST", MNIST_HOW)]


def hub_datasets(what: str, where: Path | str) -> Any:
    """HuggingFace's ``datasets`` module once the hub answers for dataset ``what``, else UserError.

    The package and the host are checked first (``downloads.hub_precheck``), before ``datasets``
    is imported, which takes seconds.
    """
    hub_precheck(what, where)
    return import_hf_datasets(f"downloading {what}")


def import_hf_datasets(purpose: str) -> Any:
    """HuggingFace's ``datasets`` module, or one UserError line saying what to install."""
    try:
        import datasets as hf_datasets  # lazy: an optional dependency (bench[hub])
    except ImportError:
        raise UserError(install_hint(purpose)) from None
    return hf_datasets


def load_mnist(
    explicit_root: str | None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST in the official order as uint8 arrays (x_train, y_train, x_test, y_test).

    Reads ``mnist.npz`` (keys x_train, y_train, x_test, y_test) or a torchvision
    ``MNIST/raw`` folder; ``download`` fetches the latter with torchvision (md5-checked)
    when neither is found.
    """
    try:
        path = find_data(explicit_root, MNIST_CANDIDATES, "MNIST", MNIST_HOW)
    except DataNotFoundError:
        if not download:
            raise
        path = _download_mnist(data_roots(explicit_root)[0])
    return _read_mnist_npz(path) if path.suffix == ".npz" else _read_mnist_raw(path)


def _download_mnist(root: Path) -> Path:
    """torchvision's MNIST into ``root/MNIST/raw``; offline or failed, one clear error."""
    import torchvision  # lazy: slow to import, and only a download or a raw folder needs it

    mnist = torchvision.datasets.MNIST
    raw = root / "MNIST" / "raw"
    instead = f"or put mnist.npz in {root}; see the repository's ../shared/data/README.md"
    require_host(mnist.mirrors[0], "MNIST (the four idx .gz files)", f"{raw} ({instead})")
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            mnist(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        message = f"downloading MNIST into {raw} failed ({reason(exc)}); {instead}"
        raise DataNotFoundError(message) from None
    return raw


def _read_mnist_raw(raw: Path) -> tuple[np.ndarray, ...]:
    """torchvision's ``MNIST/raw`` folder as the four arrays; an incomplete one is a UserError."""
    import torchvision  # lazy: slow to import, and only a download or a raw folder needs it

    try:
        train = torchvision.datasets.MNIST(str(raw.parents[1]), train=True)
        test = torchvision.datasets.MNIST(str(raw.parents[1]), train=False)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise UserError(
            f"{raw} is incomplete or damaged ({reason(exc)}); "
            f"delete it and add --download, or put mnist.npz in {raw.parents[1]}"
        ) from None
    return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()


def _read_mnist_npz(path: Path) -> tuple[np.ndarray, ...]:
    """The four MNIST arrays of ``path``; a damaged or foreign file is a UserError."""
    try:
        with np.load(path) as f:
            arrays = tuple(np.asarray(f[key]) for key in MNIST_KEYS)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _damaged_mnist(path, reason(exc)) from None
    x_train, y_train, x_test, y_test = arrays
    for x, y in ((x_train, y_train), (x_test, y_test)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise _damaged_mnist(path, f"array shapes {shapes}, expected (n, 28, 28) and (n,)")
    return arrays


def _damaged_mnist(path: Path, reason: str) -> UserError:
    return UserError(
        f"{path} is damaged or not MNIST ({reason}); replace it with a good mnist.npz "
        f"(arrays {', '.join(MNIST_KEYS)}; provenance and sha256: ../shared/data/README.md)"
    )


def shuffled_mnist(
    root: str | None, download: bool, stream: str, data_seed: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST train+test (70k) in the order of the stream (stream, data_seed, "shuffle"), as
    DomainBed's MNIST datasets.

    ``limit`` keeps the first ``limit`` images of that order (``size="tiny"``). Labels are int64.
    """
    x_tr, y_tr, x_te, y_te = load_mnist(root, download)
    images, digits = np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te]).astype(np.int64)
    order = rng(stream, data_seed, "shuffle").permutation(len(images))[:limit]
    return images[order], digits[order]
