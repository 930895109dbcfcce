"""The Algorithm contract every method implements (see DESIGN.md, "Algorithm contract")."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import networks
from bench.hparams import Fixed, IntLogUniform, LogUniform, Param
from bench.registry import Registry

ALGORITHMS: Registry["Algorithm"] = Registry("algorithm", "bench.algorithms")
register_algorithm = ALGORITHMS.register

Minibatches = list[tuple[Tensor, Tensor]]


def classification_loss(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy; a single logit column means binary labels {0, 1} with BCE (the IRM paper's head)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def predictions(logits: Tensor) -> Tensor:
    """Predicted labels for either head shape."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


class Algorithm(nn.Module):
    """Base class: trains on one minibatch per training environment per ``update``.

    Subclasses build their networks and optimisers in ``__init__`` and keep any
    state that must survive a resume in parameters, buffers or optimisers: every
    ``torch.optim.Optimizer`` attribute is saved through ``get_extra_state``.
    ``self.step`` counts updates and is checkpointed; schedules key on it.
    """

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    HPARAMS: ClassVar[dict[str, Param]] = {
        "lr": LogUniform(1e-3, "Adam learning rate", low=10**-4.5, high=10**-2.5),
        "weight_decay": LogUniform(0.0, "Adam weight decay", low=1e-6, high=1e-2, allow_zero=True),
        "batch_size": IntLogUniform(64, "examples per training environment per step (0 = whole environment)", low=8, high=512, minimum=0),
        "l2": Fixed(0.0, "explicit L2 penalty sum(||w||^2) added to the loss (the IRM paper's regulariser)"),
        **networks.SHARED_HEAD_SPACE,
    }
    DATASET_HPARAMS: ClassVar[dict[str, dict[str, Param]]] = {}

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, num_train_envs: int, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.num_train_envs = num_train_envs
        self.hparams = dict(hparams)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def update(self, minibatches: Minibatches, unlabeled: list[Tensor] | None = None) -> dict[str, float]:
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # -- helpers shared by most methods -------------------------------------------------
    def build_network(self) -> None:
        """``self.featurizer``, ``self.classifier`` and ``self.network`` from the hparams."""
        self.featurizer = networks.build_featurizer(self.input_shape, self.hparams)
        self.classifier = networks.build_classifier(self.featurizer.n_outputs, self.num_classes, self.hparams)
        self.network = nn.Sequential(self.featurizer, self.classifier)

    def make_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.hparams["lr"] if lr is None else lr, weight_decay=self.hparams["weight_decay"])

    def l2_penalty(self) -> Tensor:
        """``l2 * sum ||w||^2`` over all parameters (zero when ``l2 == 0``)."""
        if self.hparams["l2"] == 0:
            return torch.zeros((), device=self.step.device)
        return self.hparams["l2"] * sum(p.pow(2).sum() for p in self.parameters())

    def get_extra_state(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in vars(self).items() if isinstance(opt, torch.optim.Optimizer)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name, opt_state in state.items():
            getattr(self, name).load_state_dict(opt_state)
