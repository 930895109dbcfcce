"""The fine-tuning baselines of Chen et al. (ICLR 2019, "A Closer Look at Few-shot
Classification"): pretrain on the meta-train classes with ordinary cross-entropy, then
learn a new head on each support set.

``baseline`` uses a linear head; ``baseline_pp`` (Baseline++) a cosine-similarity head,
``scale * cos(z, w_k)``, in pretraining and adaptation (scale 2 for up to 200 classes, as the
authors' code). Adaptation follows the paper: a fresh head trained by SGD (lr 0.01, momentum
0.9, weight decay 1e-3) for 100 epochs over the support set in minibatches of 4, on frozen
features (``adapt: probe``, the paper's) or with the featurizer fine-tuned too (``full``,
much slower on CPU). Pretraining uses Adam 1e-3 as the paper.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.hparams import AT_LEAST_ONE, POSITIVE, Fixed, IntLogUniform, Setting
from bench.meta.base import Draw, MetaMethod, register_method, train_on_support


class CosineHead(nn.Module):
    """``scale * cos(z, w_k)`` for every class k (Baseline++'s classifier)."""

    def __init__(self, n_features: int, n_classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, n_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.scale = scale

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T


@register_method("baseline")
class Baseline(MetaMethod):
    REFERENCE = "Chen et al. 2019, A Closer Look at Few-shot Classification (ICLR), Baseline"
    COSINE: ClassVar[bool] = False
    HPARAMS = {
        "batch_size": IntLogUniform(
            32, "pretraining minibatch of meta-train examples", low=16, high=128
        ),
        "adapt": Setting("probe", "adapt the head only, or everything", options=("probe", "full")),
        "adapt_lr": Fixed(0.01, "SGD step size on the support set", domain=POSITIVE),
        "adapt_epochs": Fixed(100, "passes over the support set", domain=AT_LEAST_ONE),
        "adapt_batch": Fixed(4, "support minibatch size", domain=AT_LEAST_ONE),
    }

    def __init__(
        self, input_shape: tuple[int, ...], way: int, n_classes: int, hparams: Mapping[str, Any]
    ) -> None:
        super().__init__(input_shape, way, n_classes, hparams)
        self.head = self.new_head(n_classes)
        self.make_optimizer()

    def new_head(self, n_classes: int) -> nn.Module:
        n = self.featurizer.n_outputs
        if self.COSINE:
            return CosineHead(n, n_classes, scale=2.0 if n_classes <= 200 else 10.0)
        return nn.Linear(n, n_classes)

    def meta_update(self, draw: Draw) -> dict[str, float]:
        x, y = draw.batch(self.hparams["batch_size"])
        loss = F.cross_entropy(self.head(self.featurizer(x)), y)
        self.optimise(loss)
        return {"loss": loss.item()}

    def adapt_predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        way = int(support_y.max()) + 1
        head = self.new_head(way)
        full = self.hparams["adapt"] == "full"
        featurizer = copy.deepcopy(self.featurizer) if full else self.featurizer
        params = list(head.parameters()) + (list(featurizer.parameters()) if full else [])
        optimizer = torch.optim.SGD(
            params, lr=self.hparams["adapt_lr"], momentum=0.9, dampening=0.9, weight_decay=1e-3
        )
        with torch.enable_grad():
            if full:
                model = nn.Sequential(featurizer, head)
                inputs = support_x
            else:
                with torch.no_grad():
                    inputs = featurizer(support_x)
                model = head
            train_on_support(
                model,
                inputs,
                support_y,
                lambda x, y: F.cross_entropy(model(x), y),
                optimizer,
                self.hparams["adapt_epochs"],
                self.hparams["adapt_batch"],
            )
        featurizer.eval()
        with torch.no_grad():
            return head(featurizer(query_x))


@register_method("baseline_pp")
class BaselinePlusPlus(Baseline):
    REFERENCE = "Chen et al. 2019, A Closer Look at Few-shot Classification (ICLR), Baseline++"
    COSINE = True
