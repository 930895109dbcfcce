"""ADRMX: Additive Disentanglement of Domain Features with Remix Loss (Demirel, Aptoula & Ozkan,
2023, arXiv:2308.06624), as DomainBed's ADRMX.

Two featurizers: a label one (f_l) and a domain one (f_d); the domain-invariant features are
f_l - f_d. A discriminator (MLP) predicts the environment from f_l - f_d. Steps alternate:
``d_steps_per_g_step`` discriminator steps, then one step of everything else on
  CE(c1(f_l)) + CE(c2(f_l - f_d)) + dclf * CE_env(c_env(f_d)) + rmxd * remix
  + cnt * (SupCon(f_l) + SupCon(f_l - f_d)) - disc * discriminator loss,
where remix, per class, adds one example's invariant features to another same-class example's
domain features and classifies the sum with c1, and SupCon is the supervised contrastive loss
(temperature 0.07) with same-environment pairs weighted 0.5 and others 0.5 (DomainBed's
lambda 0.5). c1, c2 and c_env are DomainBed's 3-layer heads; the model predicts c1(f_l).

Deviations from DomainBed: its remix picks two random positions in [0, n_class) of the whole
batch (not two examples of the class); bench picks two examples of the class, as its comment
and the paper intend. DomainBed's ADRMX ignores ``weight_decay``; bench applies it to the
model's Adam (the discriminator's has none, as DomainBed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import networks
from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import AT_LEAST_ONE, DROPOUT, NON_NEGATIVE, Choice, Domain, Fixed

TEMPERATURE, SAME_ENV_WEIGHT = 0.07, 0.5  # DomainBed's SupConLossLambda(lamda=0.5)


def supcon(features: Tensor, y: Tensor, envs: Tensor) -> Tensor:
    """Supervised contrastive loss, pairs in the same environment weighted SAME_ENV_WEIGHT.

    As DomainBed: anchors without positives are left out, the sum is divided by
    (anchors kept + 1), and 1e-5 is added inside both the denominator and the log.
    """
    z = F.normalize(features, dim=1)
    similarity = torch.exp(z @ z.T / TEMPERATURE)
    same_env = envs[:, None] == envs[None, :]
    weights = torch.where(same_env, SAME_ENV_WEIGHT, 1 - SAME_ENV_WEIGHT)
    weights = weights * (1 - torch.eye(len(y), device=y.device))  # never the anchor itself
    weighted = weights * similarity
    denominator = weighted.sum(dim=1, keepdim=True) + 1e-5
    positive = (y[:, None] == y[None, :]) & (weights > 0)
    log_ratio = torch.log(weighted / denominator + 1e-5)
    n_positive = positive.sum(dim=1)
    kept = n_positive > 0
    per_anchor = (log_ratio * positive).sum(dim=1)[kept] / n_positive[kept]
    return -per_anchor.sum() / (int(kept.sum()) + 1)


def remix_loss(
    classifier: nn.Module, invariant: Tensor, domain: Tensor, y: Tensor, n_classes: int
) -> Tensor:
    """Mean over classes of CE(c1(invariant_a + domain_b)) for two random examples a, b of the
    class (classes with fewer than two examples add 0)."""
    total = invariant.new_zeros(())
    for label in range(n_classes):
        members = torch.nonzero(y == label)[:, 0]
        if len(members) < 2:
            continue
        a, b = members[torch.randperm(len(members), device=y.device)[:2]]
        total = total + classification_loss(
            classifier((invariant[a] + domain[b])[None]), y[a, None]
        )
    return total / n_classes


@register_algorithm("adrmx")
class ADRMX(Algorithm):
    """ADRMX (Demirel et al., 2023): label minus domain features, adversarial to the environment,
    with a remix loss."""

    VERSION = 1
    FAMILY = "alignment"
    HPARAMS = {
        "lr": Choice(
            3e-3,
            "Adam lr (DomainBed's small images; large: bench/datasets/domainbed_hparams.py)",
            options=(5e-4, 1e-3, 2e-3, 3e-3),
        ),
        "nonlinear_classifier": Fixed(
            True, "DomainBed's ADRMX always uses 3-layer heads (it ignores this key, False there)"
        ),
        "cnt_lambda": Fixed(
            1.0, "weight of the two supervised contrastive losses", domain=NON_NEGATIVE
        ),
        "dclf_lambda": Fixed(
            1.0, "weight of the environment classifier on domain features", domain=NON_NEGATIVE
        ),
        "disc_lambda": Fixed(
            0.75, "weight of the adversarial (negated discriminator) loss", domain=NON_NEGATIVE
        ),
        "rmxd_lambda": Fixed(1.0, "weight of the remix loss", domain=NON_NEGATIVE),
        "d_steps_per_g_step": Fixed(2, "discriminator steps per model step", domain=AT_LEAST_ONE),
        "beta1": Fixed(0.5, "Adam beta1 of both optimisers", domain=Domain(0, 1, open_high=True)),
        "d_mlp_width": Fixed(256, "discriminator hidden width", domain=AT_LEAST_ONE),
        "d_mlp_depth": Choice(
            9, "discriminator Linear layers", options=(8, 9, 10), domain=Domain(2)
        ),
        "d_mlp_dropout": Fixed(0.0, "discriminator dropout", domain=DROPOUT),
    }

    def build(self) -> None:
        hp = self.hparams
        self.featurizer = networks.build_featurizer(self.input_shape, hp)
        self.domain_featurizer = networks.build_featurizer(self.input_shape, hp)
        n, k, e = self.featurizer.n_outputs, self.num_classes, self.num_train_envs
        self.classifier = networks.build_classifier(n, k, hp)
        self.invariant_classifier = networks.build_classifier(n, k, hp)
        self.env_classifier = networks.build_classifier(n, e, hp)
        width = hp["d_mlp_width"]
        self.discriminator = nn.Sequential(
            networks.MLP(n, width, hp["d_mlp_depth"] - 1, hp["d_mlp_dropout"]), nn.Linear(width, e)
        )
        self.network = nn.Sequential(self.featurizer, self.classifier)
        betas = (hp["beta1"], 0.9)
        self.disc_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=hp["lr"], betas=betas
        )
        self.optimizer = torch.optim.Adam(
            self.model_parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], betas=betas
        )

    def model_parameters(self) -> list[nn.Parameter]:
        modules = (
            self.featurizer,
            self.domain_featurizer,
            self.classifier,
            self.invariant_classifier,
            self.env_classifier,
        )
        return [p for m in modules for p in m.parameters()]

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        hp = self.hparams
        x, y = concat_inputs(minibatches), torch.cat([y for _, y in minibatches])
        envs = torch.cat([torch.full_like(y_e, i) for i, (_, y_e) in enumerate(minibatches)])
        label_features, domain_features = self.featurizer(x), self.domain_featurizer(x)
        invariant = label_features - domain_features
        disc_loss = F.cross_entropy(self.discriminator(invariant), envs)
        logits = self.classifier(label_features)
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        d_steps = hp["d_steps_per_g_step"]
        if (int(self.step) + 1) % (1 + d_steps) < d_steps:  # DomainBed counts the step first
            self.disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            self.disc_optimizer.step()  # the adversary: no l2, as DANN
            self.finish_update()
            return {"disc_loss": disc_loss.item(), **diagnostics}
        nll = classification_loss(logits, y)
        nll_invariant = classification_loss(self.invariant_classifier(invariant), y)
        env_nll = F.cross_entropy(self.env_classifier(domain_features), envs)
        remix = remix_loss(self.classifier, invariant, domain_features, y, max(self.num_classes, 2))
        contrastive = supcon(label_features, y, envs) + supcon(invariant, y, envs)
        loss = (
            nll
            + nll_invariant
            + hp["dclf_lambda"] * env_nll
            + hp["rmxd_lambda"] * remix
            + hp["cnt_lambda"] * contrastive
            - hp["disc_lambda"] * disc_loss
            + self.l2_penalty(self.model_parameters())
        )
        self.disc_optimizer.zero_grad(set_to_none=True)
        self.minimize(loss)
        return {
            "loss": loss.item(),
            "nll": nll.item(),
            "disc_loss": disc_loss.item(),
            "remix": remix.item(),
            "contrastive": contrastive.item(),
            **diagnostics,
        }
