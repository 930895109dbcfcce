"""A finished run rebuilt for post-hoc use: its data, splits and final weights, read-only.

The runner's ``prepare`` writes into the run directory (spec, truncated records); post-hoc
methods must never touch a finished run, so this rebuilds the same objects side-effect free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from bench import records
from bench.algorithms import ALGORITHMS, Algorithm
from bench.checkpoint import load_checkpoint
from bench.datasets import DATASETS, EnvData
from bench.errors import UserError
from bench.evaluation import skipped_splits
from bench.runner import _seed_everything, load_dataset
from bench.sampling import holdout_splits
from bench.spec import RunSpec, dataset_fingerprint


@dataclass
class TrainedRun:
    """One finished run: spec, data and the algorithm holding its final weights."""

    directory: Path
    spec: RunSpec
    info: dict[str, Any]  # spec.json
    last: dict[str, Any]  # its last record
    algorithm: Algorithm
    envs: dict[str, EnvData]
    splits: dict[str, dict[str, Tensor]]
    skip: set[tuple[str, str]]

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def build_algorithm(spec: RunSpec) -> Algorithm:
    """The algorithm exactly as the runner constructs it (same seeded initialisation)."""
    ds_cls = DATASETS.get(spec.dataset)
    n_train = len(ds_cls.env_names()) - len(spec.test_envs)
    _seed_everything(spec)
    return ALGORITHMS.get(spec.algorithm)(
        ds_cls.INPUT_SHAPE, ds_cls.num_outputs(), n_train, dict(spec.hparams)
    )


def load_trained(
    directory: str | Path, data_dir: str | None = None, eval_splits: str = "needed"
) -> TrainedRun:
    """The run in ``directory`` at its final checkpoint; UserError unless it finished ``ok``."""
    directory = Path(directory)
    status, found = records.check_run(directory)
    if status != "ok":
        raise UserError(f"{directory}: run is {status}; post-hoc methods need a finished run")
    info = records.read_spec(directory)
    spec = RunSpec.from_dict(info["spec"])
    state = load_checkpoint(directory / records.CHECKPOINT)
    if state is None or state["step"] != found[-1]["step"]:
        raise UserError(
            f"{directory / records.CHECKPOINT}: missing or not at the run's last step; "
            "re-run the run's command"
        )
    if dataset_fingerprint(spec.dataset, data_dir) != spec.data:
        raise UserError(
            f"{directory}: the data of {spec.dataset} differs from the run's (content "
            "fingerprint); point --data-dir at the data it was trained on"
        )
    algorithm = build_algorithm(spec)
    algorithm.load_state_dict(state["algorithm"])
    dataset = load_dataset(spec.dataset, data_dir, spec.data_seed, spec.size)
    envs = dataset.for_run(dict(dataset.envs), spec.test_envs)
    splits = holdout_splits(dataset, spec.trial_seed, spec.holdout_fraction)
    skip = skipped_splits(splits, spec.test_envs, eval_splits)
    return TrainedRun(directory, spec, info, found[-1], algorithm.eval(), envs, splits, skip)
