"""One seeded meta-learning run: meta-train, select the checkpoint on meta-validation
episodes, evaluate it on a fixed set of meta-test episodes, write JSON-lines records.

Layout (beside bench's runs, not among them): ``<out>/meta_runs/<run_id>/`` holds
``spec.json``, ``results.jsonl`` (one ``val`` record per evaluation, then one ``test``
record for the selected step), ``checkpoint.pt`` (weights_only-loadable) and ``done``.
Episodes and minibatches are pure functions of (dataset, trial seed, split, index), and
torch's global RNG is reseeded before every step and every evaluation episode, so a run
resumed from its checkpoint writes the same records as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import records
from bench.execution import claim, cpu_model
from bench.meta.base import METHODS, Draw, MetaMethod
from bench.meta.episodes import ClassPool, sample_batch, sample_episode
from bench.meta.few_shot import FEW_SHOT_DATASETS
from bench.meta.spec import MetaSpec
from bench.seeding import stable_hash

META_SCHEMA = 1
RUNS = "meta_runs"


@dataclass
class MetaOutcome:
    run_id: str
    run_dir: Path
    status: str  # ok | diverged | skipped (done before) | busy (another worker holds it)
    test: dict[str, Any] | None


def run_dir(output_dir: str | Path, run_id: str) -> Path:
    return Path(output_dir) / RUNS / run_id


@functools.lru_cache(maxsize=4)
def load_pool(dataset: str, data_dir: str | None, data_seed: int, size: str) -> ClassPool:
    """Built once per process and reused by every run of a sweep on the same trial."""
    return FEW_SHOT_DATASETS.get(dataset).pool(data_dir, data_seed, size)


def build_method(spec: MetaSpec, pool: ClassPool) -> MetaMethod:
    torch.manual_seed(stable_hash("meta_init", spec.trial_seed, spec.hparams_seed))
    method_cls = METHODS.get(spec.method)
    input_shape = FEW_SHOT_DATASETS.get(spec.dataset).INPUT_SHAPE
    return method_cls(input_shape, spec.way, len(pool.classes("train")), spec.hparams)


def evaluate(method: MetaMethod, pool: ClassPool, spec: MetaSpec, split: str) -> dict[str, Any]:
    """Mean query accuracy over the split's fixed episodes, with the field's 95% interval
    ``1.96 * std / sqrt(n)`` (std over episodes, ddof=1)."""
    n = spec.val_episodes if split == "val" else spec.test_episodes
    method.eval()
    accs = []
    for i in range(n):
        episode = sample_episode(pool, spec.stream, split, i, spec.way, spec.shot, spec.query)
        torch.manual_seed(stable_hash("meta_adapt", spec.trial_seed, split, i))
        logits = method.adapt_predict(episode.support_x, episode.support_y, episode.query_x)
        accs.append(float((logits.argmax(1) == episode.query_y).float().mean()))
    method.train()
    std = float(np.std(accs, ddof=1)) if n > 1 else 0.0
    return {"acc": float(np.mean(accs)), "ci95": 1.96 * std / math.sqrt(n), "std": std, "n": n}


def draw_for(pool: ClassPool, spec: MetaSpec, step: int) -> Draw:
    def episode(j: int):
        return sample_episode(
            pool, spec.stream, "train", (step, j), spec.way, spec.shot, spec.query
        )

    return Draw(episode, lambda size: sample_batch(pool, spec.stream, step, size))


def run(
    spec: MetaSpec, output_dir: str | Path, data_dir: str | None = None, command: str = ""
) -> MetaOutcome:
    """Train ``spec`` to completion, resuming from its checkpoint, unless done or claimed."""
    directory = run_dir(output_dir, spec.run_id)
    if (directory / records.DONE).exists():
        return MetaOutcome(spec.run_id, directory, "skipped", test_record(directory))
    with claim(directory) as mine:
        if not mine:
            return MetaOutcome(spec.run_id, directory, "busy", None)
        if (directory / records.DONE).exists():
            return MetaOutcome(spec.run_id, directory, "skipped", test_record(directory))
        return _train(spec, directory, data_dir, command)


def test_record(directory: Path) -> dict[str, Any] | None:
    found = [r for r in records.read_records(directory / records.RESULTS) if r["split"] == "test"]
    return found[-1] if found else None


def _train(spec: MetaSpec, directory: Path, data_dir: str | None, command: str) -> MetaOutcome:
    pool = load_pool(spec.dataset, data_dir, spec.trial_seed, spec.size)
    pool.check_episode_shape(spec.way, spec.shot, spec.query)
    method = build_method(spec, pool)
    records.clean_temp_files(directory)
    start, best, wall0 = _resume(spec, method, directory, command)
    started = time.monotonic() - wall0
    status = "ok"
    for step in range(start, spec.steps):
        torch.manual_seed(stable_hash("meta_step", spec.trial_seed, spec.hparams_seed, step))
        train = method.meta_update(draw_for(pool, spec, step)) if method.META_TRAINS else {}
        if not all(math.isfinite(v) for v in train.values()):
            status = "diverged"
            break
        if step % spec.eval_every == 0 or step == spec.steps - 1:
            val = evaluate(method, pool, spec, "val")
            wall = time.monotonic() - started
            _append(directory, spec, "val", step, wall, train, val)
            if best is None or val["acc"] > best["acc"]:
                best = {"step": step, "acc": val["acc"], "model": _copy(method.state_dict())}
            _save_checkpoint(directory, method, step, best, wall)
    if best is not None:
        method.load_state_dict(best["model"])
        test = evaluate(method, pool, spec, "test")
        wall = time.monotonic() - started
        _append(directory, spec, "test", best["step"], wall, {}, test, val_acc=best["acc"])
    done = {"status": status, "wall_s": time.monotonic() - started}
    records.write_json(directory / records.DONE, done)
    return MetaOutcome(spec.run_id, directory, status, test_record(directory))


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _resume(
    spec: MetaSpec, method: MetaMethod, directory: Path, command: str
) -> tuple[int, dict[str, Any] | None, float]:
    """(first step to train, best-so-far, wall seconds so far): from the checkpoint, or a fresh
    start that (re)writes spec.json and drops any records without a checkpoint behind them."""
    path = directory / records.CHECKPOINT
    state = None
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # torch raises many types for a torn or foreign file: start again
            state = None
    if state is None or state.get("run_id") != spec.run_id:
        for name in (records.RESULTS, records.CHECKPOINT):
            (directory / name).unlink(missing_ok=True)
        info = {"run_id": spec.run_id, "spec": spec.to_dict(), "command": command}
        records.write_json(directory / records.SPEC, info)
        return 0, None, 0.0
    method.load_checkpoint_state(state["method"])
    kept = [
        r
        for r in records.read_records(directory / records.RESULTS)
        if r["split"] == "val" and r["step"] <= state["step"]
    ]
    text = "".join(json.dumps(r) + "\n" for r in kept).encode()
    records.write_atomic(directory / records.RESULTS, lambda f: f.write(text))
    return state["step"] + 1, state["best"], state["wall_s"]


def _save_checkpoint(
    directory: Path, method: MetaMethod, step: int, best: dict[str, Any], wall: float
) -> None:
    state = {
        "run_id": directory.name,
        "step": step,
        "method": method.checkpoint_state(),
        "best": best,
        "wall_s": wall,
    }
    records.write_torch(directory / records.CHECKPOINT, state)


def _append(
    directory: Path,
    spec: MetaSpec,
    split: str,
    step: int,
    wall: float,
    train: dict[str, float],
    result: dict[str, Any],
    **extra: Any,
) -> None:
    record = {
        "schema": META_SCHEMA,
        "kind": "meta",
        "run_id": spec.run_id,
        "split": split,
        "step": step,
        "wall_s": round(wall, 3),
        "spec": spec.to_dict(),
        "train": train,
        "eval": result,
        "meta": {**records.provenance("cpu"), "cpu": cpu_model()},
        **extra,
    }
    records.append_record(directory / records.RESULTS, record)
