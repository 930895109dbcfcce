"""One seeded multi-task run: train, evaluate every task's splits, write JSON-lines records.

The run directory is bench's (``records``: spec.json, results.jsonl, done; ``records.check_run``
says whether it is whole), so DG tooling can list these runs; records carry ``kind =
"multitask"``. Minibatches are a pure function of (trial seed, task, step) and initialisation
of (trial seed, hparams seed), so a run repeats bit for bit. At every record the run writes a
checkpoint (the method's weights, its optimizer, every RNG and the step; loadable with
``weights_only=True``, ``bench.checkpoint``), so an interrupted run resumes from its last
record and ends with the records an uninterrupted one writes (wall times aside), as DG runs do.

Each record holds, per task and split, the task's metric (accuracy or mean squared error),
and the means since the previous record of the training loss, each task's loss and the
per-pair task gradient cosine on the shared parameters.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from bench import records
from bench.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from bench.execution import claim, cpu_model
from bench.multitask.method import METHODS, Batches, MultiTaskMethod
from bench.multitask.spec import MTLSpec
from bench.multitask.tasks import SPLITS, TASK_SETS, Split, TaskSet
from bench.seeding import stable_hash, torch_generator

log = logging.getLogger(__name__)
CPU = torch.device("cpu")  # multi-task runs train on the CPU


@dataclass(frozen=True)
class Outcome:
    run_id: str
    run_dir: Path
    status: str  # ok | diverged | skipped (already done) | busy (another process has it)
    last_record: dict[str, Any] | None


@functools.lru_cache(maxsize=4)
def load_task_set(name: str, root: str | None, data_seed: int, size: str) -> TaskSet:
    """Build a task set once per process and reuse it across the runs of a sweep."""
    return TASK_SETS.get(name)(root, data_seed, size)


def run(
    spec: MTLSpec, output_dir: str | Path, data_dir: str | None = None, command: str = ""
) -> Outcome:
    """Train ``spec`` unless a whole run with that id is already there; resume an unfinished
    one from its checkpoint."""
    directory = records.run_dir(output_dir, spec.run_id)
    done = _finished(spec, directory)
    if done is not None:
        return done
    with claim(directory) as mine:
        if not mine:
            return Outcome(spec.run_id, directory, "busy", None)
        done = _finished(spec, directory)
        if done is not None:
            return done
        state = resumable(spec, directory)
        if state is None:
            records.reset_run(directory)
        taskset = load_task_set(spec.tasks, data_dir, spec.data_seed, spec.size)
        return train(spec, directory, taskset, command, state)


def _finished(spec: MTLSpec, directory: Path) -> Outcome | None:
    if not (directory / records.DONE).exists():
        return None
    try:
        status, found = records.check_run(directory, spec.to_dict())
    except records.DamagedRun:
        return None
    return Outcome(spec.run_id, directory, "skipped", found[-1] if found else None)


def resumable(spec: MTLSpec, directory: Path) -> dict[str, Any] | None:
    """The checkpoint of an unfinished run of ``spec`` whose records reach its step, or None
    (then the run starts again from scratch; a warning says why when there was one)."""
    if not (directory / records.CHECKPOINT).exists():
        return None
    try:
        status, found = records.check_run(directory, spec.to_dict())
    except records.DamagedRun as exc:
        log.warning("run %s is damaged (%s); training it again from scratch", spec.run_id, exc)
        return None
    state = load_checkpoint(directory / records.CHECKPOINT)
    if status != "partial" or state is None or state["step"] not in [r["step"] for r in found]:
        log.warning("run %s: its checkpoint does not fit its records; restarting", spec.run_id)
        return None
    records.clean_temp_files(directory)
    return state


def write_checkpoint(directory: Path, method: MultiTaskMethod, step: int, wall: float) -> None:
    """After the record of ``step``: what ``train`` needs to go on from ``step + 1``."""
    state = {
        "algorithm": method.state_dict(),
        "optimizer": method.optimizer.state_dict(),
        "rng": capture_rng_state(CPU),
        "step": step,
        "wall_s": wall,
    }
    records.write_torch(directory / records.CHECKPOINT, state)


def build_method(spec: MTLSpec, taskset: TaskSet) -> MultiTaskMethod:
    """The method, initialised from the (trial seed, hparams seed) stream: equal across methods."""
    torch.manual_seed(stable_hash("mtl_init", spec.trial_seed, spec.hparams_seed))
    main = taskset.task_names().index(taskset.main_task())
    cls = METHODS.get(spec.method)
    return cls(taskset.TASKS, taskset.INPUT_SHAPE, spec.hparams, spec.steps, main)


def minibatch(
    split: Split, size: int, trial_seed: int, task: str, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` examples drawn with replacement (all of them for size 0), a function of the step."""
    if size == 0 or size >= len(split):
        return split.x, split.y
    idx = torch.randint(
        len(split), (size,), generator=torch_generator("mtl_minibatch", trial_seed, task, step)
    )
    return split.x[idx], split.y[idx]


@torch.no_grad()
def evaluate(
    method: MultiTaskMethod, taskset: TaskSet, chunk: int = 2048
) -> dict[str, dict[str, float]]:
    """Every task's metric on each of its splits."""
    method.eval()
    out = {}
    for j, task in enumerate(taskset.TASKS):
        out[task.name] = {}
        for name in SPLITS:
            split = taskset.data[task.name][name]
            outputs = torch.cat([method.predict(x, j) for x in split.x.split(chunk)])
            out[task.name][name] = task.evaluate(outputs, split.y)
    method.train()
    return out


class _Means:
    """Running means of the nested numbers ``update`` returns, reset at every record."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], float] = {}
        self.n = 0

    def add(self, values: dict[str, Any], prefix: tuple[str, ...] = ()) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                self.add(value, prefix + (key,))
            else:
                self.sums[prefix + (key,)] = self.sums.get(prefix + (key,), 0.0) + value
        self.n += not prefix

    def pop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, total in self.sums.items():
            node = out
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = total / max(self.n, 1)
        self.sums, self.n = {}, 0
        return out


def train(
    spec: MTLSpec,
    directory: Path,
    taskset: TaskSet,
    command: str = "",
    state: dict[str, Any] | None = None,
) -> Outcome:
    """Train from scratch, or from ``state`` (a checkpoint: see ``resumable``)."""
    method = build_method(spec, taskset)
    directory.mkdir(parents=True, exist_ok=True)
    first, offset, found = 0, 0.0, []
    if state is not None:
        method.load_state_dict(state["algorithm"])
        method.optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"], CPU)
        first, offset = state["step"] + 1, state["wall_s"]
        records.truncate_records(directory / records.RESULTS, state["step"])
        found = records.read_records(directory / records.RESULTS)[-1:]
        log.info("resuming %s from step %d", spec.run_id, first)
    else:
        records.write_json(
            directory / records.SPEC,
            {
                "spec": spec.to_dict(),
                "run_id": spec.run_id,
                "hparams": dict(spec.hparams),
                "command": command,
                "meta": {**records.provenance("cpu"), "cpu": cpu_model()},
                "tasks": taskset.describe(),
            },
        )
    wanted, means, start = set(spec.record_steps), _Means(), time.perf_counter() - offset

    def after(step: int, out: dict[str, Any]) -> None:
        means.add(out)
        if step in wanted:
            wall = time.perf_counter() - start
            found.append(_record(spec, directory, step, wall, means.pop(), method, taskset))
            write_checkpoint(directory, method, step, wall)

    status, step = fit(spec, taskset, method, range(first, spec.steps), after)
    step = max(step, first - 1)  # stopped after its last record, before writing done
    wall = time.perf_counter() - start
    records.write_json(directory / records.DONE, {"status": status, "step": step, "wall_s": wall})
    return Outcome(spec.run_id, directory, status, found[-1] if found else None)


def batches_at(spec: MTLSpec, taskset: TaskSet, step: int) -> Batches:
    """Every task's minibatch of ``step``."""
    size = spec.hparams["batch_size"]
    return [
        minibatch(taskset.data[t.name]["train"], size, spec.trial_seed, t.name, step)
        for t in taskset.TASKS
    ]


def fit(
    spec: MTLSpec,
    taskset: TaskSet,
    method: MultiTaskMethod,
    steps: Iterable[int],
    after: Callable[[int, dict[str, Any]], None] = lambda step, out: None,
) -> tuple[str, int]:
    """The training loop: update at each of ``steps``, then ``after(step, out)``.

    Returns (status, last step): ``diverged`` at the first non-finite loss, which gets no
    record (records stay a prefix of the spec's record steps, as ``records.check_run`` asks).
    """
    step = -1
    for step in steps:
        out = method.update(batches_at(spec, taskset, step))
        if not math.isfinite(out["loss"]):
            return "diverged", step
        after(step, out)
    return "ok", step


def _record(
    spec: MTLSpec,
    directory: Path,
    step: int,
    wall: float,
    train: dict[str, Any],
    method: MultiTaskMethod,
    taskset: TaskSet,
) -> dict[str, Any]:
    record = {
        "schema": records.SCHEMA,
        "kind": spec.kind,
        "run_id": spec.run_id,
        "step": step,
        "wall_s": wall,
        "spec": spec.to_dict(),
        "metric": {t.name: t.metric for t in taskset.TASKS},
        "main_task": taskset.main_task(),
        "train": train,
        "eval": evaluate(method, taskset),
    }
    records.append_record(directory / records.RESULTS, record)
    return record
