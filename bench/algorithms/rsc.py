"""RSC: Self-Challenging Improves Cross-Domain Generalization (Huang, Wang, Xing & Huang,
ECCV 2020, arXiv:2007.02454), Eqs. 1-5 and Section 3.3, as DomainBed's RSC.

Each step mutes the features the model leans on most and trains on what is left, so it
must also learn the less dominant ones:
1. g = d(true-class logit)/d(features), per example (Eq. 1);
2. per example, mute the features whose g is in the top ``rsc_f_drop_factor`` fraction
   (Eqs. 2-3);
3. only for the ``rsc_b_drop_factor`` fraction of the batch whose true-class probability
   drops most when muted (Section 3.3, "batch percentage"); the rest keep all features;
4. cross-entropy of the classifier on the (partly) muted features (Eq. 5).
Percentiles interpolate linearly, as numpy's (DomainBed). With a one-logit head the true-class
logit is the logit signed by the label.
"""

from __future__ import annotations

import torch
from torch import Tensor, autograd

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import Domain, Uniform

FRACTION = Domain(0, 1, open_high=True)


def true_class_logit(logits: Tensor, y: Tensor) -> Tensor:
    """The logit of each example's label (softmax head), or the label-signed logit (one logit)."""
    if logits.shape[1] == 1:
        return logits[:, 0] * (2 * y - 1)
    return logits.gather(1, y[:, None])[:, 0]


def true_class_prob(logits: Tensor, y: Tensor) -> Tensor:
    if logits.shape[1] == 1:
        return torch.sigmoid(true_class_logit(logits, y))
    return logits.softmax(dim=1).gather(1, y[:, None])[:, 0]


def rsc_mask(
    features: Tensor, classifier, y: Tensor, feature_drop: float, batch_drop: float
) -> Tensor:
    """1 where a feature is kept, 0 where RSC mutes it (no gradient flows through the mask)."""
    logits = classifier(features)
    grads = autograd.grad(true_class_logit(logits, y).sum(), features, retain_graph=True)[0]
    threshold = torch.quantile(grads, 1 - feature_drop, dim=1, keepdim=True)
    keep = (grads < threshold).float()
    with torch.no_grad():
        drop = true_class_prob(logits, y) - true_class_prob(classifier(features * keep), y)
        spared = (drop < torch.quantile(drop, 1 - batch_drop)).float()[:, None]
    return torch.maximum(keep, spared)


@register_algorithm("rsc")
class RSC(Algorithm):
    """RSC (Huang et al., 2020): train on features with the most-relied-on ones muted."""

    VERSION = 1
    FAMILY = "regularisation"
    HPARAMS = {
        "rsc_f_drop_factor": Uniform(
            1 / 3,
            "fraction of each example's features muted (largest gradient first)",
            low=0.0,
            high=0.5,
            domain=FRACTION,
        ),
        "rsc_b_drop_factor": Uniform(
            1 / 3,
            "fraction of the batch that is muted (largest confidence drop first)",
            low=0.0,
            high=0.5,
            domain=FRACTION,
        ),
    }

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        y = torch.cat([y for _, y in minibatches])
        features = self.featurizer(concat_inputs(minibatches))
        hp = self.hparams
        mask = rsc_mask(
            features, self.classifier, y, hp["rsc_f_drop_factor"], hp["rsc_b_drop_factor"]
        )
        logits = self.classifier(features * mask)
        nll = classification_loss(logits, y)
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        loss = self.minimize(nll)
        muted = 1 - mask.mean().item()
        return {"loss": loss.item(), "nll": nll.item(), "muted": muted, **diagnostics}
