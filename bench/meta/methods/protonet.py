"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017): classify a query by the
nearest class mean ("prototype") of the support embeddings.

Logits are negative squared Euclidean distances to the prototypes (the paper's choice over
cosine), trained episodically with cross-entropy on the queries; nothing is trained at
meta-test time. The paper used Adam 1e-3 halved every 2000 episodes and trained with more
ways than it tested (e.g. 20-way for 5-way 5-shot); bench trains and tests at the run's way
with a constant rate, so every method sees the same episodes.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.meta.base import Draw, MetaMethod, register_method


def prototype_logits(support_z: Tensor, support_y: Tensor, query_z: Tensor, way: int) -> Tensor:
    """-||q - c_k||^2 for every query q and class mean c_k of the support embeddings."""
    prototypes = torch.stack([support_z[support_y == k].mean(0) for k in range(way)])
    return -torch.cdist(query_z, prototypes).pow(2)


@register_method("protonet")
class ProtoNet(MetaMethod):
    REFERENCE = "Snell et al. 2017, Prototypical Networks for Few-shot Learning (NeurIPS)"

    def __init__(
        self, input_shape: tuple[int, ...], way: int, n_classes: int, hparams: Mapping[str, Any]
    ) -> None:
        super().__init__(input_shape, way, n_classes, hparams)
        self.make_optimizer()

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        z = self.featurizer(torch.cat([support_x, query_x]))
        n = len(support_x)
        return prototype_logits(z[:n], support_y, z[n:], int(support_y.max()) + 1)

    def meta_update(self, draw: Draw) -> dict[str, float]:
        (episode,) = draw.episodes(1)
        loss = F.cross_entropy(
            self.logits(episode.support_x, episode.support_y, episode.query_x), episode.query_y
        )
        self.optimise(loss)
        return {"loss": loss.item()}

    def adapt_predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.logits(support_x, support_y, query_x)
