"""Training a group: claim and prepare its runs, check the batched step against one by one,
then step them together with the runner's own records and checkpoints (``run_group``); and
time a group for the plan (``time_group``)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from bench import records, runner
from bench.checkpoint import capture_rng_state, restore_rng_state
from bench.execution import freed_memory_kept, freeze_long_lived_objects
from bench.spec import RunSpec, RuntimeOptions
from bench.vectorised.algorithms import BATCHED
from bench.vectorised.data import GroupBatches, GroupEval
from bench.vectorised.eligible import network_layers, plain_adam

log = logging.getLogger(__name__)


def run_group(specs: Sequence[RunSpec], options: RuntimeOptions) -> list[runner.RunOutcome]:
    """``[runner.run(s, options) for s in specs]``, training the new runs together.

    As ``runner.run``: done runs are skipped, runs claimed by another worker reported busy;
    partially trained runs resume one by one. Outcomes come back in the order of ``specs``.
    """
    outcomes: dict[int, runner.RunOutcome] = {}
    members: list[tuple[int, runner.RunContext, dict[str, Any]]] = []
    with contextlib.ExitStack() as locks, freed_memory_kept():  # as runner.run trains one
        for i, spec in enumerate(specs):
            directory = records.run_dir(options.output_dir, spec.run_id)
            if (directory / records.DONE).exists() and runner.is_finished(spec, directory):
                outcomes[i] = runner.finished_outcome(spec, directory)
            elif not locks.enter_context(runner.claim(directory)):
                outcomes[i] = runner.RunOutcome(spec.run_id, directory, "busy", None)
            elif runner.inspect_run(spec, directory) == "finished":
                outcomes[i] = runner.finished_outcome(spec, directory)
            else:
                ctx = runner.prepare(spec, options, directory)
                if ctx.start > 0:
                    outcomes[i] = runner.train_loop(ctx)
                else:  # the global RNG state its checkpoints save (one run at a time: after init)
                    members.append((i, ctx, capture_rng_state(ctx.device)))
        contexts = [ctx for _, ctx, _ in members]
        rng = [state for _, _, state in members]
        if len(contexts) > 1 and _vectorisable(contexts) and _same_first_step(contexts):
            done = GroupTrainer(contexts, rng).train()
        else:
            done = []
            for ctx, state in zip(contexts, rng):
                restore_rng_state(state, ctx.device)
                done.append(runner.train_loop(ctx))
        outcomes.update(zip([i for i, _, _ in members], done))
    return [outcomes[i] for i in range(len(specs))]


def _vectorisable(contexts: list[runner.RunContext]) -> bool:
    """A batched algorithm on CPU, no augmentation, equal split sizes, and Linear/ReLU networks
    of one shape with a plain Adam."""
    shapes = None
    for ctx in contexts:
        layers = network_layers(ctx.algorithm)
        if (
            layers is None
            or ctx.spec.algorithm not in BATCHED
            or ctx.device.type != "cpu"
            or not plain_adam(ctx.algorithm, layers)
            or any(ctx.envs[name].augment is not None for name in ctx.train_envs)
        ):
            return False
        found = (
            [tuple(p.shape) for p in ctx.algorithm.network.parameters()],
            [len(ctx.splits[name]["in"]) for name in ctx.train_envs],
            [tuple(ctx.envs[name].x.shape) for name in ctx.train_envs],
        )
        if shapes is not None and found != shapes:
            return False
        shapes = found
    return True


def _same_first_step(contexts: list[runner.RunContext]) -> bool:
    """Whether copies of the members take their first step identically batched and one by one
    (statistics, weights, optimiser state); if not, one warning and the group trains one by
    one."""
    alone = [copy.deepcopy(ctx.algorithm) for ctx in contexts]
    together = [copy.deepcopy(ctx.algorithm) for ctx in contexts]
    expected = [a.update(b) for a, b in zip(alone, (c.minibatches(0) for c in contexts))]
    batched = BATCHED[contexts[0].spec.algorithm](together)
    stats = batched.step(*GroupBatches(contexts)(0)).tolist()
    batched.write_back()
    found = [dict(zip(batched.keys(), row)) for row in stats]
    same = found == expected and all(
        _same_state(a.state_dict(), b.state_dict()) for a, b in zip(alone, together)
    )
    if not same:
        log.warning(
            "%d runs of %s: batched kernels differ from one-by-one on this machine; training "
            "them one by one",
            len(contexts),
            contexts[0].spec.algorithm,
        )
    return same


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def time_group(specs: Sequence[RunSpec], options: RuntimeOptions, steps: int) -> dict[str, Any]:
    """Seconds to prepare ``specs`` as one group, per batched step, per batched evaluation and
    a member's share of the group's records (with their checkpoints, written concurrently),
    timed on throw-away copies (a step untimed first), for ``plan``'s estimate;
    ``{"alone": True}`` when they would train one by one."""
    short = [dataclasses.replace(s, steps=steps + 1, eval_every=steps + 1) for s in specs]
    with tempfile.TemporaryDirectory() as tmp, freed_memory_kept():  # as run_group trains
        run_options = dataclasses.replace(options, output_dir=Path(tmp))
        start = time.perf_counter()
        contexts = [runner.prepare(s, run_options, Path(tmp) / str(i)) for i, s in enumerate(short)]
        setup_s = time.perf_counter() - start
        if not _vectorisable(contexts):
            return {"alone": True}
        freeze_long_lived_objects()  # as GroupTrainer trains
        batched = BATCHED[specs[0].algorithm]([ctx.algorithm for ctx in contexts])
        batches = GroupBatches(contexts)
        batched.step(*batches(0))
        start, probed = time.perf_counter(), batched.probe_s
        for step in range(1, steps + 1):
            batched.step(*batches(step))
        # without re-probing the loss where a member's weight switches: a few times a run,
        # but a large share of a few steps
        step_s = (time.perf_counter() - start - (batched.probe_s - probed)) / steps
        start = time.perf_counter()
        scores = GroupEval(contexts, batched)()
        eval_s = time.perf_counter() - start
        batched.write_back()
        rng = capture_rng_state(contexts[0].device)
        with ThreadPoolExecutor(len(contexts)) as writers:  # the records, written as training does
            start = time.perf_counter()
            written = [
                writers.submit(
                    _write, c, c.new_record(steps, 0.0, {}, s), c.checkpoint(steps, 0.0, rng=rng)
                )
                for c, s in zip(contexts, scores)
            ]
            for future in written:
                future.result()
            record_s = (time.perf_counter() - start) / len(contexts)  # a member's share
    return {"setup_s": setup_s, "step_s": step_s, "eval_s": eval_s, "record_s": record_s}


def _write(ctx: runner.RunContext, record: dict[str, Any], checkpoint: bytes) -> dict[str, Any]:
    """A member's record, then its checkpoint, as ``RunContext.record`` writes them."""
    records.append_record(ctx.directory / records.RESULTS, record)
    ctx.write_checkpoint(checkpoint)
    return record


class GroupTrainer:
    """``runner.train_loop`` for several prepared runs at once, stepping them together.

    Records and checkpoints are composed here and written to disk in threads, one per member,
    while the group trains on: each is an fsync, milliseconds the steps need not wait for. A
    member's files are written in ``RunContext.record``'s order (record, then checkpoint), and
    its writes have finished before its next ones start and before it finishes.
    """

    def __init__(self, contexts: list[runner.RunContext], rng: list[Any]) -> None:
        self.contexts, self.rng = contexts, rng

    def train(self) -> list[runner.RunOutcome]:
        freeze_long_lived_objects()  # as train_loop
        with ThreadPoolExecutor(len(self.contexts), thread_name_prefix="record") as writers:
            return self._train(writers)

    def _train(self, writers: ThreadPoolExecutor) -> list[runner.RunOutcome]:
        contexts = self.contexts
        spec = contexts[0].spec
        batched = BATCHED[spec.algorithm]([ctx.algorithm for ctx in contexts])
        batches = GroupBatches(contexts)
        group_eval: GroupEval | None = GroupEval(contexts, batched)
        if not group_eval.comparable():
            group_eval = None
        checked = False
        keys = batched.keys()
        t0 = time.perf_counter()
        pending: list[Tensor] = []  # each step's statistics since the last record
        last: list[dict[str, Any] | None] = [None] * len(contexts)
        outcomes: list[runner.RunOutcome | None] = [None] * len(contexts)
        written: dict[int, Future] = {}  # records being written
        running = len(contexts)
        for step in range(spec.steps):
            if not running:
                break
            pending.append(batched.step(*batches(step)))
            if not runner.is_record_step(spec, step):
                continue  # a member that diverged here is found at the record step
            stats, first, pending = torch.stack(pending), step + 1 - len(pending), []
            # [steps, N]; a diverged member's later steps (NaN, its own) are never read
            finite = torch.isfinite(stats).all(2)
            # train_loop's running sums of the statistics, in float64 as its Python floats add
            means = (stats.double().cumsum(0)[-1] / len(stats)).tolist()
            self._written(written, last)
            scores: list[Any] = [None] * len(contexts)  # None: the member evaluates itself
            batched.write_back()
            if group_eval is not None:
                scores = group_eval()
                if not checked:  # the first evaluation both ways; on a difference, one by one
                    checked = True
                    if not self._same_scores(scores):
                        group_eval, scores = None, [None] * len(contexts)
            composed: dict[int, tuple] = {}  # each recording member's files
            for i, ctx in enumerate(contexts):
                if outcomes[i] is not None:
                    continue
                wall = time.perf_counter() - t0
                if not bool(finite[:, i].all()):
                    at = int(finite[:, i].logical_not().nonzero()[0])
                    found = dict(zip(keys, stats[at, i].tolist()))
                    log.warning(
                        "run %s diverged at step %d: %s", ctx.spec.run_id, first + at, found
                    )
                    outcomes[i] = ctx.finish("diverged", first + at, wall, last[i])
                    running -= 1
                else:
                    found = ctx.new_record(step, wall, dict(zip(keys, means[i])), scores[i])
                    composed[i] = (ctx, found, ctx.checkpoint(step, wall, rng=self.rng[i]))
            # written once all are serialised: the writers' Python would contend for the GIL
            written.update({i: writers.submit(_write, *args) for i, args in composed.items()})
        self._written(written, last)
        wall = time.perf_counter() - t0
        finished = {
            i: writers.submit(ctx.finish, "ok", spec.steps - 1, wall, last[i])
            for i, ctx in enumerate(contexts)
            if outcomes[i] is None
        }
        return [o if o is not None else finished[i].result() for i, o in enumerate(outcomes)]

    @staticmethod
    def _written(written: dict[int, Future], last: list[dict[str, Any] | None]) -> None:
        """Wait for the records being written (raising a writer's error); each is its member's
        last."""
        for i, future in written.items():
            last[i] = future.result()
        written.clear()

    def _same_scores(self, scores: list[Any]) -> bool:
        """Whether the batched evaluation equals each member's own (one warning if not)."""
        same = all(found == ctx.evaluate() for found, ctx in zip(scores, self.contexts))
        if not same:
            log.warning(
                "%d runs of %s: batched evaluation differs from one-by-one on this machine; "
                "evaluating them one by one",
                len(self.contexts),
                self.contexts[0].spec.algorithm,
            )
        return same
