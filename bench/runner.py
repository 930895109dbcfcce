"""One run: build data and algorithm, train with seeded minibatches, evaluate, checkpoint, resume.

A run directory is claimed with an OS file lock (released if the process dies), so
any number of workers may share an output directory without training a run twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from bench import records
from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS, MultiEnvDataset
from bench.evaluation import evaluate
from bench.seeding import rng, stable_hash, torch_generator
from bench.spec import RunSpec, RuntimeOptions, resolve_hparams

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    status: str  # ok | diverged | skipped (already done) | busy (claimed by another worker)
    last_record: dict[str, Any] | None
    wall_s: float = 0.0


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, root: str | None, data_seed: int, size: str, download: bool = False) -> MultiEnvDataset:
    """Construct a dataset once per worker process and reuse it across the runs of a sweep."""
    return DATASETS.get(name)(root, data_seed, size=size, download=download)


def holdout_splits(dataset: MultiEnvDataset, trial_seed: int, fraction: float) -> dict[str, dict[str, Tensor]]:
    """Per environment, a seeded permutation: the first ``int(n * fraction)`` are ``out``, the rest ``in``."""
    splits = {}
    for name, env in dataset.envs.items():
        perm = torch.from_numpy(rng("holdout", trial_seed, name).permutation(len(env)))
        n_out = int(len(env) * fraction)
        splits[name] = {"in": perm[n_out:].sort().values, "out": perm[:n_out].sort().values}
    return splits


class MinibatchSampler:
    """Indices for step ``t``: positions [t*b, (t+1)*b) of a stream of per-epoch permutations.

    Each epoch's permutation is drawn from the stream (trial_seed, env, epoch), so the
    batch at any step is a pure function of (trial_seed, env, step): resuming reproduces it.
    ``batch_size == 0`` means the whole split every step.
    """

    def __init__(self, n: int, batch_size: int, trial_seed: int, env: str) -> None:
        self.n, self.batch_size, self.key = n, batch_size, ("minibatch", trial_seed, env)
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=torch_generator(*self.key, epoch))
        return self._cache[epoch]

    def indices(self, step: int) -> Tensor | None:
        if self.batch_size == 0:
            return None
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        parts = []
        while start < stop:
            epoch, offset = divmod(start, self.n)
            take = min(stop - start, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + take])
            start += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Yield True while this process holds the run's lock, False if another worker does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(spec: RunSpec, options: RuntimeOptions) -> RunOutcome:
    """Train ``spec`` to completion (resuming from a checkpoint) unless it is done or claimed."""
    directory = records.run_dir(options.output_dir, spec.run_id)
    if (directory / records.DONE).exists():
        return _finished(spec, directory)
    with claim(directory) as mine:
        if not mine:
            return RunOutcome(spec.run_id, directory, "busy", None)
        if (directory / records.DONE).exists():  # finished while we waited for the lock
            return _finished(spec, directory)
        return _train(spec, options, directory)


def _finished(spec: RunSpec, directory: Path) -> RunOutcome:
    found = records.read_records(directory / records.RESULTS)
    done = records.read_json(directory / records.DONE)
    return RunOutcome(spec.run_id, directory, "skipped", found[-1] if found else None, done.get("wall_s", 0.0))


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(spec: RunSpec) -> None:
    """Initialisation and dropout draw from (trial_seed, hparams_seed): equal across algorithms, as in DomainBed."""
    seed = stable_hash("init", spec.trial_seed, spec.hparams_seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _train(spec: RunSpec, options: RuntimeOptions, directory: Path) -> RunOutcome:
    from tqdm.auto import tqdm

    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    hparams = resolve_hparams(spec)
    ds_cls = DATASETS.get(spec.dataset)
    dataset = load_dataset(spec.dataset, options.data_dir, spec.data_seed, spec.size, options.download)
    envs = {name: env.to(device) for name, env in dataset.envs.items()}
    splits = {name: {k: v.to(device) for k, v in parts.items()} for name, parts in holdout_splits(dataset, spec.trial_seed, spec.holdout_fraction).items()}
    train_envs = [name for name in envs if name not in spec.test_envs]
    samplers = {name: MinibatchSampler(len(splits[name]["in"]), hparams["batch_size"], spec.trial_seed, name) for name in train_envs}

    _seed_everything(spec)
    algorithm = ALGORITHMS.get(spec.algorithm)(ds_cls.INPUT_SHAPE, ds_cls.num_outputs(), len(train_envs), hparams).to(device)

    results, checkpoint = directory / records.RESULTS, directory / records.CHECKPOINT
    meta = records.provenance(str(device))
    start, wall_offset = 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        algorithm.load_state_dict(state["algorithm"])
        _set_rng_state(state["rng"], device)
        start, wall_offset = state["step"] + 1, state["wall_s"]
        records.truncate_records(results, state["step"])
        log.info("resuming %s from step %d", spec.run_id, start)
    else:
        results.unlink(missing_ok=True)
    if not (directory / records.SPEC).exists():
        records.write_json(directory / records.SPEC, {"spec": spec.to_dict(), "run_id": spec.run_id, "hparams": hparams, "command": options.command, "meta": meta})

    t0 = time.perf_counter() - wall_offset
    sums: dict[str, float] = {}
    count, status, last = 0, "ok", None
    bar = tqdm(range(start, spec.steps), initial=start, total=spec.steps, desc=f"{spec.algorithm}/{spec.dataset}", unit="step", disable=not options.progress, leave=False)
    step = start - 1
    for step in bar:
        minibatches = []
        for name in train_envs:
            idx = samplers[name].indices(step)
            minibatches.append(envs[name].batch(splits[name]["in"] if idx is None else splits[name]["in"][idx.to(device)], train=True))
        stats = algorithm.update(minibatches)
        if not all(math.isfinite(v) for v in stats.values()):
            status = "diverged"
            log.warning("run %s diverged at step %d: %s", spec.run_id, step, stats)
            break
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        if step % spec.eval_every == 0 or step == spec.steps - 1:
            wall = time.perf_counter() - t0
            last = {
                "schema": records.SCHEMA,
                "run_id": spec.run_id,
                "step": step,
                "epoch": (step + 1) * hparams["batch_size"] / min(len(splits[n]["in"]) for n in train_envs) if hparams["batch_size"] else step + 1,
                "wall_s": wall,
                "spec": spec.to_dict(),
                "hparams": hparams,
                "train": {key: value / count for key, value in sums.items()},
                "eval": evaluate(algorithm, envs, splits, options.eval_batch_size),
                "meta": meta,
            }
            records.append_record(results, last)
            records.write_atomic(checkpoint, lambda f: torch.save({"algorithm": algorithm.state_dict(), "rng": _rng_state(device), "step": step, "wall_s": wall}, f))
            sums, count = {}, 0
            bar.set_postfix(loss=f"{last['train'].get('loss', float('nan')):.4f}")
    bar.close()
    wall = time.perf_counter() - t0
    records.write_json(directory / records.DONE, {"status": status, "step": step, "wall_s": wall})
    return RunOutcome(spec.run_id, directory, status, last or (records.read_records(results) or [None])[-1], wall)
