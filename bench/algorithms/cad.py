"""Contrastive domain bottlenecks: Optimal Representations for Covariate Shift (Ruan, Dubois &
Maddison, ICLR 2022, arXiv:2201.00057).

Loss = risk + lmbda * a contrastive bottleneck built like SupCon (Khosla et al., 2020) on
the features z, with similarities z_i . z_j / temperature (self excluded):
- CAD: minimise I(D; Z). For each example, the log-probability that a softmax over all
  other examples picks one from another domain is maximised (``is_flipped``, DomainBed's
  default: "more stable" than minimising the same-domain probability; same optimum).
- CondCAD: minimise I(D; Z | Y). The softmax runs over the examples of the same label
  only, and the target is those of the same label from another domain.
Each row's loss is scaled by temperature / 0.07 (SupCon's base temperature) and averaged
over the rows where it is finite. As DomainBed: CAD keeps only rows that have another
example of their label, and the not-flipped CAD sums over the same domain including the
example itself (with similarity 0). ``is_project`` adds the projection head DomainBed
declares (d -> d -> 128, trained with the network); DomainBed's code for it does not run
(an undefined name), and its registry keeps it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import NON_NEGATIVE, POSITIVE, Choice, Fixed

BASE_TEMPERATURE = 0.07  # SupCon's; the loss is scaled by temperature / BASE_TEMPERATURE


def finite_mean(values: Tensor) -> Tensor:
    """Mean of the finite entries; 0 when there are none."""
    finite = torch.isfinite(values)
    if not finite.any():
        return values.new_zeros(())
    return values[finite].mean()


def log_mask(mask: Tensor) -> Tensor:
    """0 where ``mask``, -inf elsewhere: adding it to logits restricts a logsumexp."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))


def bottleneck_loss(
    z: Tensor,
    y: Tensor,
    domains: Tensor,
    temperature: float,
    conditional: bool,
    flipped: bool = True,
) -> Tensor:
    """The CAD (``conditional=False``) or CondCAD contrastive domain bottleneck."""
    n = len(z)
    others = ~torch.eye(n, dtype=torch.bool, device=z.device)
    same_y = (y[:, None] == y[None, :]) & others
    same_d = domains[:, None] == domains[None, :]
    logits = (z @ z.T / temperature).masked_fill(~others, 0.0)
    scale = temperature / BASE_TEMPERATURE
    if conditional:
        target = same_y & ~same_d if flipped else same_y & same_d
        rows = target.any(dim=1)
        log_prob = logits - torch.logsumexp(logits + log_mask(same_y), dim=1, keepdim=True)
    else:
        target = ~same_d if flipped else same_d
        rows = same_y.any(dim=1)
        log_prob = logits - torch.logsumexp(logits + log_mask(others), dim=1, keepdim=True)
    picked = torch.logsumexp(log_prob[rows] + log_mask(target[rows]), dim=1)
    return finite_mean(-scale * picked if flipped else scale * picked)


class AbstractCAD(Algorithm):
    """Risk + lmbda * contrastive domain bottleneck on the features."""

    VERSION = 1
    FAMILY = "alignment"
    CONDITIONAL = False
    HPARAMS = {
        "lmbda": Choice(
            1e-1,
            "weight of the bottleneck",
            options=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2),
            domain=NON_NEGATIVE,
        ),
        "temperature": Choice(
            0.1, "softmax temperature of the similarities", options=(0.05, 0.1), domain=POSITIVE
        ),
        "is_normalized": Fixed(False, "L2-normalise the features inside the bottleneck"),
        "is_project": Fixed(False, "pass the features through a projection head first"),
        "is_flipped": Fixed(
            True, "maximise the other-domain probability (True) or minimise the same-domain one"
        ),
    }

    def build(self) -> None:
        self.build_network()
        if self.hparams["is_project"]:
            width = self.featurizer.n_outputs
            self.project = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 128))
        self.optimizer = self.make_optimizer(self.parameters_to_optimize())

    def parameters_to_optimize(self) -> list[nn.Parameter]:
        heads = [self.project] if self.hparams["is_project"] else []
        return [p for m in (self.network, *heads) for p in m.parameters()]

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        y = torch.cat([y for _, y in minibatches])
        domains = torch.cat(
            [torch.full((len(y_e),), i, device=y.device) for i, (_, y_e) in enumerate(minibatches)]
        )
        z = self.featurizer(concat_inputs(minibatches))
        logits = self.classifier(z)
        nll = classification_loss(logits, y)
        hp = self.hparams
        z_b = self.project(z) if hp["is_project"] else z
        z_b = F.normalize(z_b, dim=1) if hp["is_normalized"] else z_b
        bottleneck = bottleneck_loss(
            z_b, y, domains, hp["temperature"], self.CONDITIONAL, hp["is_flipped"]
        )
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        loss = self.minimize(nll + hp["lmbda"] * bottleneck)
        return {
            "loss": loss.item(),
            "nll": nll.item(),
            "bottleneck": bottleneck.item(),
            **diagnostics,
        }


@register_algorithm("cad")
class CAD(AbstractCAD):
    """CAD (Ruan et al., 2022): a contrastive bottleneck on I(domain; features)."""

    VERSION = 1


@register_algorithm("cond_cad")
class CondCAD(AbstractCAD):
    """CondCAD (Ruan et al., 2022): a contrastive bottleneck on I(domain; features | label)."""

    VERSION = 1
    CONDITIONAL = True
