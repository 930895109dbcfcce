"""Plan before spending: what a sweep would train, what each selection rule reads, and how long.

The estimate comes from a short calibration per *protocol* (algorithm, dataset, size,
the hparams that shape the computation, threads and the CPU model): a few timed update
steps and one timed evaluation, in a throw-away directory. Calibrations are cached in
``$XDG_CACHE_HOME/bench/calibration.json``, so a second plan (and the first line of a
real sweep) costs nothing. A run's estimate is ``steps x step time + records x eval
time``; a sweep's is the sum over the runs still to train divided by the parallel jobs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch

from bench import runner
from bench.evaluation import evaluate
from bench.execution import cpu_model, freed_memory_kept, native_bf16, precision_context
from bench.records import write_json
from bench.seeding import canonical_json
from bench.selection import validation_env
from bench.spec import RunSpec, RuntimeOptions

CALIBRATION_STEPS = 5
ADVICE_MIN_STEPS = 100  # shorter runs: timing both precisions would cost a large share of the run
SHAPE_KEYS = ("batch_size", "featurizer", "mlp_width", "mlp_depth", "cnn_width", "d_mlp_width")


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bench" / "calibration.json"


def protocol_key(spec: RunSpec, threads: int | None) -> str:
    """What the cost of one step and one evaluation depends on."""
    shape = {k: spec.hparams.get(k) for k in SHAPE_KEYS if k in spec.hparams}
    fields = [spec.algorithm, spec.dataset, spec.size, spec.precision, shape, threads, cpu_model()]
    return canonical_json(fields)


def _time_steps(ctx: runner.RunContext, precision: str | None) -> float:
    """Seconds per update step of a prepared run (one warm-up step, then CALIBRATION_STEPS)."""
    with precision_context(ctx.device, precision):
        ctx.algorithm.update(ctx.minibatches(0))  # warm-up, not timed
        start = time.perf_counter()
        for step in range(1, CALIBRATION_STEPS + 1):
            ctx.algorithm.update(ctx.minibatches(step))
    return (time.perf_counter() - start) / CALIBRATION_STEPS


def _calibrate(
    spec: RunSpec, options: RuntimeOptions, steps_only: bool = False
) -> dict[str, float]:
    """Seconds per update step and per evaluation, timed on a throw-away copy of ``spec``."""
    short = dataclasses.replace(spec, steps=CALIBRATION_STEPS + 1, eval_every=CALIBRATION_STEPS + 1)
    with tempfile.TemporaryDirectory() as tmp, freed_memory_kept():  # as runner.run trains
        start = time.perf_counter()
        ctx = runner.prepare(short, dataclasses.replace(options, output_dir=Path(tmp)), Path(tmp))
        setup = time.perf_counter() - start
        per_step = _time_steps(ctx, spec.precision)
        load = os.getloadavg()[0]  # a busy machine inflates every figure; the plan says so
        if steps_only:
            return {"step_s": per_step, "load": load}
        start = time.perf_counter()
        with precision_context(ctx.device, spec.precision):
            evaluate(ctx.algorithm, ctx.envs, ctx.splits, options.eval_batch_size, ctx.skip)
        per_eval = time.perf_counter() - start
    return {"step_s": per_step, "eval_s": per_eval, "setup_s": setup, "load": load}


def calibrations(
    specs: Sequence[RunSpec], options: RuntimeOptions, measure: bool, steps_only: bool = False
) -> dict[str, Any]:
    """Cached calibration per protocol of ``specs``; missing ones are measured when ``measure``.

    ``steps_only`` entries (step time alone, for the bf16 advice) are kept under their own keys.
    """
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        cache = {}
    prefix = "steps " if steps_only else ""
    protocols = {prefix + protocol_key(s, options.threads): s for s in specs}
    missing = [(key, spec) for key, spec in protocols.items() if key not in cache]
    if measure and missing:
        for key, spec in missing:
            cache[key] = _calibrate(spec, options, steps_only)
        try:
            _cache_file().parent.mkdir(parents=True, exist_ok=True)
            write_json(_cache_file(), cache)
        except OSError:
            pass  # best effort: the next plan measures again
    return {key[len(prefix) :]: value for key, value in cache.items() if key.startswith(prefix)}


def estimate_s(
    specs: Sequence[RunSpec], options: RuntimeOptions, jobs: int, measure: bool
) -> float | None:
    """Wall seconds to train ``specs`` with ``jobs`` in parallel; None if one is not calibrated."""
    cache = calibrations(specs, options, measure)
    total = 0.0
    for spec in specs:
        cal = cache.get(protocol_key(spec, options.threads))
        if cal is None:
            return None
        total += (
            cal["setup_s"] + spec.steps * cal["step_s"] + len(spec.record_steps) * cal["eval_s"]
        )
    return total / max(1, min(jobs, len(specs)))


def bf16_advice(specs: Sequence[RunSpec], options: RuntimeOptions, measure: bool) -> str | None:
    """One line on ``--precision bf16`` here, or None.

    fp32 runs on hardware with native bf16 are told how much faster bf16 training steps
    would be (a steps-only calibration of both precisions, cached like the plan's); bf16 runs
    on a CPU that only emulates bf16 are told it will be slower. fp32 stays the default: its
    numbers are the reproducible ones.
    """
    device = torch.device(options.device)
    native = native_bf16(device)
    if any(s.precision == "bf16" for s in specs):
        if native is None and device.type == "cpu":
            return (
                "note: bf16 is emulated on this CPU (no AVX512_BF16 or AMX): "
                "--precision bf16 trains slower than fp32 here"
            )
        return None
    if native is None or not specs:
        return None
    as_bf16 = [dataclasses.replace(s, precision="bf16") for s in specs]
    fp32 = calibrations(specs, options, measure, steps_only=True)
    bf16 = calibrations(as_bf16, options, measure, steps_only=True)
    keys = [
        (protocol_key(a, options.threads), protocol_key(b, options.threads))
        for a, b in zip(specs, as_bf16)
    ]
    if any(a not in fp32 or b not in bf16 for a, b in keys):
        return None
    slow = sum(s.steps * fp32[a]["step_s"] for s, (a, _) in zip(specs, keys))
    fast = sum(s.steps * bf16[b]["step_s"] for s, (_, b) in zip(specs, keys))
    return (
        f"native bf16 here ({native}): --precision bf16 would train {slow / fast:.1f}x faster "
        f"({format_duration(fast)} of training steps instead of {format_duration(slow)}); "
        "fp32 stays the default for reproducible numbers"
    )


def calibration_load(specs: Sequence[RunSpec], options: RuntimeOptions) -> float | None:
    """The highest 1-minute load average under which the cached calibrations of ``specs`` were
    timed (None when unknown: entries cached before it was recorded)."""
    cache = calibrations(specs, options, measure=False)
    loads = [cache.get(protocol_key(s, options.threads), {}).get("load") for s in specs]
    return None if not loads or None in loads else max(loads)


def rule_needs(rule: str, specs: Sequence[RunSpec]) -> str:
    """One line: which of the sweep's runs the selection rule reads, or why it will show nothing."""
    if rule == "last":
        defaults = sum(s.hparams_seed == 0 for s in specs)
        return f"last: the {defaults} default-hparams runs (hparams seed 0)"
    if rule == "loo":
        pairs = sum(len(s.test_envs) > 1 for s in specs)
        hint = "" if pairs else "; sweep with --test-envs pairs"
        return f"loo: leave-one-out pair runs ({pairs} here{hint})"
    if rule == "val_env":
        ok = sum(validation_env(s.dataset) in s.test_envs for s in specs)
        return f"val_env: runs holding out their dataset's validation environment ({ok} here)"
    split = sum(s.holdout_fraction > 0 for s in specs)
    what = "training envs' held-out splits" if rule == "train_val" else "test env's held-out split"
    return f"{rule}: every run's {what} ({split} of {len(specs)} runs have one)"


def describe(todo: Sequence[RunSpec], specs: Sequence[RunSpec], rules: Sequence[str]) -> list[str]:
    """The plan as lines: runs to train per algorithm and dataset, and what each rule reads."""
    counts = Counter((s.algorithm, s.dataset) for s in todo)
    lines = [f"would train {len(todo)} of {len(specs)} runs:"]
    lines += [f"  {alg} on {ds}: {n}" for (alg, ds), n in sorted(counts.items())]
    lines += ["selection rules read:", *(f"  {rule_needs(rule, specs)}" for rule in rules)]
    return lines


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
