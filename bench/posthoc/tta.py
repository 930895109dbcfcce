"""Test-time adaptation of a trained model, online over each evaluated split's stream.

- T3A (Iwasawa & Matsuo, NeurIPS 2021): the linear head is replaced by class prototypes,
  each the normalised sum of supports; supports start as the head's weight rows and grow
  with every test example, pseudo-labelled by the head; per class only the ``filter_k``
  lowest-entropy supports are kept. Scores: features @ normalised prototypes (no bias).
  Defaults and grid from the authors' DomainBed fork (``unsupervised_adaptation.py``:
  filter_K in 1, 5, 20, 50, 100, -1; test batch 32). Deviation: ``-1`` keeps every support
  (the fork's ``[:-1]`` drops each class's last one).
- TENT (Wang et al., ICLR 2021): entropy minimisation of the normalisation layers' affine
  parameters, ``steps`` Adam updates per test batch (lr = ``alpha`` x the run's lr, the run's
  weight decay, as the T3A fork's TentNorm; alpha in 0.1, 1, 10, steps in 1, 3); BatchNorm
  normalises with the test batch's statistics. Supported featurizers: those with
  normalisation layers, i.e. ``resnet18``/``resnet50`` (BatchNorm, as the paper) and
  ``mnist_cnn``/``small_cnn`` (GroupNorm: per-example statistics already, so only the affine
  parameters adapt). ``mlp``, ``cdsprites_cnn`` and ``seq_cnn`` have none and are refused.
  ``steps = 0`` is the unadapted model.

Every split (environment x in/out) is adapted from the trained weights afresh, as in the
T3A fork, so the record has the shape of a run's and every selection rule applies; its
stream is the split in a seeded order (trial, environment, split), in batches of
``batch_size``; predictions for a batch are made before that batch's update (TENT) or
with it among the supports (T3A), as in the references.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.algorithms.base import Algorithm
from bench.errors import UserError
from bench.evaluation import confusion_counts, split_scores
from bench.hparams import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Domain, Fixed, Param
from bench.hparams import apply_overrides as _apply
from bench.posthoc import results
from bench.posthoc.trained import TrainedRun, load_trained
from bench.seeding import rng

BATCH = Fixed(32, "test examples per adaptation batch (the T3A fork's default)", AT_LEAST_ONE)
SPACES: dict[str, dict[str, Param]] = {  # the docs give the T3A fork's search grids
    "t3a": {
        "filter_k": Fixed(
            100,
            "supports kept per class, lowest entropy first; -1: all (1, 5, 20, 50, 100, -1)",
            Domain(-1),
        ),
        "batch_size": BATCH,
    },
    "tent": {
        "alpha": Fixed(1.0, "Adam lr = alpha x the run's lr (0.1, 1, 10)", POSITIVE),
        "steps": Fixed(1, "entropy-minimisation steps per test batch (1, 3)", NON_NEGATIVE),
        "batch_size": BATCH,
    },
}
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def resolve(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's full configuration (defaults, then validated overrides); part of the row's
    identity."""
    if method not in SPACES:
        raise UserError(f"unknown test-time adaptation {method!r}; known: {', '.join(SPACES)}")
    space = SPACES[method]
    config = _apply(space, {k: p.default for k, p in space.items()}, dict(overrides or {}))
    if config.get("filter_k") == 0:
        raise UserError("filter_k must be -1 (every support) or at least 1, got 0")
    return {"method": method, **config}


def class_logits(logits: Tensor) -> Tensor:
    """One logit per class; a single binary logit l becomes the equivalent (-l/2, l/2)."""
    return torch.cat([-logits / 2, logits / 2], dim=1) if logits.shape[1] == 1 else logits


def entropy(logits: Tensor) -> Tensor:
    """Softmax entropy per row."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


class T3A:
    """Prototype classifier on the frozen featurizer, updated by each test batch."""

    def __init__(self, algorithm: Algorithm, filter_k: int) -> None:
        head = algorithm.classifier
        if not isinstance(head, nn.Linear):
            raise UserError("t3a needs a linear classifier head; this run has nonlinear_classifier")
        self.featurizer, self.head, self.filter_k = algorithm.featurizer, head, filter_k
        rows = head.weight.detach()
        self.supports = torch.cat([-rows / 2, rows / 2]) if len(rows) == 1 else rows.clone()
        warmup = class_logits(head(self.supports))
        self.n_classes = warmup.shape[1]
        self.labels, self.ent = warmup.argmax(1), entropy(warmup)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        z = self.featurizer(x)
        logits = class_logits(self.head(z))
        self.supports = torch.cat([self.supports, z])
        self.labels = torch.cat([self.labels, logits.argmax(1)])
        self.ent = torch.cat([self.ent, entropy(logits)])
        self._filter()
        onehot = F.one_hot(self.labels, self.n_classes).float()
        prototypes = F.normalize(F.normalize(self.supports, dim=1).T @ onehot, dim=0)
        return (z @ prototypes).argmax(1)

    def _filter(self) -> None:
        if self.filter_k == -1:
            return
        keep = []
        for c in range(self.n_classes):
            members = (self.labels == c).nonzero().flatten()
            keep.append(members[self.ent[members].argsort()[: self.filter_k]])
        keep = torch.cat(keep)
        self.supports, self.labels, self.ent = (
            self.supports[keep],
            self.labels[keep],
            self.ent[keep],
        )


class Tent:
    """A copy of the model whose normalisation layers' affine parameters follow the test stream."""

    def __init__(self, algorithm: Algorithm, steps: int, alpha: float) -> None:
        self.model, self.steps = copy.deepcopy(algorithm).eval(), steps
        norms = [m for m in self.model.featurizer.modules() if isinstance(m, NORMS)]
        if not norms:
            raise UserError(
                f"tent adapts normalisation layers; featurizer {algorithm.hparams['featurizer']!r} "
                "has none (supported: resnet18, resnet50, mnist_cnn, small_cnn)"
            )
        if steps == 0:
            return
        self.model.requires_grad_(False)
        for m in norms:
            m.requires_grad_(True)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # normalise with the test batch
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
        params = [p for m in norms for p in m.parameters()]
        hp = algorithm.hparams
        self.optimizer = torch.optim.Adam(
            params, lr=alpha * hp["lr"], weight_decay=hp["weight_decay"]
        )

    def __call__(self, x: Tensor) -> Tensor:
        if self.steps == 0:
            with torch.no_grad():
                return class_logits(self.model.predict(x)).argmax(1)
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = class_logits(self.model.predict(x))
                self.optimizer.zero_grad(set_to_none=True)
                entropy(logits).mean().backward()
                self.optimizer.step()
        return logits.detach().argmax(1)


def adapter(algorithm: Algorithm, config: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
    """A fresh adapter: a callable from a test batch to predicted labels, updated as it goes."""
    if config["method"] == "t3a":
        return T3A(algorithm, config["filter_k"])
    return Tent(algorithm, config["steps"], config["alpha"])


def scores(true: Tensor, pred: Tensor) -> dict[str, Any]:
    """``{"acc", "mcc", "n", "confusion"}`` from labels and predictions, as ``evaluate`` records."""
    if len(true) == 0:
        return {"acc": None, "mcc": None, "n": 0, "confusion": []}
    return split_scores(confusion_counts(true, pred), len(true))


def stream(
    predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int
) -> dict[str, Any]:
    """Scores of ``predict`` run online over (x, y) in order, ``batch_size`` at a time."""
    preds = [predict(x[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    return scores(y, torch.cat(preds) if preds else y[:0])


def adapted_eval(trained: TrainedRun, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's evaluation (same splits and skips) with every split adapted afresh."""
    out: dict[str, dict[str, Any]] = {}
    for name, parts in trained.splits.items():
        out[name] = {}
        for part, idx in parts.items():
            if (name, part) in trained.skip:
                out[name][part] = {"acc": None, "n": len(idx), "skipped": True}
                continue
            order = idx[
                torch.from_numpy(
                    rng("tta", trained.spec.trial_seed, name, part).permutation(len(idx))
                )
            ]
            x, y = trained.envs[name].batch(order)
            out[name][part] = stream(adapter(trained.algorithm, config), x, y, config["batch_size"])
    return out


def adapt_run(
    directory: str | Path,
    method: str,
    overrides: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    command: str = "",
) -> Path:
    """Adapt a finished run at test time and store the result beside it; returns its file."""
    config = resolve(method, overrides)
    trained = load_trained(directory, data_dir)
    record = {**trained.last, "eval": adapted_eval(trained, config), "posthoc": config}
    result = results.make_result(
        "tta",
        config,
        results.label(trained.spec.algorithm, method, config, resolve(method)),
        [(trained.run_id, trained.last["step"])],
        trained.info["spec"],
        [record],
        command,
        {
            **results.base_seeds({trained.run_id: trained.info["spec"]}),
            "stream": "order of each split: seeding.rng('tta', trial_seed, env, split)",
        },
    )
    return results.write_result(Path(directory) / results.POSTHOC, result)
