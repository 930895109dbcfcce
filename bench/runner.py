"""One run: build data and algorithm, train with seeded minibatches, evaluate, checkpoint, resume.

A run directory is claimed with an OS file lock (released if the process dies), so
any number of workers may share an output directory without training a run twice.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench import records
from bench.algorithms import ALGORITHMS, Algorithm
from bench.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from bench.datasets import DATASETS, EnvData, load_dataset
from bench.evaluation import evaluate, skipped_splits
from bench.execution import (
    claim,
    cpu_threads,
    freed_memory_kept,
    freeze_long_lived_objects,
    out_of_memory_explained,
    precision_context,
    wants_channels_last,
)
from bench.posthoc.averaging import NoAveraging, averaging_hook
from bench.protocol import protocol_card
from bench.run_data import RunData
from bench.sampling import MinibatchSampler, UnlabeledStream, holdout_splits
from bench.seeding import stable_hash
from bench.spec import RunSpec, RuntimeOptions, resolve_hparams

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    status: str  # ok | diverged | skipped (already done) | busy (claimed by another worker)
    last_record: dict[str, Any] | None
    wall_s: float = 0.0


def run(spec: RunSpec, options: RuntimeOptions) -> RunOutcome:
    """Train ``spec`` to completion (resuming from a checkpoint) unless it is done or claimed."""
    directory = records.run_dir(options.output_dir, spec.run_id)
    if (directory / records.DONE).exists() and is_finished(spec, directory):
        return finished_outcome(spec, directory)
    with claim(directory) as mine:
        if not mine:
            return RunOutcome(spec.run_id, directory, "busy", None)
        if inspect_run(spec, directory) == "finished":  # finished while we waited for the lock
            return finished_outcome(spec, directory)
        with freed_memory_kept(), out_of_memory_explained(f"{spec.algorithm} on {spec.dataset}"):
            return _train(spec, options, directory)


def is_finished(spec: RunSpec, directory: Path) -> bool:
    """Done and intact (records complete, spec equal to the request)."""
    try:
        return records.check_run(directory, spec.to_dict())[0] in ("ok", "diverged")
    except records.DamagedRun:
        return False


def inspect_run(spec: RunSpec, directory: Path) -> str:
    """finished, partial or new; a damaged run is reset (one warning line) and trained again as new.

    Call while holding the run's lock.
    """
    if not (directory / records.SPEC).exists():
        records.reset_run(directory)  # records or a checkpoint without a spec cannot be trusted
        return "new"
    try:
        status, _ = records.check_run(directory, spec.to_dict())
    except records.DamagedRun as exc:
        log.warning("run %s is damaged (%s); training it again from scratch", spec.run_id, exc)
        records.reset_run(directory)
        return "new"
    records.clean_temp_files(directory)
    return "finished" if status in ("ok", "diverged") else "partial"


def finished_outcome(spec: RunSpec, directory: Path) -> RunOutcome:
    found = records.read_records(directory / records.RESULTS)
    done = records.read_json(directory / records.DONE)
    return RunOutcome(
        spec.run_id, directory, "skipped", found[-1] if found else None, done.get("wall_s", 0.0)
    )


def _seed_everything(spec: RunSpec) -> None:
    """Initialisation and dropout draw from (trial_seed, hparams_seed): equal across algorithms, as
    in DomainBed."""
    seed = stable_hash("init", spec.trial_seed, spec.hparams_seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class RunContext:
    """Everything one run's loop needs, built once by ``prepare``."""

    spec: RunSpec
    options: RuntimeOptions
    directory: Path
    device: torch.device
    hparams: dict[str, Any]
    envs: dict[str, EnvData]
    splits: dict[str, dict[str, Tensor]]
    train_envs: list[str]
    samplers: dict[str, MinibatchSampler]
    full: dict[str, EnvData]  # full-batch runs: each training split gathered once, not every step
    algorithm: Algorithm
    meta: dict[str, Any]
    skip: set[tuple[str, str]]
    start: int = 0
    wall_offset: float = 0.0
    averaging: NoAveraging = NoAveraging()  # weight averages (bench/posthoc/averaging.py)
    unlabeled: UnlabeledStream = UnlabeledStream({}, {}, 0, 0)  # UDA's test-env inputs; DG: none

    def minibatches(self, step: int) -> list[tuple[Tensor, Tensor]]:
        out = []
        for name in self.train_envs:
            idx = self.samplers[name].indices(step)
            if idx is None:
                out.append(self.full[name].batch(None, train=True))
            else:
                out.append(
                    self.envs[name].batch(self.splits[name]["in"][idx.to(self.device)], train=True)
                )
        return out

    def evaluate(self) -> dict[str, Any]:
        """Every split's scores at the run's precision (what a record's ``eval`` holds)."""
        with precision_context(self.device, self.spec.precision):
            return evaluate(
                self.algorithm, self.envs, self.splits, self.options.eval_batch_size, self.skip
            )

    def record(
        self, step: int, wall: float, train: dict[str, float], scores: dict | None = None
    ) -> dict[str, Any]:
        """Evaluate (unless ``scores`` holds the evaluation, e.g. a vectorised group's), append
        the record and write the checkpoint (in that order, as resume expects)."""
        record = self.new_record(step, wall, train, scores)
        records.append_record(self.directory / records.RESULTS, record)
        with precision_context(self.device, self.spec.precision):
            averaged = self.averaging.at_record(self, step, record)
        self.write_checkpoint(self.checkpoint(step, wall, averaged))
        return record

    def new_record(
        self, step: int, wall: float, train: dict[str, float], scores: dict | None = None
    ) -> dict[str, Any]:
        """The record of step ``step``, evaluating unless ``scores`` holds the evaluation."""
        spec, batch = self.spec, self.hparams["batch_size"]
        return {
            "schema": records.SCHEMA,
            "run_id": spec.run_id,
            "step": step,
            "epoch": (step + 1) * batch / min(len(self.splits[n]["in"]) for n in self.train_envs)
            if batch
            else step + 1,
            "wall_s": wall,
            "spec": spec.to_dict(),
            "metric": DATASETS.get(spec.dataset).METRIC,
            "train": train,
            "eval": self.evaluate() if scores is None else scores,
            "meta": self.meta,
        }

    def checkpoint(
        self, step: int, wall: float, averaged: dict[str, Any] | None = None, rng: Any = None
    ) -> bytes:
        """The checkpoint of step ``step``, serialised: the algorithm, ``rng`` as the global RNG
        state (None: the current one) and the averaging hook's state."""
        state = {
            "algorithm": self.algorithm.state_dict(),
            "rng": capture_rng_state(self.device) if rng is None else rng,
            "step": step,
            "wall_s": wall,
            **(averaged or {}),
        }
        return records.torch_bytes(state)

    def write_checkpoint(self, data: bytes) -> None:
        records.write_bytes(self.directory / records.CHECKPOINT, data)

    def finish(
        self, status: str, step: int, wall: float, last: dict[str, Any] | None
    ) -> RunOutcome:
        records.write_json(
            self.directory / records.DONE, {"status": status, "step": step, "wall_s": wall}
        )
        results = self.directory / records.RESULTS
        return RunOutcome(
            self.spec.run_id,
            self.directory,
            status,
            last or (records.read_records(results) or [None])[-1],
            wall,
        )


def run_data(spec: RunSpec, options: RuntimeOptions) -> RunData:
    """The run's dataset (built once per worker), its holdout splits and training environments:
    what the runner trains on and hands the algorithm's ``prepare_run``."""
    dataset = load_dataset(
        spec.dataset, options.data_dir, spec.data_seed, spec.size, options.download
    )
    return RunData(
        spec,
        dataset,
        holdout_splits(dataset, spec.trial_seed, spec.holdout_fraction),
        [name for name in dataset.envs if name not in spec.test_envs],
        Path(options.output_dir),
        torch.device(options.device),
    )


def _full_batch(env: EnvData, idx: Tensor) -> EnvData:
    """The split as its own EnvData; no copy when it is the whole environment (holdout 0)."""
    if len(idx) == len(env) and bool((idx == torch.arange(len(env), device=idx.device)).all()):
        return env
    x, y = env.batch(idx)
    return EnvData(x, y, env.augment)


def prepare(spec: RunSpec, options: RuntimeOptions, directory: Path) -> RunContext:
    """Data, splits, samplers and the algorithm, restored from the checkpoint when one exists."""
    directory.mkdir(parents=True, exist_ok=True)
    # Default: torch's own choice (physical cores), capped by this process's CPU affinity (e.g. a
    # Slurm allocation).
    torch.set_num_threads(options.threads or min(torch.get_num_threads(), cpu_threads()))
    device = torch.device(options.device)
    hparams = resolve_hparams(spec)
    ds_cls = DATASETS.get(spec.dataset)
    data = run_data(spec, options)
    dataset, train_envs = data.dataset, data.train_envs
    envs = {name: env.to(device) for name, env in dataset.envs.items()}
    envs = dataset.for_run(envs, spec.test_envs)  # e.g. csv: standardised on the training envs
    augment = dataset.augmentation(hparams)
    for env in envs.values():  # copies made by .to(): the cached dataset stays unaugmented
        env.augment = augment or env.augment
    splits = {
        name: {k: v.to(device) for k, v in parts.items()} for name, parts in data.splits.items()
    }
    unlabeled = UnlabeledStream.for_run(envs, splits, spec, hparams["batch_size"])  # UDA only
    samplers = {
        name: MinibatchSampler(
            len(splits[name]["in"]), hparams["batch_size"], spec.trial_seed, name
        )
        for name in train_envs
    }
    full = (
        {name: _full_batch(envs[name], splits[name]["in"]) for name in train_envs}
        if hparams["batch_size"] == 0
        else {}
    )

    _seed_everything(spec)
    algorithm = ALGORITHMS.get(spec.algorithm)(
        ds_cls.INPUT_SHAPE, ds_cls.num_outputs(), len(train_envs), hparams, **unlabeled.kwargs
    ).to(device)
    if wants_channels_last(algorithm, device, options.channels_last):
        algorithm = algorithm.to(memory_format=torch.channels_last)
    setup = algorithm.prepare_run(data)  # e.g. a recipe's pretraining, on the data built here

    ctx = RunContext(
        spec,
        options,
        directory,
        device,
        hparams,
        envs,
        splits,
        train_envs,
        samplers,
        full,
        algorithm,
        records.provenance(str(device)),
        skipped_splits(splits, spec.test_envs, options.eval_splits),
        unlabeled=unlabeled,
    )
    results, checkpoint = directory / records.RESULTS, directory / records.CHECKPOINT
    state = _consistent_checkpoint(spec, directory) if checkpoint.exists() else None
    if state is not None:
        algorithm.load_state_dict(state["algorithm"])
        restore_rng_state(state["rng"], device)
        ctx.start, ctx.wall_offset = state["step"] + 1, state["wall_s"]
        records.truncate_records(results, state["step"])
        log.info("resuming %s from step %d", spec.run_id, ctx.start)
    else:
        results.unlink(missing_ok=True)
        checkpoint.unlink(missing_ok=True)
    ctx.averaging = averaging_hook(ctx, state)
    if not (directory / records.SPEC).exists():
        records.write_json(
            directory / records.SPEC,
            {
                "spec": spec.to_dict(),
                "run_id": spec.run_id,
                "hparams": hparams,
                "command": options.command,
                "meta": ctx.meta,
                "protocol": protocol_card(spec.to_dict()),
                **({"transfer": setup} if setup else {}),
            },
        )
    return ctx


def _consistent_checkpoint(spec: RunSpec, directory: Path) -> dict[str, Any] | None:
    """The checkpoint if it is readable and its step has a record; else None (one warning: restart
    from scratch)."""
    state = load_checkpoint(directory / records.CHECKPOINT)
    if state is None:
        log.warning("run %s: its checkpoint is unreadable; restarting it from scratch", spec.run_id)
        return None
    steps = [r["step"] for r in records.read_records(directory / records.RESULTS)]
    if state["step"] not in steps:
        log.warning(
            "run %s: checkpoint at step %s has no record (records end at %s); restarting "
            "it from scratch",
            spec.run_id,
            state["step"],
            steps[-1] if steps else "none",
        )
        return None
    return state


def is_record_step(spec: RunSpec, step: int) -> bool:
    return step % spec.eval_every == 0 or step == spec.steps - 1


def _train(spec: RunSpec, options: RuntimeOptions, directory: Path) -> RunOutcome:
    return train_loop(prepare(spec, options, directory))


def train_loop(ctx: RunContext) -> RunOutcome:
    """Train a prepared run from ``ctx.start`` to the end, recording every ``eval_every`` steps."""
    from tqdm.auto import tqdm

    spec, options, algorithm = ctx.spec, ctx.options, ctx.algorithm
    freeze_long_lived_objects()
    t0 = time.perf_counter() - ctx.wall_offset
    sums: dict[str, float] = {}
    count, status, last = 0, "ok", None
    bar = tqdm(
        range(ctx.start, spec.steps),
        initial=ctx.start,
        total=spec.steps,
        desc=f"{spec.algorithm}/{spec.dataset}",
        unit="step",
        disable=not (options.progress and sys.stderr.isatty()),
        leave=False,
    )
    step = ctx.start - 1
    for step in bar:
        minibatches = ctx.minibatches(step)
        with precision_context(ctx.device, spec.precision):
            stats = algorithm.update(minibatches, *ctx.unlabeled.update_args(step))
        if not all(math.isfinite(v) for v in stats.values()):
            status = "diverged"
            log.warning("run %s diverged at step %d: %s", spec.run_id, step, stats)
            break
        ctx.averaging.after_step(algorithm, step)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        if is_record_step(spec, step):
            last = ctx.record(
                step, time.perf_counter() - t0, {key: value / count for key, value in sums.items()}
            )
            sums, count = {}, 0
            bar.set_postfix(loss=f"{last['train'].get('loss', float('nan')):.4f}")
    bar.close()
    return ctx.finish(status, step, time.perf_counter() - t0, last)
