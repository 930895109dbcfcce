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

import math
from collections import Counter
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
        return empty_record()
    true, pred = [], []
    for start in range(0, n, batch_size):
        x, y = env.batch(idx[start : start + batch_size])
        true.append(y)
        pred.append(predictions(algorithm.predict(x)))
    return split_scores(confusion_counts(torch.cat(true), torch.cat(pred)), n)


def confusion_counts(true: Tensor, pred: Tensor) -> list[list[int]]:
    """The non-zero ``[true, predicted, count]`` cells, in (true, predicted) order, of
    non-empty label and prediction vectors: one ``bincount`` (``unique(dim=0)`` compares rows
    one by one: 0.4 ms of a 1,600-example split)."""
    classes = int(torch.maximum(true.max(), pred.max())) + 1
    counts = torch.bincount(true * classes + pred, minlength=classes * classes).tolist()
    return [[k // classes, k % classes, c] for k, c in enumerate(counts) if c]


def split_scores(confusion: list[list[int]], n: int) -> dict[str, Any]:
    """A split's record from its confusion counts (``[true, predicted, count]``, non-zero cells
    in (true, predicted) order) over ``n > 0`` examples."""
    return {
        "acc": sum(c for t, p, c in confusion if t == p) / n,
        "mcc": mcc(confusion),
        "n": n,
        "confusion": confusion,
    }


def skipped_record(n: int) -> dict[str, Any]:
    """The record of a split left unevaluated (``skipped_splits``)."""
    return {"acc": None, "n": n, "skipped": True}


def empty_record() -> dict[str, Any]:
    return {"acc": None, "mcc": None, "n": 0, "confusion": []}


def mcc(confusion: list[list[int]]) -> float:
    """Matthews correlation (multi-class form) from sparse confusion counts
    ``[true, predicted, count]``.

    sklearn's ``matthews_corrcoef`` formula, computed on the counts: sklearn's input checks
    cost ~2.5 ms a split, 14% of a tiny run's wall time (benchmarks/tiny_run_mcc.py). For
    splits under 94 million examples every sum is an exact integer (below 2**53 in float64,
    where sklearn computes them), and the last three operations are the same IEEE ones, so
    the value is sklearn's to the bit (tests/test_report_units.py).
    """
    n = sum(count for _, _, count in confusion)
    correct = sum(count for t, p, count in confusion if t == p)
    true_sums: Counter[int] = Counter()
    pred_sums: Counter[int] = Counter()
    for t, p, count in confusion:
        true_sums[t] += count
        pred_sums[p] += count
    cov_ytyp = correct * n - sum(true_sums[k] * pred_sums[k] for k in true_sums)
    cov_ypyp = n * n - sum(v * v for v in pred_sums.values())
    cov_ytyt = n * n - sum(v * v for v in true_sums.values())
    product = float(cov_ypyp) * float(cov_ytyt)
    if product == 0:  # one class predicted or present: 0 by definition
        return 0.0
    return float(cov_ytyp) / math.sqrt(product)


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
                    part: skipped_record(len(idx))
                    if (name, part) in skip
                    else accuracy(algorithm, envs[name], idx, batch_size)
                    for part, idx in parts.items()
                }
                for name, parts in splits.items()
            }
    finally:
        algorithm.train(was_training)
