"""Many mean negative log-likelihoods at once, each rounded as one ``F.nll_loss`` call rounds it.

On CPU, ``nll_loss``'s mean adds its rows' losses in float32 through a cascade of 8 partial
sums (ATen's ``nll_loss_out_frame``): row b goes into level 0, and after it each level j whose
bits ``b & (15 << 4j)`` are all zero is added into level j + 1 and cleared; the result is
``0 + level 0 + ... + level 7``, divided by the row count. So at every level the incoming
values form chunks: the first alone, then runs of 16. ``mean_nll`` replays that order with
NumPy's sequential float32 ``add.accumulate`` for all members at once, where the unbatched
way is one call (and its Python) per member and environment. The engine uses it only after
probing that it equals the kernel (``BatchedERM._group_way``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

LEVELS = 8
RUN = 16  # values per chunk: 1 << nll_loss's level_power (4 below 2**32 rows)


def _sequential(x: np.ndarray) -> np.ndarray:
    """[M]: each row of ``x`` [M, K] added left to right in float32 (0 where K = 0)."""
    if x.shape[1] == 0:
        return np.zeros(len(x), dtype=x.dtype)
    return np.add.accumulate(x, axis=1)[:, -1]


def cascade_sum(values: np.ndarray) -> np.ndarray:
    """[M]: each row of ``values`` [M, K] (K >= 1) summed in ``nll_loss``'s order."""
    levels, x = [], values
    for _ in range(LEVELS - 1):
        if x.shape[1] == 1:
            break
        runs = (x.shape[1] - 1) // RUN
        levels.append(_sequential(x[:, 1 + RUN * runs :]))  # not yet carried up: stays here
        carried = x[:, 1 : 1 + RUN * runs].reshape(len(x), runs, RUN)
        x = np.concatenate([x[:, :1], np.add.accumulate(carried, axis=2)[:, :, -1]], axis=1)
    # the first value of every level was carried to the top at row 0
    top = x[:, 0] if x.shape[1] == 1 else _sequential(x)
    total = np.zeros(len(x), dtype=x.dtype)
    for level in levels:  # levels above these hold 0 until the top
        total = total + level
    return total + top


def mean_nll(log_probs: Tensor, labels: Tensor) -> Tensor:
    """[M]: ``F.nll_loss(log_probs[i], labels[i])`` for every i; log_probs [M, R, C] float32
    on CPU, labels [M, R]."""
    picked = log_probs.gather(2, labels.unsqueeze(2)).squeeze(2)
    losses = (0.0 - picked).numpy()  # the kernel's 0 - log p
    rows = np.float32(losses.shape[1])
    return torch.from_numpy(cascade_sum(np.ascontiguousarray(losses)) / rows)
