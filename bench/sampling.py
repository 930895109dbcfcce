"""Which examples a run sees: the seeded in/out holdout, the unlabeled split of a domain-adaptation
run, and the minibatch streams.

All are pure functions of (trial_seed, environment[, step]), so every algorithm in a
trial sees the same data and a resumed run redraws exactly what it would have drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from bench.datasets import EnvData, MultiEnvDataset
from bench.errors import UserError
from bench.seeding import rng, torch_generator

if TYPE_CHECKING:
    from bench.spec import RunSpec


def holdout_splits(
    dataset: MultiEnvDataset, trial_seed: int, fraction: float
) -> dict[str, dict[str, Tensor]]:
    """Per environment, a seeded permutation: the first ``int(n * fraction)`` are ``out``, the rest
    ``in``."""
    splits = {}
    for name, env in dataset.envs.items():
        perm = torch.from_numpy(rng("holdout", trial_seed, name).permutation(len(env)))
        n_out = int(len(env) * fraction)
        splits[name] = {"in": perm[n_out:].sort().values, "out": perm[:n_out].sort().values}
    return splits


def unlabeled_splits(
    splits: dict[str, dict[str, Tensor]],
    test_envs: tuple[str, ...],
    trial_seed: int,
    fraction: float,
) -> dict[str, Tensor]:
    """Unsupervised domain adaptation: per test environment, ``int(n_in * fraction)`` examples of
    its ``in`` split, drawn by a seeded permutation, moved out of ``splits`` (so never evaluated)
    and returned as the unlabeled training data.

    As DomainBed's train.py (``uda_holdout_fraction``): the unlabeled part comes from the ``in``
    split, after the ``out`` holdout, so the oracle's ``out`` split is the same as in DG runs.
    """
    unlabeled = {}
    for name in test_envs if fraction > 0 else ():
        idx = splits[name]["in"]
        perm = torch.from_numpy(rng("unlabeled", trial_seed, name).permutation(len(idx)))
        n_unlabeled = int(len(idx) * fraction)
        if n_unlabeled == 0:
            raise UserError(
                f"uda fraction {fraction} of test environment {name}'s {len(idx)} examples is no "
                "unlabeled example; raise --uda-fraction"
            )
        perm = perm.to(idx.device)
        unlabeled[name] = idx[perm[:n_unlabeled]].sort().values
        splits[name]["in"] = idx[perm[n_unlabeled:]].sort().values
    return unlabeled


class UnlabeledStream:
    """The unlabeled inputs of step ``t``: one minibatch per test environment (DomainBed: as many
    as a labeled minibatch), from streams keyed apart from the labeled ones."""

    def __init__(
        self, envs: dict[str, EnvData], idx: dict[str, Tensor], batch_size: int, trial_seed: int
    ) -> None:
        self.envs, self.idx = envs, idx
        self.samplers = {
            name: MinibatchSampler(len(i), batch_size, trial_seed, name, stream="unlabeled")
            for name, i in idx.items()
        }

    @classmethod
    def for_run(
        cls,
        envs: dict[str, EnvData],
        splits: dict[str, dict[str, Tensor]],
        spec: "RunSpec",
        batch: int,
    ) -> "UnlabeledStream":
        """The stream of a RunSpec; its unlabeled part is taken out of ``splits`` (see
        ``unlabeled_splits``)."""
        idx = unlabeled_splits(splits, spec.test_envs, spec.trial_seed, spec.uda_fraction)
        return cls(envs, idx, batch, spec.trial_seed)

    @property
    def kwargs(self) -> dict[str, int]:
        """Extra Algorithm arguments: none in DG, so plugins with their own __init__ still work."""
        return {"num_unlabeled_envs": len(self.idx)} if self.idx else {}

    def update_args(self, step: int) -> list[list[Tensor]]:
        """``update``'s arguments after the minibatches: none in DG (``update(minibatches)``)."""
        batches = self.batches(step)
        return [] if batches is None else [batches]

    def batches(self, step: int) -> list[Tensor] | None:
        """None in a DG run (no unlabeled data), so ``update`` sees exactly what it saw before."""
        if not self.idx:
            return None
        out = []
        for name, sampler in self.samplers.items():
            pick = sampler.indices(step)
            idx = self.idx[name] if pick is None else self.idx[name][pick.to(self.idx[name].device)]
            out.append(self.envs[name].batch(idx)[0])  # DomainBed: test envs are never augmented
        return out


class MinibatchSampler:
    """Indices for step ``t``: positions [t*b, (t+1)*b) of a stream of per-epoch permutations.

    Each epoch's permutation is drawn from the stream (trial_seed, env, epoch), so the
    batch at any step is a pure function of (trial_seed, env, step): resuming reproduces it.
    ``batch_size == 0`` means the whole split every step.
    """

    def __init__(
        self, n: int, batch_size: int, trial_seed: int, env: str, stream: str = "minibatch"
    ) -> None:
        self.n, self.batch_size, self.key = n, batch_size, (stream, trial_seed, env)
        self._cache: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        """Epoch ``epoch``'s order of the split's positions (the last three are kept)."""
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=torch_generator(*self.key, epoch))
        return self._cache[epoch]

    def spans(self, step: int) -> list[tuple[int, int, int]]:
        """``(epoch, offset, count)`` pieces of step ``step``'s batch in the epoch permutations:
        one, or more where the batch runs past an epoch's end."""
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        out = []
        while start < stop:
            epoch, offset = divmod(start, self.n)
            take = min(stop - start, self.n - offset)
            out.append((epoch, offset, take))
            start += take
        return out

    def indices(self, step: int) -> Tensor | None:
        if self.batch_size == 0:
            return None
        parts = [self.permutation(e)[o : o + take] for e, o, take in self.spans(step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
