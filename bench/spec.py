"""RunSpec: everything that changes a run's results, hashed into its run_id. RuntimeOptions: the rest."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from bench.errors import UserError
from bench.seeding import canonical_json

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RunSpec:
    """One run. Optional fields left at None are omitted from the hash, so adding one keeps old run_ids."""

    algorithm: str
    dataset: str
    test_envs: tuple[str, ...]
    trial_seed: int
    hparams_seed: int
    overrides: Mapping[str, Any]
    steps: int
    eval_every: int
    holdout_fraction: float
    size: str
    algorithm_version: int
    dataset_version: int
    precision: str | None = None  # None = fp32; "bf16" = autocast to bfloat16 around training and evaluation

    @property
    def data_seed(self) -> int:
        """Data (colouring, shuffles) is redrawn per trial, shared by every algorithm in it."""
        return self.trial_seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_envs"] = list(self.test_envs)
        d["overrides"] = dict(self.overrides)
        return {k: v for k, v in d.items() if v is not None}

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["test_envs"] = tuple(kwargs["test_envs"])
        return cls(**kwargs)


@dataclass
class RuntimeOptions:
    """Where and how a run executes; never changes its numbers, so not hashed."""

    output_dir: Path = Path("bench_output")
    data_dir: str | None = None
    device: str = "cpu"
    download: bool = False
    progress: bool = True
    threads: int | None = None  # None: torch's default, capped by the cores this process may use
    eval_batch_size: int = 128
    eval_splits: str = "needed"  # "needed": skip splits no selection rule reads (see evaluation.py); "all"
    channels_last: bool | None = None  # None: on for models with 2-D convolutions on CPU, where it is faster
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def make_spec(
    algorithm: str,
    dataset: str,
    test_envs: list[str] | tuple[str, ...] | None = None,
    trial_seed: int = 0,
    hparams_seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
    holdout_fraction: float | None = None,
    size: str = "full",
    precision: str | None = None,
) -> RunSpec:
    """A validated RunSpec; defaults come from the dataset. Bad input raises UserError."""
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    alg_cls, ds_cls = ALGORITHMS.get(algorithm), DATASETS.get(dataset)
    names = ds_cls.env_names()
    chosen = tuple(test_envs) if test_envs else ds_cls.default_test_envs()
    unknown = [e for e in chosen if e not in names]
    if unknown:
        raise UserError(f"unknown test environment(s) {', '.join(unknown)} for {dataset}; environments: {', '.join(names)}")
    if len(set(chosen)) >= len(names):
        raise UserError(f"test environments {list(chosen)} leave no training environment in {dataset}")
    for value, what in ((trial_seed, "trial seed"), (hparams_seed, "hparams seed")):
        if value < 0:
            raise UserError(f"{what} must be >= 0, got {value}")
    holdout = ds_cls.HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"holdout fraction must lie in [0, 1), got {holdout}")
    if size not in ("full", "tiny"):
        raise UserError(f"size must be 'full' or 'tiny', got {size!r}")
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    spec = RunSpec(
        algorithm=algorithm,
        dataset=dataset,
        test_envs=tuple(e for e in names if e in chosen),
        trial_seed=trial_seed,
        hparams_seed=hparams_seed,
        overrides=dict(overrides or {}),
        steps=ds_cls.N_STEPS if steps is None else steps,
        eval_every=ds_cls.EVAL_EVERY if eval_every is None else eval_every,
        holdout_fraction=holdout,
        size=size,
        algorithm_version=alg_cls.VERSION,
        dataset_version=ds_cls.VERSION,
        precision=None if precision == "fp32" else precision,  # fp32 is the default: same run_id as before
    )
    if spec.steps < 1 or spec.eval_every < 1:
        raise UserError(f"steps and eval_every must be >= 1, got {spec.steps} and {spec.eval_every}")
    resolve_hparams(spec)  # validates the overrides now, not inside a worker
    return spec


def resolve_hparams(spec: RunSpec) -> dict[str, Any]:
    """Defaults or this (hparams_seed, trial_seed)'s random draw, then the validated overrides."""
    from bench import hparams as hp
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    space = hp.space_for(ALGORITHMS.get(spec.algorithm), DATASETS.get(spec.dataset), spec.overrides.get("featurizer"))
    if "weights" in spec.overrides and "weights" not in space:
        raise UserError(f"--weights needs a ResNet featurizer; {spec.dataset} uses {space['featurizer'].default}: add --hparams '{{\"featurizer\": \"resnet18\"}}' (or resnet50)")
    values = hp.sample(space, spec.algorithm, spec.dataset, spec.hparams_seed, spec.trial_seed)
    return hp.apply_overrides(space, values, spec.overrides)
