"""Weight averaging during training (SWA, EMA, SWAD) as a hook of the runner's one loop.

The runner calls ``after_step`` after every update and ``at_record`` at every evaluation;
the hook keeps its averages beside the model (never touching it, nor any RNG, so the raw
model's records equal those of the same run without averaging), evaluates the averaged
weights on every split and appends their records, with ``"model": kind``, to the run's
``averaged.jsonl``. Its state rides in the checkpoint, so a resumed run averages exactly
as an uninterrupted one.

- ``swa``: uniform average of every iterate from ``start_fraction`` x steps on; a record at
  every evaluation from then on.
- ``ema``: ``avg = decay * avg + (1 - decay) * w`` after every step, starting from the first
  iterate; a record at every evaluation.
- ``swad``: segment averages between evaluations, the valley chosen on the training
  environments' mean ``out`` loss (``bench/posthoc/swad.py``); one record, at the last step,
  with the window's steps. SWAD needs those ``out`` splits (holdout fraction > 0).

Only parameters are averaged; buffers (BatchNorm statistics) are the live model's. The
SWAD code re-estimates BatchNorm statistics of the average with 500 training steps
(unless BatchNorm is frozen): not done here, so on a ResNet without ``freeze_bn`` the
averaged rows use the last iterate's statistics.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

from bench import records
from bench.algorithms.base import Algorithm, classification_loss
from bench.evaluation import evaluate
from bench.posthoc.results import AVERAGED
from bench.posthoc.swad import Valley

Params = dict[str, Tensor]


def params_of(algorithm: Algorithm) -> Params:
    return {name: p.detach().clone() for name, p in algorithm.named_parameters()}


class Average:
    """A running average of parameter dicts: uniform (``add``) or exponential (``ema``)."""

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        self.mean: Params = dict(state["mean"]) if state else {}
        self.n: int = state["n"] if state else 0

    def add(self, params: Mapping[str, Tensor]) -> None:
        self.n += 1
        for k, v in params.items():
            self.mean[k] = v.clone() if self.n == 1 else self.mean[k] + (v - self.mean[k]) / self.n

    def ema(self, params: Mapping[str, Tensor], decay: float) -> None:
        self.n += 1
        for k, v in params.items():
            self.mean[k] = v.clone() if self.n == 1 else decay * self.mean[k] + (1 - decay) * v

    def state(self) -> dict[str, Any]:
        return {"mean": dict(self.mean), "n": self.n}


@contextlib.contextmanager
def swapped(algorithm: Algorithm, params: Mapping[str, Tensor]) -> Iterator[Algorithm]:
    """The algorithm holding ``params`` inside the block, its own weights restored bit for bit."""
    live = dict(algorithm.named_parameters())
    saved = {k: p.detach().clone() for k, p in live.items()}
    with torch.no_grad():
        for k, v in params.items():
            live[k].copy_(v)
    try:
        yield algorithm
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                live[k].copy_(v)


def validation_loss(ctx: Any) -> float:
    """Mean over training environments of the mean loss on their ``out`` split (SWAD's)."""
    losses = []
    was_training = ctx.algorithm.training
    ctx.algorithm.eval()
    with torch.inference_mode():
        for name in ctx.train_envs:
            idx = ctx.splits[name]["out"]
            total = 0.0
            for start in range(0, len(idx), ctx.options.eval_batch_size):
                x, y = ctx.envs[name].batch(idx[start : start + ctx.options.eval_batch_size])
                total += float(classification_loss(ctx.algorithm.predict(x), y, "sum"))
            losses.append(total / len(idx))
    ctx.algorithm.train(was_training)
    return sum(losses) / len(losses)


class NoAveraging:
    """The hook of a run without averaging: does nothing."""

    def after_step(self, algorithm: Algorithm, step: int) -> None:
        pass

    def at_record(self, ctx: Any, step: int, record: Mapping[str, Any]) -> dict[str, Any]:
        return {}


class Averaging(NoAveraging):
    """The hook of a run with ``spec.averaging``; see the module docstring."""

    def __init__(self, ctx: Any, state: Mapping[str, Any] | None) -> None:
        self.config = dict(ctx.spec.averaging)
        self.kind, self.path = self.config["kind"], Path(ctx.directory) / AVERAGED
        steps = ctx.spec.steps
        self.start = int(self.config.get("start_fraction", 0.0) * steps)
        state = state or {}
        self.average = Average(state.get("average"))
        self.segment = Average(state.get("segment"))
        self.segments: dict[int, Params] = {int(k): v for k, v in state.get("segments", {}).items()}
        self.seg_steps: dict[int, list[int]] = {
            int(k): v for k, v in state.get("seg_steps", {}).items()
        }
        valley = {k: v for k, v in state.get("valley", {}).items()}
        names = ("n_converge", "n_tolerance", "tolerance_ratio")
        self.valley = Valley(**{k: self.config[k] for k in names if k in self.config}, **valley)
        self.window: list[int] = list(state.get("window", []))
        self.seg_start: int = state.get("seg_start", 0)
        if state:
            records.truncate_records(self.path, state["step"])
        else:
            self.path.unlink(missing_ok=True)

    def after_step(self, algorithm: Algorithm, step: int) -> None:
        params = params_of(algorithm)
        if self.kind == "ema":
            self.average.ema(params, self.config["decay"])
        elif self.kind == "swa" and step >= self.start:
            self.average.add(params)
        elif self.kind == "swad":
            self.segment.add(params)

    def at_record(self, ctx: Any, step: int, record: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate and record the average (when there is one to report); returns its state."""
        extra: dict[str, Any] = {}
        if self.kind == "swad":
            extra = self._swad_segment(ctx, step)
        last = step == ctx.spec.steps - 1
        if self.average.n and (self.kind != "swad" or last):
            with swapped(ctx.algorithm, self.average.mean) as model:
                scores = evaluate(
                    model, ctx.envs, ctx.splits, ctx.options.eval_batch_size, ctx.skip
                )
            averaged = {**record, "eval": scores, "model": self.kind, "n_averaged": self.average.n}
            records.append_record(self.path, {**averaged, **extra})
        return {"averaging": self.state(step)}

    def _swad_segment(self, ctx: Any, step: int) -> dict[str, Any]:
        """Close the segment ending at ``step``, let the valley pick, add what it picked."""
        index, valley = len(self.valley.losses), self.valley
        self.segments[index] = self.segment.mean
        self.seg_steps[index] = [self.seg_start, step]
        self.segment, self.seg_start = Average(), step + 1
        chosen = valley.update(validation_loss(ctx))
        last = step == ctx.spec.steps - 1
        if last:
            chosen += valley.finish()
        if last and not self.average.n and not chosen:
            # the code's fallback: the converging segment (its average starts as a copy of
            # it), or the last segment when the valley never opened
            chosen = [index if valley.converged_at is None else valley.converged_at]
        for i in chosen:
            self.average.add(self.segments[i])
        self.window += chosen
        keep = set(valley.live())
        if valley.converged_at is not None and not self.average.n:
            keep.add(valley.converged_at)
        self.segments = {i: p for i, p in self.segments.items() if i in keep}
        steps = [s for i in self.window for s in self.seg_steps[i]]
        return {
            "window": [min(steps), max(steps)] if steps else None,
            "converged": valley.converged_at is not None,
            "dead_valley": valley.dead,
        }

    def state(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "average": self.average.state(),
            "segment": self.segment.state(),
            "segments": {str(i): p for i, p in self.segments.items()},
            "seg_steps": {str(i): s for i, s in self.seg_steps.items()},
            "valley": {
                k: v
                for k, v in self.valley.state().items()
                if k not in ("n_converge", "n_tolerance", "tolerance_ratio")
            },
            "window": self.window,
            "seg_start": self.seg_start,
        }


def averaging_hook(ctx: Any, checkpoint: Mapping[str, Any] | None) -> NoAveraging:
    """The run's hook, restored from ``checkpoint`` on a resume (``None``: a fresh start)."""
    if not ctx.spec.averaging:
        return NoAveraging()
    return Averaging(ctx, checkpoint["averaging"] if checkpoint else None)
