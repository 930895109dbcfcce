"""Transfer tasks: a target to adapt on, its held-out test splits, and a source to pretrain on.

A task is a ``MultiEnvDataset`` whose one training environment is ``target`` (its
``in``/``out`` holdout gives train/validation) and whose test environments are
``target_test`` (in-distribution) and any out-of-distribution splits, so the runner,
sweeps, selection and the leaderboard need nothing new. The source is built only on
a pretraining-cache miss (``build_source``). Few-shot variants ``<task>_k<K>`` keep K
target examples per class (training + validation); the K-shot set is nested in
every larger one.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import ClassVar

import torch

from bench.datasets.base import DATASETS, EnvData, Environment, MultiEnvDataset, load_dataset
from bench.errors import UserError
from bench.seeding import rng

SHOTS = (10, 50, 100)


class TransferTask(MultiEnvDataset):
    """Subclasses implement ``build_target`` and ``build_source``; ``SOURCE_ID`` is shared by all
    shot variants."""

    TARGET: ClassVar[str] = "target"
    REFERENCE = (
        "bench's transfer protocol: pretrain on the source, adapt on the target (see "
        "bench/transfer/)"
    )
    SOURCE_ID: ClassVar[str]
    SOURCE_CLASSES: ClassVar[int]
    MODALITY: ClassVar[str] = "image"  # image | sequence | vector: picks the masked objective
    SHOTS: ClassVar[int | None] = None  # target examples per class; None = all

    def build(self) -> dict[str, EnvData]:
        target, test, ood = self.build_target()
        if self.SHOTS is not None:
            target = per_class_subset(target, self.SHOTS, self.SOURCE_ID, self.data_seed)
        return {self.TARGET: target, "target_test": test, **ood}

    def build_target(self) -> tuple[EnvData, EnvData, dict[str, EnvData]]:
        """(target training pool, in-distribution target test, {ood name: data})."""
        raise NotImplementedError

    def build_source(self) -> EnvData:
        """Labelled source examples, labels in ``[0, SOURCE_CLASSES)``."""
        raise NotImplementedError


def per_class_subset(env: EnvData, shots: int, key: str, data_seed: int) -> EnvData:
    """The first ``shots`` examples of each class in a seeded per-class order (nested across
    ``shots``)."""
    keep = []
    for label in torch.unique(env.y).tolist():
        members = torch.nonzero(env.y == label).flatten()
        order = torch.from_numpy(rng("shots", key, data_seed, label).permutation(len(members)))
        keep.append(members[order[:shots]])
    return subset(env, torch.cat(keep).sort().values)


def subset(env: EnvData, idx: torch.Tensor) -> EnvData:
    """Rows ``idx`` of ``env`` in the same storage class (e.g. uint8 DNA codes stay codes)."""
    return type(env)(env.x[idx], env.y[idx], env.augment)


def concat_envs(envs: list[EnvData]) -> EnvData:
    """One EnvData holding all rows of ``envs`` (same storage class)."""
    return type(envs[0])(
        torch.cat([e.x for e in envs]), torch.cat([e.y for e in envs]), envs[0].augment
    )


def register_task(name: str, shots: tuple[int, ...] = SHOTS):
    """Register a task under ``name`` (all target examples) and ``<name>_k<K>`` for each K in
    ``shots``."""

    def decorator(cls: type[TransferTask]) -> type[TransferTask]:
        DATASETS.register(name)(cls)
        for k in shots:
            DATASETS.register(f"{name}_k{k}")(_with_shots(cls, name, k))
        return cls

    return decorator


def _with_shots(cls: type[TransferTask], name: str, k: int) -> type[TransferTask]:
    """The ``k``-shot variant of task ``cls``."""
    return type(
        f"{cls.__name__}K{k}",
        (cls,),
        {
            "SHOTS": k,
            "__module__": cls.__module__,
            "__doc__": f"{cls.__doc__ or name} ({k} target examples per class)",
        },
    )


def task_dataset(task: str, shots: int | None) -> str:
    """The dataset name of ``task`` with ``shots`` target examples per class (None = all)."""
    name = task if shots is None else f"{task}_k{shots}"
    cls = DATASETS.get(task)
    if not issubclass(cls, TransferTask):
        raise UserError(
            f"{task} is a dataset, not a transfer task; tasks: {', '.join(task_names())}"
        )
    if name not in DATASETS:
        raise UserError(
            f"task {task} has no {shots}-shot variant; shots available: "
            f"{', '.join(map(str, SHOTS))} (or omit --shots for all)"
        )
    return name


def task_names() -> list[str]:
    """Base transfer tasks (without their few-shot variants)."""
    return [
        n
        for n in DATASETS.names()
        if issubclass(DATASETS.get(n), TransferTask) and DATASETS.get(n).SHOTS is None
    ]


def split_env(
    env: EnvData, test_fraction: float, key: str, data_seed: int
) -> tuple[EnvData, EnvData]:
    """A seeded (pool, test) split of one environment, for tasks whose target comes as one set."""
    perm = torch.from_numpy(rng("task-test", key, data_seed).permutation(len(env)))
    n_test = int(len(env) * test_fraction)
    return subset(env, perm[n_test:].sort().values), subset(env, perm[:n_test].sort().values)


class EnvTransferTask(TransferTask):
    """A task cut from a registered multi-environment dataset: pretrain on ``SOURCE_ENVS`` (pooled),
    adapt on ``TARGET_ENV`` (split into a training pool and ``target_test``), ``OOD_ENVS`` as test
    splits."""

    BASE: ClassVar[str]
    SOURCE_ENVS: ClassVar[tuple[str, ...]]
    TARGET_ENV: ClassVar[str]
    OOD_ENVS: ClassVar[tuple[str, ...]] = ()
    TEST_FRACTION: ClassVar[float] = 0.3

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        return DATASETS.get(cls.BASE).data_paths(root)

    def _base(self) -> MultiEnvDataset:
        """The base dataset, built once per process for target and source (and its own runs)."""
        return load_dataset(self.BASE, self.root, self.data_seed, self.size, self.download)

    def build_target(self) -> tuple[EnvData, EnvData, dict[str, EnvData]]:
        base = self._base()
        pool, test = split_env(
            base.envs[self.TARGET_ENV], self.TEST_FRACTION, self.SOURCE_ID, self.data_seed
        )
        return pool, test, {f"ood_{e}": base.envs[e] for e in self.OOD_ENVS}

    def build_source(self) -> EnvData:
        return concat_envs([self._base().envs[e] for e in self.SOURCE_ENVS])

    def augmentation(self, hparams):
        return self._base().augmentation(hparams)


def env_task(
    name: str,
    base: str,
    source: tuple[str, ...],
    target: str,
    ood: tuple[str, ...] = (),
    modality: str = "vector",
    overrides: dict | None = None,
    doc: str = "",
    shots: tuple[int, ...] = SHOTS,
) -> None:
    """Register ``name`` (and its few-shot variants) cut from environments of dataset ``base``.

    The classes are derived on first lookup, when every module (built-in or plugin) has
    registered: ``base`` may be defined after this call, in any module.
    """
    module = sys._getframe(1).f_globals.get("__name__", __name__)  # the defining module
    task = functools.partial(
        _env_task_class, name, base, source, target, ood, modality, overrides, doc, module
    )
    DATASETS.register_deferred(name, task)
    for k in shots:
        DATASETS.register_deferred(f"{name}_k{k}", functools.partial(_shot_class, name, k))


def _shot_class(name: str, k: int) -> type[TransferTask]:
    return _with_shots(DATASETS.get(name), name, k)


def _env_task_class(
    name: str,
    base: str,
    source: tuple[str, ...],
    target: str,
    ood: tuple[str, ...],
    modality: str,
    overrides: dict | None,
    doc: str,
    module: str,
) -> type[EnvTransferTask]:
    """The task class of ``env_task``, from the registered ``base`` dataset's declarations."""
    base_cls = DATASETS.get(base)
    envs = (
        Environment("target", {"from": f"{base}/{target}"}),
        Environment("target_test", {"from": f"{base}/{target}"}),
        *(Environment(f"ood_{e}", {"from": f"{base}/{e}"}) for e in ood),
    )
    attrs = {
        "__doc__": doc or f"{base}: pretrain on {'+'.join(source)}, adapt to {target}",
        "VERSION": base_cls.VERSION,
        "BASE": base,
        "SOURCE_ENVS": source,
        "TARGET_ENV": target,
        "OOD_ENVS": ood,
        "ENVIRONMENTS": envs,
        "TEST_ENVS": tuple(e.name for e in envs[1:]),
        "INPUT_SHAPE": base_cls.INPUT_SHAPE,
        "NUM_CLASSES": base_cls.NUM_CLASSES,
        "BINARY_LOGIT": base_cls.BINARY_LOGIT,
        "FEATURIZER": base_cls.FEATURIZER,
        "N_STEPS": base_cls.N_STEPS,
        "EVAL_EVERY": base_cls.EVAL_EVERY,
        "HPARAM_OVERRIDES": {**base_cls.HPARAM_OVERRIDES, **(overrides or {})},
        "HPARAMS": dict(base_cls.HPARAMS),
        "SOURCE_ID": f"{base}:{'+'.join(source)}",
        "SOURCE_CLASSES": base_cls.NUM_CLASSES,
        "MODALITY": modality,
        "__module__": module,
    }
    return type("".join(part.title() for part in name.split("_")), (EnvTransferTask,), attrs)
