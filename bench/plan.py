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
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from bench import runner
from bench.evaluation import evaluate
from bench.records import write_json
from bench.seeding import canonical_json
from bench.selection import validation_env
from bench.spec import RunSpec, RuntimeOptions

CALIBRATION_STEPS = 5
SHAPE_KEYS = ("batch_size", "featurizer", "mlp_width", "mlp_depth", "cnn_width", "d_mlp_width")


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bench" / "calibration.json"


def cpu_model() -> str:
    """The CPU's model name (estimates are only valid on the CPU they were measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def protocol_key(spec: RunSpec, threads: int | None) -> str:
    """What the cost of one step and one evaluation depends on."""
    shape = {k: spec.hparams.get(k) for k in SHAPE_KEYS if k in spec.hparams}
    fields = [spec.algorithm, spec.dataset, spec.size, spec.precision, shape, threads, cpu_model()]
    return canonical_json(fields)


def _calibrate(spec: RunSpec, options: RuntimeOptions) -> dict[str, float]:
    """Seconds per update step and per evaluation, timed on a throw-away copy of ``spec``."""
    short = dataclasses.replace(spec, steps=CALIBRATION_STEPS + 1, eval_every=CALIBRATION_STEPS + 1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ctx = runner.prepare(short, dataclasses.replace(options, output_dir=Path(tmp)), Path(tmp))
        setup = time.perf_counter() - start
        ctx.algorithm.update(ctx.minibatches(0))  # warm-up, not timed
        start = time.perf_counter()
        for step in range(1, CALIBRATION_STEPS + 1):
            ctx.algorithm.update(ctx.minibatches(step))
        per_step = (time.perf_counter() - start) / CALIBRATION_STEPS
        start = time.perf_counter()
        evaluate(ctx.algorithm, ctx.envs, ctx.splits, options.eval_batch_size, ctx.skip)
        per_eval = time.perf_counter() - start
    return {"step_s": per_step, "eval_s": per_eval, "setup_s": setup}


def calibrations(
    specs: Sequence[RunSpec], options: RuntimeOptions, measure: bool
) -> dict[str, Any]:
    """Cached calibration per protocol of ``specs``; missing ones are measured when ``measure``."""
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        cache = {}
    protocols = {protocol_key(s, options.threads): s for s in specs}
    missing = [(key, spec) for key, spec in protocols.items() if key not in cache]
    if measure and missing:
        for key, spec in missing:
            cache[key] = _calibrate(spec, options)
        try:
            _cache_file().parent.mkdir(parents=True, exist_ok=True)
            write_json(_cache_file(), cache)
        except OSError:
            pass  # best effort: the next plan measures again
    return cache


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
