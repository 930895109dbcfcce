"""Training from scratch on the support set: the floor every few-shot method must beat.

No meta-training: each episode gets a freshly initialised featurizer + linear head (from
torch's RNG, which the runner seeds per episode) trained with full-batch Adam on the
support set alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.hparams import AT_LEAST_ONE, Choice
from bench.meta.base import MetaMethod, register_method, train_on_support
from bench.networks import build_featurizer


@register_method("scratch")
class Scratch(MetaMethod):
    REFERENCE = "bench's floor: no meta-training, train on the support set only"
    META_TRAINS = False
    HPARAMS = {
        "adapt_steps": Choice(
            100,
            "full-batch Adam steps on the support set",
            options=(50, 100, 200),
            domain=AT_LEAST_ONE,
        ),
    }

    def adapt_predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        featurizer = build_featurizer(self.input_shape, self.hparams)
        model = nn.Sequential(featurizer, nn.Linear(featurizer.n_outputs, self.way))
        model.to(support_x.dtype)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.hparams["lr"])
        with torch.enable_grad():
            train_on_support(
                model,
                support_x,
                support_y,
                lambda x, y: F.cross_entropy(model(x), y),
                optimizer,
                self.hparams["adapt_steps"],
                len(support_y),
            )
        model.eval()
        with torch.no_grad():
            return model(query_x)
