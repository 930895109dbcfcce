"""Several trials of one small model trained together: one batched step instead of T small ones.

For tiny models (MLPs on toy data) a step costs mostly Python and dispatch overhead,
so T runs that share an architecture and hyperparameters train almost as fast as one
when their parameters are stacked along a leading trial dimension and the forward
pass is ``torch.func.vmap``-ed over it. Trials stay independent: the summed loss has
per-trial gradients, and Adam is elementwise, so each trial follows the trajectory
it would follow alone (equal up to float rounding of the batched kernels).

Every run keeps its own run directory, records, checkpoints and ``done`` file in the
format ``runner.run`` writes, so a stacked run resumes alone or stacked, and reports
cannot tell the difference (except ``wall_s``, the group's shared clock).

Only ERM is stacked (its update is re-expressed functionally below; the test suite
checks it against ``ERM.update``); networks with dropout or buffers are not, and any
spec that cannot be stacked runs through ``runner.run``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from bench import checkpoint, networks, records, runner
from bench.algorithms.base import classification_loss
from bench.seeding import canonical_json
from bench.spec import RunSpec, RuntimeOptions, resolve_hparams

log = logging.getLogger(__name__)

STACKABLE = frozenset({"erm"})


def stack_key(spec: RunSpec) -> str | None:
    """Specs with equal keys can train together; None when the algorithm is not stackable.

    Everything that shapes the computation must match: algorithm, dataset, size, steps,
    cadence, holdout, precision and the resolved hparams. Trial seeds (data, init,
    minibatches) may differ; test environments too, except for full-batch runs.
    """
    if spec.algorithm not in STACKABLE:
        return None
    hparams = resolve_hparams(spec)
    envs: Any = list(spec.test_envs) if hparams["batch_size"] == 0 else len(spec.test_envs)
    fields = [
        spec.algorithm,
        spec.algorithm_version,
        spec.dataset,
        spec.dataset_version,
        spec.size,
        spec.steps,
        spec.eval_every,
        spec.holdout_fraction,
        spec.precision,
        envs,
        hparams,
    ]
    return canonical_json(fields)


def stackable_network(network: torch.nn.Module) -> bool:
    """vmap needs a pure forward: no buffers to update (BatchNorm) and no random ops (dropout with p
    > 0)."""
    random_ops = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.AlphaDropout)
    return not list(network.buffers()) and not any(
        isinstance(m, random_ops) and m.p > 0 for m in network.modules()
    )


def run_stacked(specs: Sequence[RunSpec], options: RuntimeOptions) -> list[runner.RunOutcome]:
    """Train ``specs`` like ``[runner.run(s, options) for s in specs]``, stacking those that can be.

    Runs already done are skipped and runs claimed by another worker reported busy,
    exactly as ``runner.run`` does. Outcomes come back in the order of ``specs``.
    """
    outcomes: dict[int, runner.RunOutcome] = {}
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        key = stack_key(spec)
        if key is None:
            outcomes[i] = runner.run(spec, options)
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        outcomes.update(zip(members, _run_group([specs[i] for i in members], options)))
    return [outcomes[i] for i in range(len(specs))]


def _run_group(specs: list[RunSpec], options: RuntimeOptions) -> list[runner.RunOutcome]:
    outcomes: list[runner.RunOutcome | None] = [None] * len(specs)
    with contextlib.ExitStack() as locks:
        contexts: list[tuple[int, runner.RunContext]] = []
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
                ctx.rng_state = checkpoint.capture_rng_state(
                    ctx.device
                )  # advanced only by augmentation (see _batch)
                contexts.append((i, ctx))
        by_start: dict[int, list[tuple[int, runner.RunContext]]] = {}
        for i, ctx in contexts:
            by_start.setdefault(ctx.start, []).append((i, ctx))
        for members in by_start.values():
            ctxs = [ctx for _, ctx in members]
            if len(ctxs) == 1 or not stackable_network(ctxs[0].algorithm.network):
                done = [runner.train_loop(ctx) for ctx in ctxs]
            else:
                done = StackedTrainer(ctxs).train()
            for (i, _), outcome in zip(members, done):
                outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


class StackedTrainer:
    """ERM on T prepared runs at once; writes each run's records through its own RunContext."""

    def __init__(self, ctxs: list[runner.RunContext]) -> None:
        self.ctxs = ctxs
        self.template = ctxs[0].algorithm.network
        self.names = [name for name, _ in self.template.named_parameters()]
        self.head = {
            f"1.{name}"
            for name, p in ctxs[0].algorithm.classifier.named_parameters()
            if p.requires_grad
        }
        per_trial = [dict(ctx.algorithm.network.named_parameters()) for ctx in ctxs]
        self.params = {
            n: torch.stack([p[n].detach() for p in per_trial]).requires_grad_(True)
            for n in self.names
        }
        self.optimizer = ctxs[0].algorithm.make_optimizer(list(self.params.values()))
        self._load_optimizer_state()
        self.layers = self._layers()
        self.train_data = self._stack_train_data()

    def _trial_optimizer_pairs(self, ctx: runner.RunContext) -> list[tuple[Tensor, Tensor]]:
        """(trial parameter, stacked parameter) in the order the trial's optimizer holds them."""
        trial = dict(ctx.algorithm.network.named_parameters())
        return [(trial[n], self.params[n]) for n in self.names]

    def _load_optimizer_state(self) -> None:
        """Resumed runs: stack each trial's Adam moments (all trials share the step count)."""
        states = [ctx.algorithm.optimizer.state for ctx in self.ctxs]
        if not states[0]:
            return
        for t_index, name in enumerate(self.names):
            trial_params = [self._trial_optimizer_pairs(ctx)[t_index][0] for ctx in self.ctxs]
            first = states[0][trial_params[0]]
            self.optimizer.state[self.params[name]] = {
                "step": first["step"].clone(),
                **{
                    k: torch.stack([s[p][k] for s, p in zip(states, trial_params)])
                    for k in ("exp_avg", "exp_avg_sq")
                },
            }

    def _sync_trial(self, t: int, step: int) -> None:
        """Copy trial ``t``'s slice (weights, Adam moments, step count) into its own algorithm."""
        ctx = self.ctxs[t]
        with torch.no_grad():
            for trial_p, stacked_p in self._trial_optimizer_pairs(ctx):
                trial_p.copy_(stacked_p[t])
                state = self.optimizer.state.get(stacked_p)
                if state:
                    ctx.algorithm.optimizer.state[trial_p] = {
                        "step": state["step"].clone(),
                        "exp_avg": state["exp_avg"][t].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][t].clone(),
                    }
            ctx.algorithm.step.fill_(step + 1)

    def _layers(self) -> list[tuple[str, torch.nn.Module]] | None:
        """The network as a flat list of (parameter prefix, layer) when it is a plain MLP, else
        None.

        Such networks run as batched matrix products over the trial dimension, which costs
        far less per step than ``vmap`` (whose per-call overhead dominates tiny models).
        """
        containers = (torch.nn.Sequential, networks.MLP)
        layers = []
        for name, module in self.template.named_modules():
            if isinstance(module, containers):
                continue
            if list(module.children()) or not isinstance(
                module,
                (
                    torch.nn.Linear,
                    torch.nn.ReLU,
                    torch.nn.Flatten,
                    torch.nn.Identity,
                    torch.nn.Dropout,
                ),
            ):
                return None
            if isinstance(module, torch.nn.Flatten) and (module.start_dim, module.end_dim) != (
                1,
                -1,
            ):
                return None
            layers.append((name, module))
        return layers

    def _forward(self, x: Tensor) -> Tensor:
        """Logits ``[T, N, C]`` for inputs ``[T, N, ...]``, each trial with its own parameters."""
        if self.layers is None:
            return vmap(lambda params, xs: functional_call(self.template, params, (xs,)))(
                self.params, x
            )
        h = x
        for name, layer in self.layers:
            if isinstance(layer, torch.nn.Linear):
                weight = self.params[f"{name}.weight"].transpose(1, 2)
                bias = self.params.get(f"{name}.bias")
                h = (
                    torch.bmm(h, weight)
                    if bias is None
                    else torch.baddbmm(bias.unsqueeze(1), h, weight)
                )
            elif isinstance(layer, torch.nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, torch.nn.Flatten):
                h = h.flatten(2)
        return h

    def _batch(self, step: int) -> tuple[Tensor, Tensor, list[int]]:
        """Inputs ``[T, N, ...]`` and labels ``[T, N]`` of every trial, environments concatenated as
        ERM does."""
        if self.train_data is None:
            batches = []
            for ctx in (
                self.ctxs
            ):  # augmentation draws from the global RNGs: give each trial its own stream
                checkpoint.restore_rng_state(ctx.rng_state, ctx.device)
                batches.append(ctx.minibatches(step))
                ctx.rng_state = checkpoint.capture_rng_state(ctx.device)
            x = torch.stack([torch.cat([x for x, _ in mb]) for mb in batches])
            y = torch.stack([torch.cat([y for _, y in mb]) for mb in batches])
            return x, y, [len(y) for _, y in batches[0]]
        xs, ys = [], []
        rows = torch.arange(len(self.ctxs)).unsqueeze(1)
        for position, (x_all, y_all) in enumerate(self.train_data):
            idx = [ctx.samplers[ctx.train_envs[position]].indices(step) for ctx in self.ctxs]
            if idx[0] is None:  # full batch
                xs.append(x_all)
                ys.append(y_all)
            else:
                picked = torch.stack(idx).to(x_all.device)
                xs.append(x_all[rows, picked])
                ys.append(y_all[rows, picked])
        return torch.cat(xs, dim=1), torch.cat(ys, dim=1), [y.shape[1] for y in ys]

    def _stack_train_data(self) -> list[tuple[Tensor, Tensor]] | None:
        """Each training environment's ``in`` split stacked over trials, or None (augmentation,
        unequal sizes)."""
        stacked_envs = []
        for position in range(len(self.ctxs[0].train_envs)):
            parts = []
            for ctx in self.ctxs:
                env = ctx.envs[ctx.train_envs[position]]
                if env.augment is not None:
                    return None
                parts.append(env.batch(ctx.splits[ctx.train_envs[position]]["in"]))
            if len({tuple(x.shape) for x, _ in parts}) != 1:
                return None
            stacked_envs.append(
                (torch.stack([x for x, _ in parts]), torch.stack([y for _, y in parts]))
            )
        return stacked_envs

    def _step(self, step: int) -> list[dict[str, float]]:
        """One ERM update of every trial: pooled NLL + L2, and the per-environment head-gradient
        cosine."""
        x, y, sizes = self._batch(step)
        ctx0 = self.ctxs[0]
        with runner.precision_context(ctx0.device, ctx0.spec.precision):
            logits = self._forward(x)
            n_trials, n = y.shape
            per_example = classification_loss(
                logits.flatten(0, 1), y.flatten(), reduction="none"
            ).view(n_trials, n)
            nll = per_example.mean(1)
            l2 = ctx0.hparams["l2"]
            loss = (
                nll + l2 * sum(p.pow(2).flatten(1).sum(1) for p in self.params.values())
                if l2
                else nll
            )
            cosines = self._head_grad_cos(
                [part.mean(1) for part in per_example.split(sizes, dim=1)]
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # trials are independent: each slice gets its own gradient
            self.optimizer.step()
        losses, nlls = loss.tolist(), nll.tolist()
        return [
            {"loss": losses[t], "nll": nlls[t], **({"grad_cos": cosines[t]} if cosines else {})}
            for t in range(n_trials)
        ]

    def _head_grad_cos(self, env_nll: list[Tensor]) -> list[float]:
        """ERM's ``grad_cos`` per trial: ``mean_pairwise_cosine`` of the per-environment head
        gradients, batched."""
        if len(env_nll) < 2:
            return []
        head = [self.params[n] for n in self.names if n in self.head]
        grads = [
            torch.cat(
                [g.flatten(1) for g in torch.autograd.grad(e.sum(), head, retain_graph=True)], dim=1
            )
            for e in env_nll
        ]
        unit = torch.nn.functional.normalize(
            torch.stack(grads, dim=1), dim=2
        )  # [T, E, D], as mean_pairwise_cosine
        gram = unit @ unit.transpose(1, 2)
        n = len(env_nll)
        return ((gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (n * (n - 1))).tolist()

    def train(self) -> list[runner.RunOutcome]:
        ctxs = self.ctxs
        spec = ctxs[0].spec
        t0 = time.perf_counter()
        sums: list[dict[str, float]] = [{} for _ in ctxs]
        counts = [0] * len(ctxs)
        active = list(range(len(ctxs)))
        outcomes: dict[int, runner.RunOutcome] = {}
        last: list[dict[str, Any] | None] = [None] * len(ctxs)
        for step in range(ctxs[0].start, spec.steps):
            stats = self._step(step)
            for t in list(active):
                if not all(math.isfinite(v) for v in stats[t].values()):
                    log.warning(
                        "run %s diverged at step %d: %s", ctxs[t].spec.run_id, step, stats[t]
                    )
                    self._sync_trial(t, step)
                    outcomes[t] = ctxs[t].finish(
                        "diverged", step, ctxs[t].wall_offset + time.perf_counter() - t0, last[t]
                    )
                    active.remove(t)
                    continue
                for key, value in stats[t].items():
                    sums[t][key] = sums[t].get(key, 0.0) + value
                counts[t] += 1
                if runner.is_record_step(spec, step):
                    self._sync_trial(t, step)
                    wall = ctxs[t].wall_offset + time.perf_counter() - t0
                    last[t] = ctxs[t].record(
                        step, wall, {k: v / counts[t] for k, v in sums[t].items()}
                    )
                    sums[t], counts[t] = {}, 0
            if not active:
                break
        for t in active:
            outcomes[t] = ctxs[t].finish(
                "ok", spec.steps - 1, ctxs[t].wall_offset + time.perf_counter() - t0, last[t]
            )
        return [outcomes[t] for t in range(len(ctxs))]
