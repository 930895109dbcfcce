"""MTL: Domain Generalization by Marginal Transfer Learning (Blanchard, Deshmukh, Dogan, Lee &
Scott, JMLR 2021, arXiv:1711.07910), in DomainBed's neural form.

The classifier sees each example's features next to an embedding of its environment's
marginal distribution P_X, so one model can predict differently in environments whose inputs
are distributed differently. The paper embeds P_X with a kernel mean embedding; DomainBed
(and bench) use the mean of the learned features over the batch (the kernel mean embedding
of the featurizer's feature map). During training the embedding of environment e is
``mtl_ema * batch mean + (1 - mtl_ema) * stored embedding`` (DomainBed's weighting: the
larger ``mtl_ema``, the more weight on the current batch), stored per environment in a
buffer; at prediction time it is the mean over the batch being predicted, so predictions
depend on the batch's composition. Environment losses are summed, as DomainBed.

Deviation from DomainBed: its ``predict`` calls ``.normal_()`` on the embedding, which
overwrites it in place with standard normal noise (DomainBed issue #159), so its MTL is ERM
with a noise input; bench feeds the embedding itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench import networks
from bench.algorithms.base import Algorithm, Minibatches, classification_loss, register_algorithm
from bench.hparams import Choice, Domain


@register_algorithm("mtl")
class MTL(Algorithm):
    """MTL (Blanchard et al., 2021): classify [features, mean features of the environment]."""

    VERSION = 1
    FAMILY = "meta-learning"
    HPARAMS = {
        "mtl_ema": Choice(
            0.99,
            "weight of the current batch in an environment's embedding (1 = batch mean only)",
            options=(0.5, 0.9, 0.99, 1.0),
            domain=Domain(0, 1, open_low=True),
        ),
    }

    def build_network(self) -> None:
        self.featurizer = networks.build_featurizer(self.input_shape, self.hparams)
        n_features = self.featurizer.n_outputs
        self.classifier = networks.build_classifier(2 * n_features, self.num_classes, self.hparams)
        self.register_buffer("embeddings", torch.zeros(self.num_train_envs, n_features))

    def parameters_to_optimize(self):
        return list(self.featurizer.parameters()) + list(self.classifier.parameters())

    def embed(self, features: Tensor, env: int | None) -> Tensor:
        """The marginal's embedding, one row per example; training batches update ``embeddings``."""
        embedding = features.mean(dim=0)
        if env is not None:
            ema = self.hparams["mtl_ema"]
            embedding = ema * embedding + (1 - ema) * self.embeddings[env]
            self.embeddings[env] = embedding.detach()
        return embedding.expand(len(features), -1)

    def predict(self, x: Tensor, env: int | None = None) -> Tensor:
        features = self.featurizer(x)
        return self.classifier(torch.cat([features, self.embed(features, env)], dim=1))

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        nlls = [
            classification_loss(self.predict(x, env), y) for env, (x, y) in enumerate(minibatches)
        ]
        nll = torch.stack(nlls).sum()
        diagnostics = self.head_grad_cos(nlls)
        loss = self.minimize(nll)
        return {"loss": loss.item(), "nll": nll.item(), **diagnostics}
