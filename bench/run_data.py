"""What the runner hands an algorithm before its first step (``Algorithm.prepare_run``).

A stage that runs before training (a transfer recipe's pretraining, a probe fitted in closed
form) needs the run's data. The runner has built it already and passes it in, so no
algorithm loads data, recomputes splits or imports the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from bench.datasets.base import EnvData, MultiEnvDataset

if TYPE_CHECKING:  # annotations only: bench.spec resolves specs against the algorithm registry
    from bench.spec import RunSpec


@dataclass(frozen=True)
class RunData:
    """One run's data as the runner built it, plus where stages shared by runs are cached."""

    spec: RunSpec
    dataset: MultiEnvDataset  # as built (on the CPU); a transfer task builds its source from it
    splits: dict[str, dict[str, Tensor]]  # environment -> {"in", "out"} row indices (CPU)
    train_envs: list[str]
    cache_dir: Path  # the output directory: a stage's result is shared by every run there
    device: torch.device

    def train_rows(self, env: str) -> EnvData:
        """The rows of ``env`` the run trains on (its ``in`` split), in the same storage class."""
        data, idx = self.dataset.envs[env], self.splits[env]["in"]
        return type(data)(data.x[idx], data.y[idx], data.augment)
