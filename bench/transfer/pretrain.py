"""Pretraining as a cached, content-addressed stage.

A pretrained featurizer is identified by the hash of its ``PretrainSpec`` (objective,
data, featurizer, steps, optimiser, seed) and stored once under
``<output>/pretrained/<pretrain_id>/`` (spec.json, featurizer.pt, done); every
adaptation run that needs it loads it from there and records the id in its spec.json.

Objectives: ``supervised`` (cross-entropy with a linear head on the labels) and
``masked``: hide a random ``mask_ratio`` of the input positions and predict them from
the featurizer's output through a linear decoder; masked-token cross-entropy for DNA
(``sequence``: one-hot channels x positions), masked/denoising squared error for
images and vectors. The stage runs in a forked RNG, so a cache hit and a cache miss
leave the adaptation run's random state identical.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import records
from bench.datasets.base import EnvData
from bench.networks import build_featurizer
from bench.seeding import canonical_json, stable_hash, torch_generator

VERSION = 1
OBJECTIVES = ("supervised", "masked")
MODALITIES = ("image", "sequence", "vector")
WEIGHTS = "featurizer.pt"

# Loads the pretraining examples on a cache miss: (examples, number of classes).
DataLoader = Callable[[], tuple[EnvData, int]]


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that changes the pretrained weights; its hash is the cache key."""

    objective: str
    data: Mapping[
        str, Any
    ]  # which examples, e.g. {"dataset": "mnist_ab", "part": "source", "data_seed": 0, ...}
    featurizer: Mapping[str, Any]  # featurizer name and its hyperparameters
    modality: str
    steps: int
    lr: float
    batch_size: int
    mask_ratio: float
    seed: int
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"], d["featurizer"] = dict(self.data), dict(self.featurizer)
        return d

    @property
    def pretrain_id(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]


def pretrained_dir(output_dir: str | Path, pretrain_id: str) -> Path:
    return Path(output_dir) / "pretrained" / pretrain_id


def ensure_pretrained(
    spec: PretrainSpec,
    output_dir: str | Path,
    input_shape: tuple[int, ...],
    load_data: DataLoader,
    device: torch.device,
) -> dict[str, Tensor]:
    """The featurizer state dict of ``spec``: from the cache, or trained once and stored.

    Concurrent workers needing the same checkpoint wait on a blocking file lock while
    one of them trains it.
    """
    directory = pretrained_dir(output_dir, spec.pretrain_id)
    if not (directory / records.DONE).exists():
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if not (directory / records.DONE).exists():
                    _train_and_store(spec, directory, input_shape, load_data, device)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return torch.load(directory / WEIGHTS, map_location=device, weights_only=True)


def _objective_head(
    spec: PretrainSpec, n_features: int, input_shape: tuple[int, ...], n_classes: int
) -> nn.Module:
    if spec.objective == "supervised":
        return nn.Linear(n_features, n_classes)
    return nn.Linear(n_features, math.prod(input_shape))


def _mask(x: Tensor, spec: PretrainSpec, gen: torch.Generator) -> Tensor:
    """Boolean mask over positions, shared by the channels of images and one-hot sequences."""
    shape = (len(x), *x.shape[1:]) if spec.modality == "vector" else (len(x), 1, *x.shape[2:])
    return (torch.rand(shape, generator=gen) < spec.mask_ratio).to(x.device)


def pretrain_loss(
    spec: PretrainSpec,
    featurizer: nn.Module,
    head: nn.Module,
    x: Tensor,
    y: Tensor,
    gen: torch.Generator,
) -> Tensor:
    """The objective's loss on one batch."""
    if spec.objective == "supervised":
        return F.cross_entropy(head(featurizer(x)), y)
    mask = _mask(x, spec, gen)
    out = head(featurizer(x * ~mask)).view_as(x)
    if spec.modality == "sequence":  # masked-token prediction over the one-hot channel axis
        hidden = mask[:, 0] & (x.sum(1) > 0)  # masked positions that hold a real base (not N)
        token_loss = F.cross_entropy(out, x.argmax(1), reduction="none")
        return (token_loss * hidden).sum() / hidden.sum().clamp_min(1)
    mask = mask.expand_as(x)
    return ((out - x).pow(2) * mask).sum() / mask.sum().clamp_min(1)


def _train_and_store(
    spec: PretrainSpec,
    directory: Path,
    input_shape: tuple[int, ...],
    load_data: DataLoader,
    device: torch.device,
) -> None:
    if spec.objective not in OBJECTIVES or spec.modality not in MODALITIES:
        raise ValueError(
            f"pretraining objective {spec.objective!r} / modality {spec.modality!r} unknown"
        )
    data, n_classes = load_data()
    data = data.to(device)
    t0 = time.perf_counter()
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_hash("pretrain", spec.pretrain_id))
        featurizer = build_featurizer(input_shape, spec.featurizer).to(device)
        head = _objective_head(spec, featurizer.n_outputs, input_shape, n_classes).to(device)
        optimizer = torch.optim.Adam([*featurizer.parameters(), *head.parameters()], lr=spec.lr)
        gen = torch_generator("pretrain-batches", spec.pretrain_id)
        for _ in range(spec.steps):
            x, y = data.batch(
                torch.randint(len(data), (min(spec.batch_size, len(data)),), generator=gen).to(
                    device
                )
            )
            loss = pretrain_loss(spec, featurizer, head, x, y, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
    wall = time.perf_counter() - t0
    tail = losses[-max(1, len(losses) // 10) :]
    status = "ok" if all(math.isfinite(v) for v in tail) else "diverged"
    records.write_torch(directory / WEIGHTS, featurizer.state_dict())
    summary = {
        "pretrain_id": spec.pretrain_id,
        "spec": spec.to_dict(),
        "n_examples": len(data),
        "final_loss": sum(tail) / len(tail),
        "meta": records.provenance(str(device)),
    }
    records.write_json(directory / records.SPEC, summary)
    records.write_json(
        directory / records.DONE, {"status": status, "step": len(losses), "wall_s": wall}
    )
