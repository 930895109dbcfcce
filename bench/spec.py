"""RunSpec: everything that changes a run's results, hashed into its run_id. RuntimeOptions: the
rest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from bench import hparams as hp
from bench.errors import DataNotFoundError, UserError
from bench.fingerprint import code_digests, data_fingerprint
from bench.posthoc.averaging_config import resolve_averaging
from bench.records import IDENTITY, record_steps
from bench.seeding import canonical_json

PRECISIONS = ("fp32", "fp32-onednn", "bf16")


@dataclass(frozen=True)
class RunSpec:
    """One run, fully resolved: every field changes its numbers and is hashed into ``run_id``.

    ``hparams`` are the resolved values (defaults or the random draw, then overrides),
    ``space`` a digest of the search space they were drawn from, ``data`` the content
    fingerprint of the dataset's files (``generated`` for generated data) and ``code``
    the source digests of plugin modules that define the algorithm or dataset.
    ``averaging`` is the weight-averaging option (bench/posthoc/averaging.py) and
    ``uda_fraction`` the domain-adaptation share of each test environment; each is left out of
    the hash when empty (0), so runs without it keep their ids.
    """

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
    precision: str
    hparams: Mapping[str, Any]
    space: str
    data: str
    code: Mapping[str, str]
    identity: int = IDENTITY
    averaging: Mapping[str, Any] = field(default_factory=dict)
    uda_fraction: float = 0.0  # > 0: unsupervised domain adaptation (see sampling.unlabeled_splits)

    @property
    def data_seed(self) -> int:
        """Data (colouring, shuffles) is redrawn per trial, shared by every algorithm in it."""
        return self.trial_seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_envs"] = list(self.test_envs)
        for key in ("overrides", "hparams", "code", "averaging"):
            d[key] = dict(d[key])
        if not d["averaging"]:
            del d["averaging"]
        if not d["uda_fraction"]:
            del d["uda_fraction"]
        return d

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    @property
    def record_steps(self) -> list[int]:
        """The steps a complete run has records for, in order."""
        return record_steps(self.steps, self.eval_every)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        """The spec recorded in a spec.json; UserError when it is not one of this scheme."""
        if d.get("identity") != IDENTITY:
            raise UserError(f"spec of identity scheme {d.get('identity', 1)}, expected {IDENTITY}")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d) - {"averaging", "uda_fraction"})
        if missing:
            raise UserError(f"spec lacks {', '.join(missing)}")
        return cls(**{**{k: d[k] for k in names if k in d}, "test_envs": tuple(d["test_envs"])})


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
    eval_splits: str = (
        "needed"  # "needed": skip splits no selection rule reads (see evaluation.py); "all"
    )
    channels_last: bool | None = (
        None  # None: on for models with 2-D convolutions on CPU, where it is faster
    )
    command: str = ""
    imports: tuple[str, ...] = ()  # plugin modules (--import) every worker imports before it runs
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
    data_dir: str | None = None,
    download: bool = False,
    data: str | None = None,
    averaging: str | Mapping[str, Any] | None = None,
    uda_fraction: float = 0.0,
) -> RunSpec:
    """A validated, fully resolved RunSpec; defaults come from the dataset. Bad input raises
    UserError.

    ``data_dir``/``download`` locate the dataset's files, whose content is fingerprinted;
    ``data`` passes that fingerprint when the caller computed it already (a sweep, once per
    dataset). ``averaging``: a weight-averaging kind (``"swad"``) or ``{"kind": ..., overrides}``.
    ``uda_fraction`` > 0 gives that share of each test environment to training, unlabeled
    (unsupervised domain adaptation); 0 is domain generalisation.
    """
    # lazy: the CLI imports this module at start-up, and the registries import torch
    from bench.algorithms import ALGORITHMS
    from bench.datasets import DATASETS

    alg_cls, ds_cls = ALGORITHMS.get(algorithm), DATASETS.get(dataset)
    algorithm, dataset = ALGORITHMS.canonical(algorithm), DATASETS.canonical(dataset)  # PACS: pacs
    names = ds_cls.env_names()
    chosen = tuple(test_envs) if test_envs else ds_cls.default_test_envs()
    unknown = [e for e in chosen if e not in names]
    if unknown:
        raise UserError(
            f"unknown test environment(s) {', '.join(unknown)} for {dataset}; "
            f"environments: {', '.join(names)}"
        )
    if len(set(chosen)) >= len(names):
        raise UserError(
            f"test environments {list(chosen)} leave no training environment in {dataset}"
        )
    for value, what in ((trial_seed, "trial seed"), (hparams_seed, "hparams seed")):
        if value < 0:
            raise UserError(f"{what} must be >= 0, got {value}")
    holdout = ds_cls.HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"holdout fraction must lie in [0, 1), got {holdout}")
    _check_uda(uda_fraction, alg_cls)
    if size not in ("full", "tiny"):
        raise UserError(f"size must be 'full' or 'tiny', got {size!r}")
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    steps = ds_cls.N_STEPS if steps is None else steps
    eval_every = ds_cls.EVAL_EVERY if eval_every is None else eval_every
    if steps < 1 or eval_every < 1:
        raise UserError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    overrides = dict(overrides or {})
    space = _space(alg_cls, ds_cls, overrides)
    return RunSpec(
        algorithm=algorithm,
        dataset=dataset,
        test_envs=tuple(e for e in names if e in chosen),
        trial_seed=trial_seed,
        hparams_seed=hparams_seed,
        overrides=overrides,
        steps=steps,
        eval_every=eval_every,
        holdout_fraction=holdout,
        size=size,
        algorithm_version=alg_cls.VERSION,
        dataset_version=ds_cls.VERSION,
        precision=precision,
        hparams=_resolve(space, algorithm, dataset, hparams_seed, trial_seed, overrides),
        space=space_digest(space),
        data=data or dataset_fingerprint(dataset, data_dir, download),
        code=code_digests(alg_cls, ds_cls),
        averaging=resolve_averaging(averaging, holdout),
        uda_fraction=float(uda_fraction),
    )


def _check_uda(fraction: float, alg_cls: type) -> None:
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"uda fraction must lie in [0, 1), got {fraction}")
    if fraction and alg_cls.FAMILY == "transfer":
        raise UserError(
            f"{alg_cls.NAME} is a transfer recipe (it adapts to a labelled target); "
            "--uda-fraction is for domain-generalisation algorithms"
        )


def _space(alg_cls: type, ds_cls: type, overrides: Mapping[str, Any]) -> dict[str, Any]:
    space = hp.space_for(alg_cls, ds_cls, overrides.get("featurizer"))
    if "weights" in overrides and "weights" not in space:
        raise UserError(
            f"--weights needs a ResNet featurizer; {ds_cls.NAME} uses "
            f'{space["featurizer"].default}: add --hparams \'{{"featurizer": '
            f'"resnet18"}}\' (or resnet50)'
        )
    return space


def _resolve(
    space: Mapping[str, Any],
    algorithm: str,
    dataset: str,
    hparams_seed: int,
    trial_seed: int,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Defaults or this (hparams_seed, trial_seed)'s random draw, then the validated overrides."""
    values = hp.sample(space, algorithm, dataset, hparams_seed, trial_seed)
    return hp.apply_overrides(space, values, overrides)


def space_digest(space: Mapping[str, Any]) -> str:
    """Digest of the search space (defaults, distributions, ranges; not the docs)."""
    described = {
        key: [type(p).__name__, {k: v for k, v in asdict(p).items() if k != "doc"}]
        for key, p in sorted(space.items())
    }
    text = json.dumps(
        described, sort_keys=True, separators=(",", ":"), default=repr
    )  # domains may be unbounded (inf)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_fingerprint(dataset: str, data_dir: str | None, download: bool = False) -> str:
    """The content fingerprint of ``dataset``'s files; with ``download``, missing files are fetched
    first."""
    from bench.datasets import DATASETS  # lazy: as in make_spec

    ds_cls = DATASETS.get(dataset)
    try:
        paths = ds_cls.data_paths(data_dir)
    except DataNotFoundError:
        if not download:
            raise
        ds_cls(
            data_dir, 0, size="tiny", download=True
        )  # fetches the files once, here, not in every worker
        paths = ds_cls.data_paths(data_dir)
    return data_fingerprint(paths)


def resolve_hparams(spec: RunSpec) -> dict[str, Any]:
    """The run's resolved hyperparameters (a copy)."""
    return dict(spec.hparams)
