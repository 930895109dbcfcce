"""Batched accuracy of environment splits under ``torch.inference_mode``.

By default (``eval_splits="needed"``) a training environment's ``in`` split is not
evaluated when that environment has an ``out`` split: no selection rule reads it
(train_val reads training envs' ``out``; oracle the test env's ``out``; loo, last and
the reported metric the test envs' ``in``), and on cmnist it is 40% of the images.
Such a split is recorded as ``{"acc": None, "n": n, "skipped": True}`` so every record
keeps the shape ``{env: {"in": ..., "out": ...}}``. ``eval_splits="all"`` evaluates all.

Each evaluated split also records its confusion counts (``[[true, predicted, count], ...]``,
non-zero cells only), so any metric can be recomputed from the records, and Matthews'
correlation (``mcc``), the primary metric of the GUE tasks.
"""

from __future__ import annotations

import warnings
from typing import Any, Collection, Mapping

import torch
from torch import Tensor

from bench.algorithms.base import Algorithm, predictions
from bench.datasets.base import EnvData

EVAL_SPLITS = ("needed", "all")


def skipped_splits(
    splits: Mapping[str, Mapping[str, Tensor]], test_envs: Collection[str], mode: str = "needed"
) -> set[tuple[str, str]]:
    """(env, part) pairs that ``mode`` leaves unevaluated: training envs' ``in`` when they have an
    ``out``."""
    if mode not in EVAL_SPLITS:
        raise ValueError(f"eval_splits must be one of {EVAL_SPLITS}, got {mode!r}")
    if mode == "all":
        return set()
    return {
        (name, "in")
        for name, parts in splits.items()
        if name not in test_envs and len(parts.get("out", ())) > 0
    }


def accuracy(algorithm: Algorithm, env: EnvData, idx: Tensor, batch_size: int) -> dict[str, Any]:
    """``{"acc", "mcc", "n", "confusion"}`` of one split; the metrics are None for an empty
    split."""
    n = len(idx)
    if n == 0:
        return {"acc": None, "mcc": None, "n": 0, "confusion": []}
    pairs = []
    for start in range(0, n, batch_size):
        x, y = env.batch(idx[start : start + batch_size])
        pairs.append(torch.stack([y, predictions(algorithm.predict(x))], dim=1))
    cells, counts = torch.cat(pairs).unique(dim=0, return_counts=True)
    confusion = [[int(t), int(p), int(c)] for (t, p), c in zip(cells.tolist(), counts.tolist())]
    return {
        "acc": sum(c for t, p, c in confusion if t == p) / n,
        "mcc": mcc(confusion),
        "n": n,
        "confusion": confusion,
    }


def mcc(confusion: list[list[int]]) -> float:
    """Matthews correlation (multi-class form) from sparse confusion counts
    ``[true, predicted, count]``."""
    from sklearn.metrics import matthews_corrcoef

    true, pred, count = zip(*confusion)
    with warnings.catch_warnings():  # one class present: MCC is 0 by definition, no warning needed
        warnings.simplefilter("ignore", UserWarning)
        return float(matthews_corrcoef(true, pred, sample_weight=count))


def evaluate(
    algorithm: Algorithm,
    envs: Mapping[str, EnvData],
    splits: Mapping[str, Mapping[str, Tensor]],
    batch_size: int = 128,
    skip: Collection[tuple[str, str]] = (),
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {"in": {...}, "out": {...}}}`` with the model in eval mode, restored afterwards.

    Small batches are faster on CPU for conv nets (activations stay in cache): on the
    MNIST CNN batch 128 beat 1024-2048 by 20-30% (benchmarks/README.md).
    """
    was_training = algorithm.training
    algorithm.eval()
    try:
        with torch.inference_mode():
            return {
                name: {
                    part: {"acc": None, "n": len(idx), "skipped": True}
                    if (name, part) in skip
                    else accuracy(algorithm, envs[name], idx, batch_size)
                    for part, idx in parts.items()
                }
                for name, parts in splits.items()
            }
    finally:
        algorithm.train(was_training)
