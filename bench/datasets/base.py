"""The dataset contract (see DESIGN.md, "Dataset contract")."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping

import torch
from torch import Tensor

from bench.hparams import Fixed, Param
from bench.registry import Registry

DATASETS: Registry["MultiEnvDataset"] = Registry("dataset", "bench.builtins")

# DomainBed's hparams_registry for its SMALL_IMAGES datasets (ColoredMNIST, RotatedMNIST):
# weight decay is not searched there (lr 1e-3 from 10^U(-4.5, -2.5) and batch 64 from
# int(2^U(3, 9)) are the algorithm defaults already).
DOMAINBED_SMALL_IMAGES: dict[str, Param] = {
    "weight_decay": Fixed(0.0, "DomainBed: no weight decay on small images")
}
register_dataset = DATASETS.register

Size = Literal["full", "tiny"]


@dataclass(frozen=True)
class Environment:
    """One named distribution of a dataset; ``params`` documents how it differs (e.g. colour flip
    rate)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


class EnvData:
    """In-memory examples of one environment; ``batch`` gathers rows by index.

    ``augment`` (optional) is applied to training batches only, on whole batches.
    """

    def __init__(
        self, x: Tensor, y: Tensor, augment: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y, self.augment = x, y, augment

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: Tensor | None, train: bool = False) -> tuple[Tensor, Tensor]:
        """Rows ``idx`` (all rows when None) as float inputs and long labels."""
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        if train and self.augment is not None:
            x = self.augment(x)
        return x, y

    def to(self, device: torch.device | str) -> "EnvData":
        return EnvData(self.x.to(device), self.y.to(device), self.augment)


class MultiEnvDataset:
    """Base class: subclasses declare their environments and implement ``build``.

    Environments depend only on (dataset, data_seed, environment name, size), never
    on the algorithm, so every algorithm in a trial sees the same data.
    """

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    ENVIRONMENTS: ClassVar[tuple[Environment, ...]]
    TEST_ENVS: ClassVar[tuple[str, ...] | None] = None  # None: leave-one-domain-out over all
    INPUT_SHAPE: ClassVar[tuple[int, ...]]
    NUM_CLASSES: ClassVar[int]
    FEATURIZER: ClassVar[str] = "mlp"
    N_STEPS: ClassVar[int] = 5001
    EVAL_EVERY: ClassVar[int] = 100
    HOLDOUT_FRACTION: ClassVar[float] = 0.2
    REFERENCE: ClassVar[str] = (
        "bench's own generated task"  # the protocol followed (see bench/protocol.py)
    )
    SELECTION: ClassVar[tuple[str, ...]] = (
        "train_val",
        "oracle",
    )  # the selection rules its protocol reports
    METRIC: ClassVar[str] = (
        "acc"  # the primary metric selection and tables use: acc or mcc (see evaluation.py)
    )
    VALIDATION_ENV: ClassVar[str | None] = (
        None  # a held-out environment the ``val_env`` selection rule reads
    )
    BINARY_LOGIT: ClassVar[bool] = False  # one logit + BCE for 2 classes (the IRM paper's head)
    HPARAM_OVERRIDES: ClassVar[dict[str, Param]] = {}
    # Per-algorithm protocol layers, by registered algorithm name: the settings a paper (or a
    # search) tuned for that method on this data. The only place for "A on D" settings.
    ALGORITHM_HPARAMS: ClassVar[dict[str, dict[str, Param]]] = {}
    HPARAMS: ClassVar[
        dict[str, Param]
    ] = {}  # the dataset's own keys (e.g. augment), always in the space

    def __init__(
        self, root: str | None, data_seed: int, size: Size = "full", download: bool = False
    ) -> None:
        if size not in ("full", "tiny"):
            raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
        self.root, self.data_seed, self.size, self.download = root, data_seed, size, download
        self.envs: dict[str, EnvData] = self.build()
        self.check()

    def build(self) -> dict[str, EnvData]:
        raise NotImplementedError

    @classmethod
    @functools.lru_cache(maxsize=4)
    def shared(
        cls, root: str | None, data_seed: int, size: Size = "full", download: bool = False
    ) -> "MultiEnvDataset":
        """One instance per class and arguments in this process (the last few), for a sweep's
        runs; keyed by class, so a ``folder:`` name whose data changed gets a new one."""
        return cls(root, data_seed, size=size, download=download)

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        """The files or folders this dataset reads (their content is part of every run's identity).

        A dataset that reads files must list them here; the default, none, means generated
        data, identified by its VERSION and the data seed. Missing data raises DataNotFoundError.
        """
        return []

    def augmentation(self, hparams: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        """The train-time batch transform these hparams ask for (the runner attaches it to each
        env); None = none."""
        return None

    def for_run(
        self, envs: Mapping[str, EnvData], test_envs: tuple[str, ...]
    ) -> dict[str, EnvData]:
        """The environments one run trains and evaluates on; a run-dependent transform goes here
        (e.g. standardising with the training environments' statistics). Default: unchanged."""
        return dict(envs)

    @classmethod
    def env_names(cls) -> list[str]:
        return [env.name for env in cls.ENVIRONMENTS]

    @classmethod
    def num_outputs(cls) -> int:
        return 1 if cls.BINARY_LOGIT else cls.NUM_CLASSES

    @classmethod
    def default_test_envs(cls) -> tuple[str, ...]:
        """The declared test environments, or the first environment when any may be held out."""
        return cls.TEST_ENVS if cls.TEST_ENVS is not None else (cls.ENVIRONMENTS[0].name,)

    @classmethod
    def test_env_choices(cls) -> list[tuple[str, ...]]:
        """Leave-one-domain-out over all environments, or the single declared choice."""
        if cls.TEST_ENVS is not None:
            return [cls.TEST_ENVS]
        return [(name,) for name in cls.env_names()]

    def check(self) -> None:
        """Invariants: declared names unique and built, shapes and label range as declared."""
        names = self.env_names()
        if len(set(names)) != len(names):
            raise ValueError(f"{self.NAME}: duplicate environment names {names}")
        if list(self.envs) != names:
            raise ValueError(
                f"{self.NAME}: built environments {list(self.envs)} != declared {names}"
            )
        for name, env in self.envs.items():
            if len(env) == 0:
                raise ValueError(f"{self.NAME}/{name}: empty environment")
            x, y = env.batch(torch.arange(min(len(env), 256)))
            if tuple(x.shape[1:]) != tuple(self.INPUT_SHAPE):
                raise ValueError(
                    f"{self.NAME}/{name}: input shape {tuple(x.shape[1:])} != {self.INPUT_SHAPE}"
                )
            if y.dtype != torch.long:
                raise ValueError(f"{self.NAME}/{name}: labels must be torch.long, got {y.dtype}")
            if int(env.y.min()) < 0 or int(env.y.max()) >= self.NUM_CLASSES:
                raise ValueError(f"{self.NAME}/{name}: labels outside [0, {self.NUM_CLASSES})")


def load_dataset(
    name: str, root: str | None, data_seed: int, size: str, download: bool = False
) -> MultiEnvDataset:
    """Construct a dataset once per worker process and reuse it (``shared``): across the runs of
    a sweep, and by the transfer tasks cut from it (target and source from one build)."""
    return DATASETS.get(name).shared(root, data_seed, size, download)
