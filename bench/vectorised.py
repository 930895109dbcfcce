"""Train a group of small runs as one unit, with records identical to training them one by one.

Runs that share every shape (algorithm, dataset, test environments, steps, cadence and every
hyperparameter but ``lr``, ``weight_decay`` and the algorithm's own ``PER_RUN`` ones; they
may differ in trial seed and hparams sample) are each prepared by ``runner.prepare`` as
usual: own data, splits, minibatch streams, seeded initialisation, optimiser and record
files. Training then stacks the members' weights along a leading dimension and takes every
member's step in one sequence of batched operations: the forward pass, the loss and its
diagnostics, the backward pass and Adam. ``BatchedERM`` is ERM's update; ``BatchedVREx`` and
``BatchedGroupDRO`` change only the objective on the environments' risks (``BATCHED`` lists
them). One-by-one training is overhead-bound on a tiny model (hundreds of operator calls of
microseconds each per step); batched, those calls are shared by the group.

Identity is bitwise, not approximate: each batched operation computes every member's slice
with the arithmetic of the unbatched one. The backward pass is written out with the kernels
autograd runs for one run, in the layout its formulas use; ``bmm`` slices equal ``mm`` when
each starts on a 64-byte boundary, as a fresh tensor does, so stacks are laid out aligned;
Adam's formulas take per-member scalars. Before a group starts, ``_same_first_step`` trains
copies of its members one step both ways and compares every number (statistics, weights,
optimiser state); on any difference the group trains one by one with one warning. The first
batched evaluation is checked against each member's own the same way. At every record step
the members' modules and Adam states are written back from the stacks, so records and
checkpoints are the runner's own (a checkpoint resumes one by one). Specs without a shared
shape, resumed runs and non-CPU devices train one by one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import records, runner
from bench.algorithms import Algorithm
from bench.checkpoint import capture_rng_state, restore_rng_state
from bench.datasets import DATASETS
from bench.evaluation import empty_record, evaluate, skipped_record, split_scores
from bench.seeding import canonical_json
from bench.spec import RunSpec, RuntimeOptions

log = logging.getLogger(__name__)

# Hyperparameters members of a group may differ in: they change no shape and act only through
# Adam's per-member scalars.
PER_RUN_HPARAMS = frozenset({"lr", "weight_decay"})  # and each batched algorithm's PER_RUN
MAX_GROUP = 16  # members per unit: enough to share a step's operator calls, few enough to spread


def group_key(spec: RunSpec) -> str | None:
    """Specs with equal keys can train as one group; None when the spec trains one by one.

    Needs a batched algorithm (``BATCHED``) on a dropout-free MLP with a linear
    head of two or more logits (cross-entropy) and no l2 term, in fp32, without weight
    averaging or unlabeled data.
    """
    hp = spec.hparams
    if (
        spec.algorithm not in BATCHED
        or DATASETS.get(spec.dataset).num_outputs() == 1  # one logit: BCE, not batched here
        or hp.get("featurizer") != "mlp"
        or hp.get("mlp_dropout", 0.0) != 0.0
        or hp.get("nonlinear_classifier", False)
        or hp.get("l2", 0.0) != 0.0
        or spec.precision != "fp32"
        or spec.averaging
        or spec.uda_fraction
    ):
        return None
    shared = spec.to_dict()
    for key in ("trial_seed", "hparams_seed", "overrides"):
        shared.pop(key, None)
    per_run = PER_RUN_HPARAMS | BATCHED[spec.algorithm].PER_RUN
    shared["hparams"] = {k: v for k, v in hp.items() if k not in per_run}
    return canonical_json(shared)


def units(specs: Sequence[RunSpec], workers: int = 1) -> list[list[RunSpec]]:
    """The specs as units of work: groups of equal ``group_key`` and single runs.

    A group is cut into parts of at most ``MAX_GROUP`` runs, and into at least its share of
    ``workers`` so that every worker gets a unit.
    """
    groups: dict[str, list[RunSpec]] = {}
    out: list[list[RunSpec]] = []
    for spec in specs:
        key = group_key(spec)
        if key is None:
            out.append([spec])
        else:
            groups.setdefault(key, []).append(spec)
    for group in groups.values():
        share = math.ceil(workers * len(group) / max(1, len(specs)))
        parts = min(len(group), max(math.ceil(len(group) / MAX_GROUP), share))
        size = math.ceil(len(group) / parts)
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def describe_units(work: Sequence[Sequence[RunSpec]]) -> list[str]:
    """What ``--dry-run --vectorise`` prints: the groups that train together, and the rest."""
    groups = [unit for unit in work if len(unit) > 1]
    alone = sum(len(unit) == 1 for unit in work)
    lines = [
        f"vectorised: {sum(map(len, groups))} run(s) in {len(groups)} group(s); "
        f"{alone} run(s) one by one"
    ]
    for unit in groups:
        first = unit[0]
        trials = sorted({s.trial_seed for s in unit})
        seeds = sorted({s.hparams_seed for s in unit})
        lines.append(
            f"  {len(unit)} runs of {first.algorithm} on {first.dataset} (test "
            f"{','.join(first.test_envs)}): trials {trials}, hparams seeds {seeds}"
        )
    return lines


def run_group(specs: Sequence[RunSpec], options: RuntimeOptions) -> list[runner.RunOutcome]:
    """``[runner.run(s, options) for s in specs]``, training the new runs together.

    As ``runner.run``: done runs are skipped, runs claimed by another worker reported busy;
    partially trained runs resume one by one. Outcomes come back in the order of ``specs``.
    """
    outcomes: dict[int, runner.RunOutcome] = {}
    members: list[tuple[int, runner.RunContext, dict[str, Any]]] = []
    with contextlib.ExitStack() as locks:
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


def _layers(algorithm: Algorithm) -> list[nn.Module] | None:
    """The network as a flat list of Linear and ReLU modules (Flatten of vectors dropped); None
    for anything else."""
    if len(algorithm.input_shape) != 1:
        return None
    out = []
    for module in algorithm.network.modules():
        if list(module.children()):
            continue
        if isinstance(module, nn.Linear) and module.bias is not None:
            out.append(module)
        elif isinstance(module, nn.ReLU):
            out.append(module)
        elif not isinstance(module, nn.Flatten):
            return None
    return out if out and isinstance(out[-1], nn.Linear) else None


def _plain_adam(algorithm: Algorithm, layers: list[nn.Module]) -> bool:
    """One Adam over exactly the layers' weights and biases, in their order, with the defaults
    ``BatchedERM`` reproduces."""
    opt = algorithm.optimizer
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or opt.state:
        return False
    group = opt.param_groups[0]
    params = [p for m in layers if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
    return (
        len(group["params"]) == len(params)
        and all(a is b for a, b in zip(group["params"], params))
        and group["betas"] == (0.9, 0.999)
        and group["eps"] == 1e-8
        and not any(group[k] for k in ("amsgrad", "maximize", "foreach", "fused", "capturable"))
        and not group["differentiable"]
        and not group.get("decoupled_weight_decay", False)
    )


def _vectorisable(contexts: list[runner.RunContext]) -> bool:
    """A batched algorithm on CPU, no augmentation, equal split sizes, and Linear/ReLU networks
    of one shape with a plain Adam."""
    shapes = None
    for ctx in contexts:
        layers = _layers(ctx.algorithm)
        if (
            layers is None
            or ctx.spec.algorithm not in BATCHED
            or ctx.device.type != "cpu"
            or not _plain_adam(ctx.algorithm, layers)
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


class GroupBatches:
    """Every member's minibatches of one step as stacked tensors: inputs [N, rows, ...] and
    labels [N, rows], each member's rows those of ``RunContext.minibatches`` in its order.

    All members' training environments live in one flat tensor; each epoch's order of every
    member's split (its sampler's permutation of its ``in`` positions) is gathered once, so a
    step is one ``index_select`` of inputs and one of labels.
    """

    def __init__(self, contexts: list[runner.RunContext]) -> None:
        self.names = contexts[0].train_envs
        self.samplers = {n: [c.samplers[n] for c in contexts] for n in self.names}
        xs, ys, self.split_in = [], [], {}
        offset = 0
        for name in self.names:
            sizes = [len(c.envs[name].y) for c in contexts]
            base = torch.tensor([offset + sum(sizes[:i]) for i in range(len(sizes))])
            self.split_in[name] = (
                torch.stack([c.splits[name]["in"] for c in contexts]) + base[:, None]
            )
            xs += [c.envs[name].x for c in contexts]
            ys += [c.envs[name].y for c in contexts]
            offset += sum(sizes)
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        self.orders: dict[tuple[str, int], Tensor] = {}

    def _order(self, name: str, epoch: int) -> Tensor:
        """[N, n_in]: rows of the flat tensors in each member's epoch order."""
        key = (name, epoch)
        if key not in self.orders:
            for old in [k for k in self.orders if k[0] == name and k[1] < epoch - 1]:
                del self.orders[old]
            perms = torch.stack([s.permutation(epoch) for s in self.samplers[name]])
            self.orders[key] = torch.gather(self.split_in[name], 1, perms)
        return self.orders[key]

    def __call__(self, step: int) -> tuple[Tensor, Tensor, list[int]]:
        parts = []
        for name in self.names:
            sampler = self.samplers[name][0]
            if sampler.batch_size == 0:  # full batch: the whole split every step
                parts.append(self.split_in[name])
            else:
                parts += [self._order(name, e)[:, o : o + k] for e, o, k in sampler.spans(step)]
        idx = torch.cat(parts, dim=1)
        n, rows = idx.shape
        flat = idx.reshape(-1)
        x = self.x.index_select(0, flat).view(n, rows, *self.x.shape[1:])
        sizes = [
            len(self.split_in[name][0])
            if self.samplers[name][0].batch_size == 0
            else self.samplers[name][0].batch_size
            for name in self.names
        ]
        return x, self.y.index_select(0, flat).view(n, rows), sizes


def _aligned_pair(stack: Tensor) -> tuple[Tensor, Tensor]:
    """``stack`` [N, k, d] copied so that each member's [k, d] block starts on a 64-byte
    boundary, as a fresh tensor does, and its transpose: ``bmm`` of the pair then equals
    ``u @ u.T`` on each member's own tensor (MKL rounds blocks at other offsets differently)."""
    n, k, d = stack.shape
    stride = -(-k * d // BatchedERM.ALIGN) * BatchedERM.ALIGN
    buffer = torch.zeros(n, stride)
    buffer[:, : k * d] = stack.reshape(n, -1)
    blocks = buffer.as_strided((n, k, d), (stride, d, 1))
    return blocks, blocks.transpose(1, 2)


class BatchedERM:
    """ERM's ``update`` (loss, ``grad_cos`` diagnostic, Adam step) for N members at once.

    The members' Linear weights live in one buffer (``flat``): weight j of every member is a
    contiguous [N, *shape] view of it starting on a 64-byte boundary, and so are the weights'
    gradients and Adam's moments in their own buffers. Adam is then a dozen operations on the
    whole buffer, not a dozen per weight. ``write_back`` copies weights and moments into the
    members' modules and optimisers.
    """

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
    PER_RUN: ClassVar[frozenset[str]] = frozenset()  # the algorithm's hparams members may vary
    ALIGN = 16  # floats: each stack starts on a 64-byte boundary, as a fresh tensor does

    def __init__(self, algorithms: list[Algorithm]) -> None:
        self.algorithms = algorithms
        self.layers = [_layers(a) for a in algorithms]
        self.kinds = ["linear" if isinstance(m, nn.Linear) else "relu" for m in self.layers[0]]
        self.member_params = [
            [p for m in layers if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
            for layers in self.layers
        ]
        n = len(algorithms)
        self.blocks: list[tuple[int, tuple[int, ...]]] = []
        member, start = [], 0
        for p in self.member_params[0]:
            self.blocks.append((start, tuple(p.shape)))
            member.append(torch.arange(n).repeat_interleave(p.numel()))
            padding = -(-n * p.numel() // self.ALIGN) * self.ALIGN - n * p.numel()
            member.append(torch.zeros(padding, dtype=torch.long))
            start += n * p.numel() + padding
        self.member = torch.cat(member)  # which member each element belongs to (padding: 0)
        self.flat, self.flat_grad = torch.zeros(start), torch.zeros(start)
        self.exp_avg, self.exp_avg_sq = torch.zeros(start), torch.zeros(start)
        self.params = self._views(self.flat)
        with torch.no_grad():
            for j, view in enumerate(self.params):
                view.copy_(torch.stack([ps[j] for ps in self.member_params]))
        groups = [a.optimizer.param_groups[0] for a in algorithms]
        self.lr = [g["lr"] for g in groups]
        decay = [g["weight_decay"] for g in groups]
        self.decay = self._spread(torch.tensor(decay)) if any(decay) else None
        self.steps = [0] * n  # Adam's, per member (restarts where an algorithm re-creates it)
        self.updates = int(algorithms[0].step)  # the algorithm's step counter
        self.has_grad_cos = algorithms[0].num_train_envs >= 2
        # each row's weight in the loss: 1/rows (the mean), and 1/(its environment's rows)
        self._mean_weights: Tensor | None = None
        self._env_weights: tuple[list[int], Tensor] | None = None
        self._unused = torch.zeros(())  # nll_loss_backward's total_weight: unread unreduced

    def _views(self, buffer: Tensor) -> list[Tensor]:
        n = len(self.algorithms)
        return [
            buffer[start : start + n * math.prod(shape)].view(n, *shape)
            for start, shape in self.blocks
        ]

    def keys(self) -> list[str]:
        return ["loss", "nll"] + (["grad_cos"] if self.has_grad_cos else [])

    def _forward(self, x: Tensor, trace: list[tuple[str, Tensor]] | None = None) -> Tensor:
        """The logits; ``trace`` collects what the backward pass reads: each Linear's input,
        each ReLU's output."""
        h, params = x, iter(self.params)
        for kind in self.kinds:
            if kind == "relu":
                h = torch.relu(h)
                if trace is not None:
                    trace.append((kind, h))
            else:
                if trace is not None:
                    trace.append((kind, h))
                weight, bias = next(params), next(params)
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        return h

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """One update of every member; its statistics as [N, len(keys())] (``update``'s).

        The backward pass is written out with the kernels autograd runs for the unbatched
        loss (``nll_loss`` after ``log_softmax``, ``F.linear``, ReLU), and in the layout its
        formulas use: ``addmm``'s weight gradient is ``grad^T @ input``.
        """
        n, rows = y.shape
        trace: list[tuple[str, Tensor]] = []
        logits = self._forward(x, trace)
        logp = F.log_softmax(logits.reshape(n * rows, logits.shape[2]), dim=1)
        grad, stats = self._loss(logp, y, sizes)
        if self.has_grad_cos:
            stats.append(self._grad_cos(trace[-1][1], logp, y, sizes))
        self._backward(grad.view(n, rows, -1), trace)
        self._adam()
        self.updates += 1
        return torch.stack(stats, dim=1)

    def _loss(self, logp: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        """The logits' gradient and the statistics before ``grad_cos``; ERM: the mean loss
        over all rows."""
        n, rows = y.shape
        member_logp = logp.view(n, rows, -1)
        # each member's mean loss, reduced as the unbatched loss reduces it
        nll = torch.stack([F.nll_loss(member_logp[i], y[i]) for i in range(n)])
        if self._mean_weights is None or len(self._mean_weights) != n * rows:
            self._mean_weights = torch.full((n * rows,), 1.0 / rows)
        return self._logits_grad(self._mean_weights, logp, y), [nll, nll]

    def _env_losses(self, logp: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """[N, E]: each member's mean loss on each environment (``env_losses``), one
        ``nll_loss`` each: its reduction order is the unbatched one."""
        n, rows = y.shape
        member_logp, out, start = logp.view(n, rows, -1), [], 0
        for size in sizes:
            part, labels = member_logp[:, start : start + size], y[:, start : start + size]
            out.append(torch.stack([F.nll_loss(part[i], labels[i]) for i in range(n)]))
            start += size
        return torch.stack(out, dim=1)

    def _env_grad(self, d_losses: Tensor, logp: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """The logits' gradient from d(objective)/d(environment losses) [N, E]: a mean loss's
        backward gives each of its rows (its gradient) / (its rows)."""
        counts = torch.tensor(sizes)
        share = (d_losses / counts.to(d_losses.dtype)).repeat_interleave(counts, dim=1)
        return self._logits_grad(share.reshape(-1), logp, y)

    def _logits_grad(self, share: Tensor, logp: Tensor, y: Tensor) -> Tensor:
        """d(sum over rows of share * nll)/d logits, row by row: ``nll_loss``'s backward (-share
        at the label), then ``log_softmax``'s."""
        nll = torch.ops.aten.nll_loss_backward(
            share, logp, y.reshape(-1), None, 0, -100, self._unused
        )
        return torch._log_softmax_backward_data(nll, logp, 1, logp.dtype)

    def _backward(self, grad: Tensor, trace: list[tuple[str, Tensor]]) -> None:
        """Every weight's gradient into ``flat_grad`` from the logits' gradient."""
        grads = self._views(self.flat_grad)
        j = len(self.params) - 2
        for i in range(len(trace) - 1, -1, -1):
            kind, tensor = trace[i]
            if kind == "relu":
                grad = torch.ops.aten.threshold_backward(grad, tensor, 0)
                continue
            grads[j].copy_(torch.bmm(grad.transpose(1, 2), tensor))
            grads[j + 1].copy_(grad.sum(1))
            if i > 0:  # the network's input needs no gradient
                grad = torch.bmm(grad, self.params[j])
            j -= 2

    def _grad_cos(self, features: Tensor, logp: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
        """``Algorithm.head_grad_cos`` per member: mean pairwise cosine of the per-environment
        gradients of the head (the last Linear, whose input is ``features``).

        Each environment's loss is its rows' mean cross-entropy, so its gradient on a row of
        log-probabilities ``logp`` is -1/rows at the label (``nll_loss_backward``), then
        ``_log_softmax_backward_data``: the kernels autograd runs, called once for all rows
        (the environments share none). Each environment's head gradient is then formed as the
        unbatched backward forms it, from all rows with the others' set to zero.
        """
        n, rows, classes = features.shape[0], features.shape[1], logp.shape[1]
        k = len(sizes)
        if self._env_weights is None or self._env_weights[0] != sizes:
            share = torch.cat([torch.full((size,), 1.0 / size) for size in sizes])
            self._env_weights = (sizes, share.repeat(n))
        grad = self._logits_grad(self._env_weights[1], logp, y).view(n, rows, classes)
        per_env = torch.zeros(k, n, rows, classes)
        vectors, start = [], 0
        for e, size in enumerate(sizes):
            per_env[e, :, start : start + size] = grad[:, start : start + size]
            start += size
            weight = torch.bmm(per_env[e].transpose(1, 2), features)
            vectors.append(torch.cat([weight.view(n, -1), per_env[e].sum(1)], dim=1))
        unit = F.normalize(torch.stack(vectors, dim=1), dim=2)
        gram = torch.bmm(*_aligned_pair(unit))
        return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))

    @torch.no_grad()
    def _adam(self) -> None:
        """torch.optim.Adam's single-tensor step (CPU's default) on the whole buffer, each
        element with its member's lr, weight decay and step count (padding stays zero)."""
        self.steps = [t + 1 for t in self.steps]
        correction1 = [1 - self.BETA1 ** float(t) for t in self.steps]
        grad = self.flat_grad
        if self.decay is not None:  # grad + wd * p, fused as Tensor.add(alpha=wd) fuses it
            grad = torch.addcmul(grad, self.flat, self.decay)
        self.exp_avg.lerp_(grad, 1 - self.BETA1)
        self.exp_avg_sq.mul_(self.BETA2).addcmul_(grad, grad, value=1 - self.BETA2)
        corrections2 = {(1 - self.BETA2 ** float(t)) ** 0.5 for t in self.steps}
        if len(corrections2) == 1:  # every member at the same step (Adam's Python float)
            denom = (self.exp_avg_sq.sqrt() / corrections2.pop()).add_(self.EPS)
        else:
            per_member = torch.tensor([(1 - self.BETA2 ** float(t)) ** 0.5 for t in self.steps])
            denom = (self.exp_avg_sq.sqrt() / self._spread(per_member)).add_(self.EPS)
        size = self._spread(torch.tensor([-lr / c for lr, c in zip(self.lr, correction1)]))
        self.flat.add_(torch.mul(size, self.exp_avg).div_(denom))  # (-size * m) / denom: addcdiv's

    def _spread(self, per_member: Tensor) -> Tensor:
        """A per-member value at each element of the buffers."""
        return per_member.index_select(0, self.member)

    def _restart_adam(self, members: list[bool]) -> None:
        """``make_optimizer`` again for those members: fresh moments, bias correction from
        step 1."""
        if not any(members):
            return
        fresh = self._spread(torch.tensor(members))
        self.exp_avg.masked_fill_(fresh, 0.0)
        self.exp_avg_sq.masked_fill_(fresh, 0.0)
        self.steps = [0 if m else t for m, t in zip(members, self.steps)]

    @torch.no_grad()
    def write_back(self) -> None:
        """Each member's weights, Adam state and step counter from the stacks."""
        for i, algorithm in enumerate(self.algorithms):
            opt = algorithm.optimizer
            moments = zip(self._views(self.exp_avg), self._views(self.exp_avg_sq))
            for p, stacked, (m, v) in zip(self.member_params[i], self.params, moments):
                p.copy_(stacked[i])
                opt.state[p] = {
                    "step": torch.tensor(float(self.steps[i]), dtype=torch.float32),
                    "exp_avg": m[i].clone(),
                    "exp_avg_sq": v[i].clone(),
                }
            algorithm.step.fill_(self.updates)


class BatchedVREx(BatchedERM):
    """V-REx's ``update``: mean environment risk + weight * their variance (or the squared
    difference of two), annealed as ``Algorithm.penalised_loss`` anneals it."""

    PER_RUN = frozenset({"vrex_lambda", "vrex_penalty_anneal_iters"})

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        hps = [a.hparams for a in algorithms]
        self.weight = [hp["vrex_lambda"] for hp in hps]
        self.anneal = [hp["vrex_penalty_anneal_iters"] for hp in hps]
        self.squared_difference = hps[0]["vrex_penalty"] == "squared_difference"
        self.irm_code = hps[0]["irm_code"]

    def keys(self) -> list[str]:
        return ["loss", "nll", "penalty"] + (["grad_cos"] if self.has_grad_cos else [])

    def _loss(self, logp: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        step = self.updates
        w = torch.tensor([lam if step >= t else 1.0 for lam, t in zip(self.weight, self.anneal)])
        with torch.enable_grad():  # the unbatched objective's own graph, on [N, E] risks
            losses = self._env_losses(logp, y, sizes).requires_grad_()
            nll = losses.mean(1)
            if self.squared_difference:
                penalty = (losses[:, 0] - losses[:, 1]).pow(2)
            else:
                penalty = (losses - nll.unsqueeze(1)).pow(2).mean(1)
            loss = nll + w * penalty
            if self.irm_code:  # divided by the weight where it exceeds 1
                loss = torch.where(w > 1.0, loss / w, loss)
            (d_losses,) = torch.autograd.grad(loss.sum(), losses)
        if not self.irm_code:  # DomainBed: Adam re-created at each member's anneal step
            self._restart_adam([step == t for t in self.anneal])
        stats = [loss.detach(), nll.detach(), penalty.detach()]
        return self._env_grad(d_losses, logp, y, sizes), stats


class BatchedGroupDRO(BatchedERM):
    """GroupDRO's ``update``: the q-weighted risk, q ascending on the environment risks."""

    PER_RUN = frozenset({"groupdro_eta"})

    def __init__(self, algorithms: list[Algorithm]) -> None:
        super().__init__(algorithms)
        self.eta = torch.tensor([a.hparams["groupdro_eta"] for a in algorithms]).unsqueeze(1)
        self.q = torch.stack([a.q for a in algorithms])

    def keys(self) -> list[str]:
        return ["loss", "nll", "q_max"] + (["grad_cos"] if self.has_grad_cos else [])

    def _loss(self, logp: Tensor, y: Tensor, sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
        losses = self._env_losses(logp, y, sizes)
        self.q.mul_(torch.exp(self.eta * losses))
        self.q.div_(self.q.sum(1, keepdim=True))
        # the value as torch.dot sums it; its gradient with respect to the risks is q
        loss = torch.stack([torch.dot(losses[i], self.q[i]) for i in range(len(losses))])
        stats = [loss, losses.mean(1), self.q.max(1).values]
        return self._env_grad(self.q, logp, y, sizes), stats

    @torch.no_grad()
    def write_back(self) -> None:
        super().write_back()
        for algorithm, q in zip(self.algorithms, self.q):
            algorithm.q.copy_(q)


# The algorithms whose update trains batched, and the class that does it.
BATCHED: dict[str, type[BatchedERM]] = {
    "erm": BatchedERM,
    "vrex": BatchedVREx,
    "group_dro": BatchedGroupDRO,
}


class GroupEval:
    """``evaluation.evaluate`` of every member at once: the same splits, chunks of
    ``eval_batch_size`` rows, forward passes and confusion counts, batched along the members."""

    def __init__(self, contexts: list[runner.RunContext], batched: BatchedERM) -> None:
        self.contexts, self.batched = contexts, batched
        first = contexts[0]
        self.classes = max(first.algorithm.num_classes, 2)
        self.chunk = first.options.eval_batch_size
        names = list(first.splits)
        offsets, xs, ys, start = {}, [], [], 0
        for i, ctx in enumerate(contexts):
            for name in names:
                offsets[i, name] = start
                xs.append(ctx.envs[name].x)
                ys.append(ctx.envs[name].y)
                start += len(ctx.envs[name].y)
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        self.idx = {
            (name, part): torch.stack(
                [ctx.splits[name][part] + offsets[i, name] for i, ctx in enumerate(contexts)]
            )
            for name in names
            for part in first.splits[name]
        }

    def comparable(self) -> bool:
        """Every member has the first's environments, split sizes and skipped splits."""
        first = self.contexts[0]
        return all(
            ctx.skip == first.skip
            and {n: {p: len(i) for p, i in parts.items()} for n, parts in ctx.splits.items()}
            == {n: {p: len(i) for p, i in parts.items()} for n, parts in first.splits.items()}
            for ctx in self.contexts
        )

    @torch.inference_mode()
    def __call__(self) -> list[dict[str, dict[str, dict[str, Any]]]]:
        members = len(self.contexts)
        out: list[dict[str, dict[str, dict[str, Any]]]] = [{} for _ in range(members)]
        for (name, part), idx in self.idx.items():
            n = idx.shape[1]
            if (name, part) in self.contexts[0].skip or n == 0:
                found = [skipped_record(n) if n else empty_record()] * members
            else:
                found = self._split(idx)
            for i in range(members):
                out[i].setdefault(name, {})[part] = found[i]
        return out

    def _split(self, idx: Tensor) -> list[dict[str, Any]]:
        members, n = idx.shape
        c = self.classes
        codes = []
        for start in range(0, n, self.chunk):
            flat = idx[:, start : start + self.chunk].reshape(-1)
            x = self.x.index_select(0, flat).view(members, -1, *self.x.shape[1:])
            logits = self.batched._forward(x)
            pred = (logits[..., 0] > 0).long() if logits.shape[2] == 1 else logits.argmax(dim=2)
            codes.append(self.y.index_select(0, flat).view(members, -1) * c + pred)
        cells = torch.cat(codes, dim=1) + torch.arange(members).unsqueeze(1) * (c * c)
        counts = torch.bincount(cells.reshape(-1), minlength=members * c * c)
        out = []
        for cells in counts.view(members, c * c).tolist():
            confusion = [[k // c, k % c, count] for k, count in enumerate(cells) if count]
            out.append(split_scores(confusion, n))
        return out


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
    per member's record (with its checkpoint), timed on throw-away copies (a step untimed
    first), for ``plan``'s estimate; ``{"alone": True}`` when they would train one by one."""
    short = [dataclasses.replace(s, steps=steps + 1, eval_every=steps + 1) for s in specs]
    with tempfile.TemporaryDirectory() as tmp:
        run_options = dataclasses.replace(options, output_dir=Path(tmp))
        start = time.perf_counter()
        contexts = [runner.prepare(s, run_options, Path(tmp) / str(i)) for i, s in enumerate(short)]
        setup_s = time.perf_counter() - start
        if not _vectorisable(contexts):
            return {"alone": True}
        batched = BATCHED[specs[0].algorithm]([ctx.algorithm for ctx in contexts])
        batches = GroupBatches(contexts)
        batched.step(*batches(0))
        start = time.perf_counter()
        for step in range(1, steps + 1):
            batched.step(*batches(step))
        step_s = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        scores = GroupEval(contexts, batched)()
        eval_s = time.perf_counter() - start
        batched.write_back()
        start = time.perf_counter()  # one member's record and checkpoint, written as training does
        contexts[0].record(steps, 0.0, {}, scores[0])
        record_s = time.perf_counter() - start
    return {"setup_s": setup_s, "step_s": step_s, "eval_s": eval_s, "record_s": record_s}


class GroupTrainer:
    """``runner.train_loop`` for several prepared runs at once, stepping them together."""

    def __init__(self, contexts: list[runner.RunContext], rng: list[Any]) -> None:
        self.contexts, self.rng = contexts, rng

    def train(self) -> list[runner.RunOutcome]:
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
        sums: list[dict[str, float]] = [{} for _ in contexts]
        counts = [0] * len(contexts)
        last: list[dict[str, Any] | None] = [None] * len(contexts)
        outcomes: list[runner.RunOutcome | None] = [None] * len(contexts)
        for step in range(spec.steps):
            if all(o is not None for o in outcomes):
                break
            rows = batched.step(*batches(step)).tolist()
            record = runner.is_record_step(spec, step)
            scores: list[Any] = [None] * len(contexts)
            if record:
                batched.write_back()
                if group_eval is not None:
                    scores = group_eval()
                    if not checked:  # the first evaluation both ways; on a difference, one by one
                        checked = True
                        if not self._same_scores(scores):
                            group_eval, scores = None, [None] * len(contexts)
            for i, (ctx, row) in enumerate(zip(contexts, rows)):
                if outcomes[i] is not None:
                    continue
                stats = dict(zip(keys, row))
                if not all(math.isfinite(v) for v in row):
                    log.warning("run %s diverged at step %d: %s", ctx.spec.run_id, step, stats)
                    outcomes[i] = ctx.finish("diverged", step, time.perf_counter() - t0, last[i])
                    continue
                for key, value in stats.items():
                    sums[i][key] = sums[i].get(key, 0.0) + value
                counts[i] += 1
                if record:
                    restore_rng_state(self.rng[i], ctx.device)
                    train = {key: value / counts[i] for key, value in sums[i].items()}
                    last[i] = ctx.record(step, time.perf_counter() - t0, train, scores[i])
                    sums[i], counts[i] = {}, 0
        wall = time.perf_counter() - t0
        return [
            o if o is not None else ctx.finish("ok", spec.steps - 1, wall, last[i])
            for i, (o, ctx) in enumerate(zip(outcomes, contexts))
        ]

    def _same_scores(self, scores: list[Any]) -> bool:
        """Whether the batched evaluation equals each member's own (one warning if not)."""
        same = all(
            found
            == evaluate(ctx.algorithm, ctx.envs, ctx.splits, ctx.options.eval_batch_size, ctx.skip)
            for found, ctx in zip(scores, self.contexts)
        )
        if not same:
            log.warning(
                "%d runs of %s: batched evaluation differs from one-by-one on this machine; "
                "evaluating them one by one",
                len(self.contexts),
                self.contexts[0].spec.algorithm,
            )
        return same
