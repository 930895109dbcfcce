"""Sweeps: expand a grid into RunSpecs, find what is already done, launch the rest.

The state of a sweep lives only in its run directories, so re-running the same
command after any crash is the resume: done runs are skipped, partial runs resume
from their checkpoints, new runs start.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from bench import records
from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.launchers import Finished, get
from bench.spec import RunSpec, RuntimeOptions, dataset_fingerprint, make_spec

TEST_ENV_MODES = ("single", "all", "pairs")


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: algorithm x dataset x test envs x hparams seed x trial seed."""

    algorithms: tuple[str, ...]
    datasets: tuple[str, ...]
    n_hparams: int = 1
    n_trials: int = 1
    test_envs: str = "single"  # single | all | pairs | comma-separated names
    steps: int | None = None
    eval_every: int | None = None
    holdout_fraction: float | None = None
    size: str = "full"
    precision: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    averaging: str | Mapping[str, Any] | None = None  # weight averaging (bench/posthoc/)
    uda_fraction: float = 0.0  # > 0: unsupervised domain adaptation (RunSpec.uda_fraction)


def test_env_choices(dataset: str, mode: str) -> list[tuple[str, ...]]:
    """Test-environment sets for one dataset.

    single: the dataset's protocol (its declared test envs, or each env in turn);
    all: each environment in turn; pairs: single plus every (test env, other env) pair,
    which leave-one-domain-out selection needs (one more held-out env per choice);
    otherwise comma-separated names = one set.
    """
    cls = DATASETS.get(dataset)
    names = cls.env_names()
    if mode == "single":
        return [tuple(c) for c in cls.test_env_choices()]
    if mode == "all":
        return [(n,) for n in names]
    if mode == "pairs":
        singles = [tuple(c) for c in cls.test_env_choices()]
        pairs = {
            tuple(e for e in names if e in t or e == v)
            for t in singles
            for v in names
            if v not in t
        }
        if any(len(p) >= len(names) for p in pairs):  # a pair run must keep a training environment
            raise UserError(
                f"--test-envs pairs: {dataset} has too few environments for leave-one-out pairs"
            )
        return singles + sorted(pairs, key=lambda p: [names.index(e) for e in p])
    return [tuple(e.strip() for e in mode.split(",") if e.strip())]


def expand(grid: Grid, data_dir: str | None = None, download: bool = False) -> list[RunSpec]:
    """Every RunSpec of the grid, trial-major (an interrupted sweep holds whole trials), validated
    up front.

    ``data_dir``/``download`` locate each dataset's files, whose content fingerprint is part of
    every run id.
    """
    for value, what in ((grid.n_hparams, "--n-hparams"), (grid.n_trials, "--n-trials")):
        if value < 1:
            raise UserError(f"{what} must be >= 1, got {value}")
    if not grid.algorithms or not grid.datasets:
        raise UserError("a sweep needs at least one algorithm and one dataset")
    specs = []
    fingerprints = {d: dataset_fingerprint(d, data_dir, download) for d in grid.datasets}
    for trial, dataset in itertools.product(range(grid.n_trials), grid.datasets):
        choices = test_env_choices(dataset, grid.test_envs)
        for algorithm, test_envs, hseed in itertools.product(
            grid.algorithms, choices, range(grid.n_hparams)
        ):
            specs.append(
                make_spec(
                    algorithm,
                    dataset,
                    test_envs=list(test_envs),
                    trial_seed=trial,
                    hparams_seed=hseed,
                    overrides=grid.overrides,
                    steps=grid.steps,
                    eval_every=grid.eval_every,
                    holdout_fraction=grid.holdout_fraction,
                    size=grid.size,
                    precision=grid.precision,
                    data=fingerprints[dataset],
                    averaging=grid.averaging,
                    uda_fraction=grid.uda_fraction,
                )
            )
    return list({s.run_id: s for s in specs}.values())  # explicit test-env sets may repeat


def state(output_dir: str | Path, spec: RunSpec) -> str:
    """done (finished and intact), damaged (finished but short or corrupt: trained again), partial
    (started), or new."""
    directory = records.run_dir(output_dir, spec.run_id)
    if not directory.exists():
        return "new"
    if not (directory / records.DONE).exists():
        return "partial"
    try:
        records.check_run(directory, spec.to_dict())
    except records.DamagedRun:
        return "damaged"
    return "done"


def states(output_dir: str | Path, specs: Iterable[RunSpec]) -> dict[str, list[RunSpec]]:
    found: dict[str, list[RunSpec]] = {"done": [], "damaged": [], "partial": [], "new": []}
    for spec in specs:
        found[state(output_dir, spec)].append(spec)
    return found


@dataclass
class SweepResult:
    before: dict[str, int]
    finished: list[Finished]

    @property
    def counts(self) -> Counter:
        return Counter(f.status for f in self.finished)


def launch(
    specs: Sequence[RunSpec],
    options: RuntimeOptions,
    launcher: str = "local",
    progress: bool = True,
    on_line: Callable[[str], None] | None = None,
    **launcher_args: Any,
) -> SweepResult:
    """Run every spec that is not done through ``launcher``, with a progress bar (and ETA).

    Without a terminal (a log file, CI) a bar is noise: ``on_line`` gets a line per finished run.
    """
    from tqdm.auto import tqdm

    found = states(options.output_dir, specs)
    todo = (
        found["partial"] + found["damaged"] + found["new"]
    )  # partial first: they hold checkpoints
    before = {k: len(v) for k, v in found.items()}
    finished: list[Finished] = []
    bar_shown = progress and sys.stderr.isatty()
    by_id = {spec.run_id: spec for spec in todo}
    if todo:
        with tqdm(
            total=len(todo), unit="run", desc="sweep", disable=not bar_shown, dynamic_ncols=True
        ) as bar:
            for outcome in get(launcher)(todo, options, **launcher_args):
                finished.append(outcome)
                bar.update(1)
                bar.set_postfix(Counter(f.status for f in finished), refresh=False)
                if progress and not bar_shown and on_line is not None:
                    spec = by_id.get(outcome.run_id)
                    on_line(finished_line(len(finished), len(todo), outcome, spec))
    return SweepResult(before, finished)


def finished_line(done: int, total: int, outcome: Finished, spec: RunSpec | None) -> str:
    """``[2/6] ok erm on folder:digits, test a (trial 0, hparams 0) 5.1s run 1a2b...``."""
    what = ""
    if spec is not None:
        seeds = f"(trial {spec.trial_seed}, hparams {spec.hparams_seed})"
        what = f"{spec.algorithm} on {spec.dataset}, test {','.join(spec.test_envs)} {seeds}"
    return f"[{done}/{total}] {outcome.status} {what} {outcome.wall_s:.1f}s run {outcome.run_id}"


# The default benchmark (``python -m bench run`` with no arguments): Colored MNIST without MNIST
# (``spurious_toy``: invariant feature 75%, spurious colour 90% / 80% in training and 10% at test)
# and its oracle (``spurious_toy_oracle``: the colour removed), every algorithm on both, 3 trials at
# the dataset's declared settings (hparams seed 0; the invariance methods' were searched under
# training-domain validation, see bench/datasets/spurious_toy.py), train_val selection over
# checkpoints: 30 runs, under 3 minutes on two CPU cores. Fixed lists so the published numbers are
# reproducible; a listed algorithm that is not registered is skipped with a warning.
DEFAULT_ALGORITHMS = ("erm", "irm", "vrex", "fishr", "group_dro")
DEFAULT_GRID = Grid(
    algorithms=DEFAULT_ALGORITHMS,
    datasets=("spurious_toy", "spurious_toy_oracle"),
    n_hparams=1,
    n_trials=3,
    test_envs="single",
)


def default_grid() -> tuple[Grid, list[str]]:
    """The default benchmark grid restricted to registered algorithms, and the names skipped."""
    missing = [a for a in DEFAULT_GRID.algorithms if a not in ALGORITHMS]
    kept = tuple(a for a in DEFAULT_GRID.algorithms if a in ALGORITHMS)
    return dataclasses.replace(DEFAULT_GRID, algorithms=kept), missing
