"""URM: Uniformly Distributed Feature Representations for Fair and Robust Learning
(Krishnamachari, Ng & Foo, TMLR 2024, openreview PgLbS5yp8n), adversarial URM as DomainBed's.

The features (squashed by tanh, or relu) are pushed towards the uniform distribution on their
range by a GAN-style discriminator that tells features (label 0) from uniform noise (label 1):
each step the model minimises CE + ``urm_adv_lambda`` * BCE(D(features), 1), then the
discriminator (an MLP with 100-unit LeakyReLU layers) steps on
BCE(D(noise), 1) + ``urm_adv_lambda`` * BCE(D(features), 0), with labels optionally smoothed to
U(1 - s, 1) and U(0, s). Noise is U(-1, 1) for tanh and U(0, 1) for relu.

As DomainBed: the output activation is appended to the featurizer, so a ResNet's features
(non-negative after its last ReLU) squashed by tanh lie in [0, 1) while the noise covers
(-1, 1); bench's MLP also ends in ReLU (DomainBed's ends in a linear layer), so the same holds
there. DomainBed's ``urm`` key (always 'adversarial') is never read by its code and is left out.
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
from bench.hparams import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    Choice,
    Fixed,
    LogUniform,
    Setting,
    Uniform,
)

NOISE_RANGE = {"tanh": (-1.0, 1.0), "relu": (0.0, 1.0)}
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
HIDDEN = 100  # DomainBed's discriminator width


def discriminator(n_features: int, hidden_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_features, HIDDEN), nn.LeakyReLU()]
    for _ in range(hidden_layers):
        layers += [nn.Linear(HIDDEN, HIDDEN), nn.LeakyReLU()]
    return nn.Sequential(*layers, nn.Linear(HIDDEN, 1))


@register_algorithm("urm")
class URM(Algorithm):
    """URM (Krishnamachari et al., 2024): features adversarially matched to uniform noise."""

    VERSION = 1
    FAMILY = "regularisation"
    HPARAMS = {
        "urm_adv_lambda": Uniform(
            0.1, "weight of the adversarial terms", low=0.0, high=0.2, domain=NON_NEGATIVE
        ),
        "urm_discriminator_label_smoothing": Fixed(
            0.0, "s: discriminator labels drawn from U(1 - s, 1) and U(0, s)", domain=NON_NEGATIVE
        ),
        "urm_discriminator_optimizer": Setting(
            "adam", "discriminator optimiser (sgd: momentum 0.9)", options=("adam", "sgd")
        ),
        "urm_discriminator_hidden_layers": Choice(
            1, "discriminator hidden layers after the first", options=(1, 2, 3), domain=AT_LEAST_ONE
        ),
        "urm_generator_output": Choice(
            "tanh", "activation appended to the featurizer", options=("tanh", "relu")
        ),
        "urm_discriminator_lr": LogUniform(
            1e-3,
            "discriminator lr (DomainBed's small images; large: datasets/domainbed_hparams.py)",
            low=10**-5.5,
            high=10**-3.5,
            domain=POSITIVE,
        ),
    }

    def build(self) -> None:
        self.build_network()
        hp = self.hparams
        activation = ACTIVATIONS[hp["urm_generator_output"]]()
        n_features = self.featurizer.n_outputs
        self.featurizer = nn.Sequential(self.featurizer, activation)
        self.network = nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = self.make_optimizer(self.network.parameters())
        self.discriminator = discriminator(n_features, hp["urm_discriminator_hidden_layers"])
        lr, decay = hp["urm_discriminator_lr"], hp["weight_decay"]
        if hp["urm_discriminator_optimizer"] == "sgd":
            self.disc_optimizer = torch.optim.SGD(
                self.discriminator.parameters(), lr=lr, weight_decay=decay, momentum=0.9
            )
        else:
            self.disc_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=lr, weight_decay=decay
            )

    def targets(self, like: Tensor, real: bool) -> Tensor:
        """Discriminator labels: 1 for noise, 0 for features, smoothed when asked."""
        s = self.hparams["urm_discriminator_label_smoothing"]
        if not s:
            return torch.full((len(like),), float(real), device=like.device)
        u = torch.rand(len(like), device=like.device) * s
        return 1 - u if real else u

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        lam = self.hparams["urm_adv_lambda"]
        features = self.featurizer(concat_inputs(minibatches))
        logits = self.classifier(features)
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        fool = F.binary_cross_entropy_with_logits(
            self.discriminator(features)[:, 0], torch.ones(len(features), device=features.device)
        )
        loss = self.minimize(nll + lam * fool + self.l2_penalty(self.network.parameters()))
        features = features.detach()
        low, high = NOISE_RANGE[self.hparams["urm_generator_output"]]
        noise = low + (high - low) * torch.rand_like(features)
        bce = F.binary_cross_entropy_with_logits
        disc_loss = bce(self.discriminator(noise)[:, 0], self.targets(noise, True)) + lam * bce(
            self.discriminator(features)[:, 0], self.targets(features, False)
        )
        self.disc_optimizer.zero_grad(set_to_none=True)
        disc_loss.backward()
        self.disc_optimizer.step()
        return {
            "loss": loss.item(),
            "nll": nll.item(),
            "disc_loss": disc_loss.item(),
            **diagnostics,
        }
