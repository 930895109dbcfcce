"""Batched accuracy of every environment split under ``torch.inference_mode``."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from bench.algorithms.base import Algorithm, predictions
from bench.datasets.base import EnvData


def accuracy(algorithm: Algorithm, env: EnvData, idx: Tensor, batch_size: int) -> dict[str, Any]:
    """``{"acc": fraction correct, "n": examples}``; acc is None for an empty split."""
    n = len(idx)
    if n == 0:
        return {"acc": None, "n": 0}
    correct = 0
    for start in range(0, n, batch_size):
        x, y = env.batch(idx[start : start + batch_size])
        correct += int((predictions(algorithm.predict(x)) == y).sum())
    return {"acc": correct / n, "n": n}


def evaluate(
    algorithm: Algorithm,
    envs: Mapping[str, EnvData],
    splits: Mapping[str, Mapping[str, Tensor]],
    batch_size: int = 2048,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {"in": {...}, "out": {...}}}`` with the model in eval mode, restored afterwards."""
    was_training = algorithm.training
    algorithm.eval()
    try:
        with torch.inference_mode():
            return {
                name: {part: accuracy(algorithm, envs[name], idx, batch_size) for part, idx in parts.items()}
                for name, parts in splits.items()
            }
    finally:
        algorithm.train(was_training)
