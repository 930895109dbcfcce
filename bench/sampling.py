"""Which examples a run sees: the seeded in/out holdout and the minibatch stream.

Both are pure functions of (trial_seed, environment[, step]), so every algorithm in a
trial sees the same data and a resumed run redraws exactly what it would have drawn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.datasets import MultiEnvDataset
from bench.seeding import rng, torch_generator


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


class MinibatchSampler:
    """Indices for step ``t``: positions [t*b, (t+1)*b) of a stream of per-epoch permutations.

    Each epoch's permutation is drawn from the stream (trial_seed, env, epoch), so the
    batch at any step is a pure function of (trial_seed, env, step): resuming reproduces it.
    ``batch_size == 0`` means the whole split every step.
    """

    def __init__(self, n: int, batch_size: int, trial_seed: int, env: str) -> None:
        self.n, self.batch_size, self.key = n, batch_size, ("minibatch", trial_seed, env)
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=torch_generator(*self.key, epoch))
        return self._cache[epoch]

    def indices(self, step: int) -> Tensor | None:
        if self.batch_size == 0:
            return None
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        parts = []
        while start < stop:
            epoch, offset = divmod(start, self.n)
            take = min(stop - start, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + take])
            start += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)
