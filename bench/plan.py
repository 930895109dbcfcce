"""Plan before spending: what a sweep would train, what each selection rule reads, and how long.

The estimate comes from a short calibration per *protocol* (algorithm, dataset, size,
the hparams that shape the computation, threads and the CPU model): a few timed update
steps and one timed evaluation, in a throw-away directory. Calibrations are cached in
``$XDG_CACHE_HOME/bench/calibration.json``, so a second plan (and the first line of a
real sweep) costs nothing; a plan times again what was timed on a busier machine than now.
A run's estimate is ``steps x step time + records x eval time``; a sweep's is the sum over
the runs still to train divided by the parallel jobs. With
``--vectorise`` each group is timed as a group: its batched step and evaluation, calibrated
per protocol and group size.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from bench import onednn_linear, runner, vectorised
from bench.errors import OutOfMemory
from bench.evaluation import evaluate
from bench.execution import (
    cpu_model,
    freed_memory_kept,
    freeze_long_lived_objects,
    native_bf16,
    out_of_memory_explained,
    precision_context,
)
from bench.seeding import canonical_json
from bench.selection import validation_env
from bench.spec import RunSpec, RuntimeOptions
from bench.user_cache import cache_dir, read_cache, write_cache

CALIBRATION_STEPS = 5
_FAILED: dict[str, dict[str, str]] = {}  # protocols that ran out of memory in this process
ADVICE_MIN_STEPS = 100  # shorter runs: timing both precisions would cost a large share of the run
ADVICE_MIN_SPEED_UP = 1.1  # below it, a precision is not worth a line (and within timing noise)
STALE_LOAD = 1.0  # a calibration timed at a load this much above the current one is timed again
SHAPE_KEYS = ("batch_size", "featurizer", "mlp_width", "mlp_depth", "cnn_width", "d_mlp_width")


CACHE = "calibration.json"


def _cache_file() -> Path:
    return cache_dir() / CACHE


def _read_cache() -> dict[str, Any]:
    return read_cache(CACHE)


def _write_cache(cache: dict[str, Any]) -> None:
    write_cache(CACHE, cache)


def _stale(entry: Mapping[str, Any] | None) -> bool:
    """Missing, or timed on a busier machine than this one is now (or before loads were
    recorded): a calibration timed beside a sweep inflated a later plan's estimate 4.5x."""
    if entry is None:
        return True
    if "error" in entry or entry.get("alone"):
        return False  # not a timing
    load = entry.get("load")
    return load is None or load > os.getloadavg()[0] + STALE_LOAD


def protocol_key(spec: RunSpec, threads: int | None) -> str:
    """What the cost of one step and one evaluation depends on."""
    shape = {k: spec.hparams.get(k) for k in SHAPE_KEYS if k in spec.hparams}
    fields = [spec.algorithm, spec.dataset, spec.size, spec.precision, shape, threads, cpu_model()]
    return canonical_json(fields)


def _time_steps(ctx: runner.RunContext, precision: str | None) -> float:
    """Seconds per update step of a prepared run (one warm-up step, then CALIBRATION_STEPS)."""
    freeze_long_lived_objects()  # as train_loop
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
    what = f"the timed steps (calibration) of {spec.algorithm} on {spec.dataset}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        freed_memory_kept(),  # as runner.run trains
        out_of_memory_explained(what),
    ):
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

    ``steps_only`` entries (step time alone, for the precision advice) have keys of their own.
    A protocol that runs out of memory while measured gets ``{"error": line}``, kept for this
    process only: memory depends on what else the machine runs at the time. A cached timing
    that is ``_stale`` is timed again when ``measure`` (and returned as it is otherwise).
    """
    cache = _read_cache()
    prefix = "steps " if steps_only else ""
    protocols = {prefix + protocol_key(s, options.threads): s for s in specs}
    missing = [(k, s) for k, s in protocols.items() if _stale(cache.get(k)) and k not in _FAILED]
    if measure and missing:
        for key, spec in missing:
            try:
                cache[key] = _calibrate(spec, options, steps_only)
            except OutOfMemory as exc:
                _FAILED[key] = {"error": str(exc)}
        _write_cache(cache)
    found = {**cache, **{k: v for k, v in _FAILED.items() if k in protocols}}
    return {key[len(prefix) :]: value for key, value in found.items() if key.startswith(prefix)}


def missing_calibrations(specs: Sequence[RunSpec], options: RuntimeOptions) -> int:
    """How many protocols of ``specs`` a plan would have to time first."""
    cache = calibrations(specs, options, measure=False)
    return sum(_stale(cache.get(key)) for key in {protocol_key(s, options.threads) for s in specs})


def run_seconds(cal: Mapping[str, float], spec: RunSpec) -> float:
    """One run's wall seconds from its protocol's calibration."""
    return cal["setup_s"] + spec.steps * cal["step_s"] + len(spec.record_steps) * cal["eval_s"]


def estimate_s(
    specs: Sequence[RunSpec],
    options: RuntimeOptions,
    jobs: int,
    measure: bool,
    vectorise: bool = False,
) -> float | None:
    """Wall seconds to train ``specs`` with ``jobs`` in parallel; None if one is not calibrated.

    Runs whose protocol does not fit in memory are left out (``costs`` names them). With
    ``vectorise``, the groups ``vectorised.units`` forms are timed as groups (their setup,
    batched step and evaluation, calibrated per protocol and group size).
    """
    cache = calibrations(specs, options, measure)
    cals = [cache.get(protocol_key(spec, options.threads)) for spec in specs]
    if any(cal is None for cal in cals):
        return None
    fit = [(spec, cal) for spec, cal in zip(specs, cals) if "error" not in cal]
    if not vectorise:
        total = sum(run_seconds(cal, spec) for spec, cal in fit)
        return total / max(1, min(jobs, len(fit)))
    work = vectorised.units([spec for spec, _ in fit], jobs)
    groups = _group_calibrations([unit for unit in work if len(unit) > 1], options, measure)
    # a few large units: the workers' finishing times, each unit to the first free worker,
    # after each worker process has started (the local launcher runs in-process with one job)
    busy = [worker_start_s(measure) if jobs > 1 else 0.0] * max(1, jobs)
    for unit in work:
        first = unit[0]
        group = groups.get(_group_key(unit, options.threads), {}) if len(unit) > 1 else {}
        if len(unit) > 1 and not group:
            return None
        if len(unit) == 1 or group.get("alone"):  # trains one by one
            seconds = sum(run_seconds(cache[protocol_key(s, options.threads)], s) for s in unit)
        else:
            seconds = group["setup_s"] + first.steps * group["step_s"]
            seconds += len(first.record_steps) * (group["eval_s"] + len(unit) * group["record_s"])
        busy[busy.index(min(busy))] += seconds
    return max(busy)


def worker_start_s(measure: bool) -> float:
    """Seconds a fresh worker process takes to import the harness, timed once per CPU model
    (0 until measured)."""
    key = f"worker start on {cpu_model()}"
    cache = _read_cache()
    if key not in cache and measure:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import bench.launchers"], check=True)
        cache[key] = time.perf_counter() - start
        _write_cache(cache)
    return cache.get(key, 0.0)


def _group_key(unit: Sequence[RunSpec], threads: int | None) -> str:
    return f"group of {len(unit)} " + protocol_key(unit[0], threads)


def _group_calibrations(
    units: Sequence[Sequence[RunSpec]], options: RuntimeOptions, measure: bool
) -> dict[str, Any]:
    """Cached batched step and evaluation times per (protocol, group size); missing ones
    measured when ``measure`` (``vectorised.time_group``)."""
    cache = _read_cache()
    wanted = {_group_key(unit, options.threads): unit for unit in units}
    missing = {k: unit for k, unit in wanted.items() if _stale(cache.get(k))}
    if measure and missing:
        for key, unit in missing.items():
            timed = vectorised.time_group(unit, options, CALIBRATION_STEPS)
            cache[key] = {**timed, "load": os.getloadavg()[0]}
        _write_cache(cache)
    return {k: cache[k] for k in wanted if k in cache}


def unfit(specs: Sequence[RunSpec], options: RuntimeOptions) -> list[RunSpec]:
    """The specs whose protocol ran out of memory when timed in this process."""
    cache = calibrations(specs, options, measure=False)
    return [s for s in specs if "error" in cache.get(protocol_key(s, options.threads), {})]


def costs(specs: Sequence[RunSpec], options: RuntimeOptions) -> dict[tuple[str, str], Any]:
    """Per algorithm and dataset, from calibrations made: the wall seconds of its runs one
    after another, or the line saying it does not fit in memory (absent when uncalibrated)."""
    cache = calibrations(specs, options, measure=False)
    out: dict[tuple[str, str], Any] = {}
    for spec in specs:
        cal = cache.get(protocol_key(spec, options.threads))
        key = (spec.algorithm, spec.dataset)
        if cal is None or isinstance(out.get(key), str):
            continue
        out[key] = cal["error"] if "error" in cal else out.get(key, 0.0) + run_seconds(cal, spec)
    return out


def _offers(device: torch.device) -> dict[str, str]:
    """The faster precisions this device may have, each with what makes it fast here."""
    offers = {}
    native = native_bf16(device)
    if native is not None:
        offers["bf16"] = f"native bf16, {native}"
    if device.type == "cpu" and onednn_linear.available():
        offers["fp32-onednn"] = "fp32 in oneDNN's kernels, equal to fp32 up to rounding"
    return offers


def precision_advice(
    specs: Sequence[RunSpec], options: RuntimeOptions, measure: bool
) -> str | None:
    """One line on a faster ``--precision`` here, or None.

    fp32 runs are told how much faster each precision this device offers would train
    (``bf16`` with native bf16; ``fp32-onednn`` on CPU) when it is at least
    ADVICE_MIN_SPEED_UP faster: a steps-only calibration per precision, cached like the
    plan's. bf16 runs on a CPU that only emulates bf16 are told it is slower. fp32 stays the
    default: its numbers are the ones every published board was trained with.
    """
    device = torch.device(options.device)
    if any(s.precision == "bf16" for s in specs):
        if native_bf16(device) is None and device.type == "cpu":
            return (
                "note: bf16 is emulated on this CPU (no AVX512_BF16 or AMX): "
                "--precision bf16 trains slower than fp32 here"
            )
        return None
    offers = _offers(device)
    if not offers or not specs or any(s.precision != "fp32" for s in specs):
        return None
    specs = [s for s in specs if protocol_key(s, options.threads) not in _FAILED]  # no fit
    steps = calibrations(specs, options, measure, steps_only=True)
    keys = [protocol_key(s, options.threads) for s in specs]
    if any(k not in steps for k in keys):
        return None
    fit = [(s, k) for s, k in zip(specs, keys) if "error" not in steps[k]]
    if not fit:
        return None
    specs, keys = [s for s, _ in fit], [k for _, k in fit]
    slow = sum(s.steps * steps[k]["step_s"] for s, k in zip(specs, keys))
    parts = []
    for precision, why in offers.items():
        other = [dataclasses.replace(s, precision=precision) for s in specs]
        timed = calibrations(other, options, measure, steps_only=True)
        other_keys = [protocol_key(s, options.threads) for s in other]
        if any(k not in timed for k in other_keys):
            return None
        if any("error" in timed[k] for k in other_keys):
            continue  # does not fit in this precision: not offered
        fast = sum(s.steps * timed[k]["step_s"] for s, k in zip(other, other_keys))
        if slow >= ADVICE_MIN_SPEED_UP * fast:
            parts.append(
                f"--precision {precision} would train {slow / fast:.1f}x faster "
                f"({format_duration(fast)} of training steps instead of {format_duration(slow)}; "
                f"{why})"
            )
    if not parts:
        return None
    return "faster here: " + "; ".join(parts) + "; fp32 stays the default for reproducible numbers"


def calibration_load(specs: Sequence[RunSpec], options: RuntimeOptions) -> float | None:
    """The highest 1-minute load average under which the cached calibrations of ``specs`` were
    timed (None when unknown: entries cached before it was recorded)."""
    cache = calibrations(specs, options, measure=False)
    entries = [cache.get(protocol_key(s, options.threads), {}) for s in specs]
    loads = [e.get("load") for e in entries if "error" not in e]
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


def describe(
    todo: Sequence[RunSpec],
    specs: Sequence[RunSpec],
    rules: Sequence[str],
    cost: Mapping[tuple[str, str], Any] | None = None,
) -> list[str]:
    """The plan as lines: runs to train per algorithm and dataset (with ``cost``: their time one
    after another, or why they do not fit), and what each rule reads."""
    counts = Counter((s.algorithm, s.dataset) for s in todo)
    cost = cost or {}

    def line(alg: str, ds: str, n: int) -> str:
        found = cost.get((alg, ds))
        if found is None:
            return f"  {alg} on {ds}: {n}"
        if isinstance(found, str):
            return f"  {alg} on {ds}: {n}, do not fit: {found}"
        return f"  {alg} on {ds}: {n}, {format_duration(found)} one after another"

    lines = [f"would train {len(todo)} of {len(specs)} runs:"]
    lines += [line(alg, ds, n) for (alg, ds), n in sorted(counts.items())]
    lines += ["selection rules read:", *(f"  {rule_needs(rule, specs)}" for rule in rules)]
    return lines


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
