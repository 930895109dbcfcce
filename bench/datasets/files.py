"""Locating data files, with one clear error when they are missing."""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import DataNotFoundError

ENV_VAR = "BENCH_DATA"


def data_roots(explicit: str | None) -> list[Path]:
    """Where to look: ``--data-dir`` alone if given, else $BENCH_DATA, ./data and the checkout's ../shared/data."""
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
    "Get mnist.npz (arrays x_train, y_train, x_test, y_test; the repository's ../shared/data has one), "
    "or add --download to fetch MNIST with torchvision into DIR/MNIST/raw."
)


class MNISTFiles:
    """Mixin for datasets built from MNIST: declares the file they read."""

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        return [find_data(root, MNIST_CANDIDATES, "MNIST", MNIST_HOW)]


def load_mnist(explicit_root: str | None, download: bool = False) -> tuple["np.ndarray", "np.ndarray", "np.ndarray", "np.ndarray"]:
    """MNIST in the official order as uint8 arrays (x_train, y_train, x_test, y_test).

    Reads ``mnist.npz`` (keys x_train, y_train, x_test, y_test) or a torchvision
    ``MNIST/raw`` folder; ``download`` fetches the latter with torchvision (md5-checked).
    """
    import numpy as np

    how = (
        "Get mnist.npz (arrays x_train, y_train, x_test, y_test; the repository's ../shared/data has one), "
        "or add --download to fetch MNIST with torchvision into DIR/MNIST/raw."
    )
    if download:
        import torchvision

        root = data_roots(explicit_root)[0]
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            torchvision.datasets.MNIST(str(root), train=train, download=True)
    path = find_data(explicit_root, ["mnist.npz", "MNIST/raw"], "MNIST", how)
    if path.suffix == ".npz":
        with np.load(path) as f:
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    import torchvision

    train = torchvision.datasets.MNIST(str(path.parents[1]), train=True)
    test = torchvision.datasets.MNIST(str(path.parents[1]), train=False)
    return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()


def shuffled_mnist(root: str | None, download: bool, stream: str, data_seed: int, limit: int | None = None) -> tuple["np.ndarray", "np.ndarray"]:
    """MNIST train+test (70k) in the order of the stream (stream, data_seed, "shuffle"), as DomainBed's MNIST datasets.

    ``limit`` keeps the first ``limit`` images of that order (``size="tiny"``). Labels are int64.
    """
    import numpy as np

    from bench.seeding import rng

    x_tr, y_tr, x_te, y_te = load_mnist(root, download)
    images, digits = np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te]).astype(np.int64)
    order = rng(stream, data_seed, "shuffle").permutation(len(images))[:limit]
    return images[order], digits[order]
