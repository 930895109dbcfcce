"""Domain-adversarial training, as DomainBed's AbstractDANN.

- DANN: Domain-Adversarial Training of Neural Networks (Ganin, Ustinova, Ajakan, Germain,
  Larochelle, Laviolette, Marchand & Lempitsky, JMLR 2016, arXiv:1505.07818).
- CDANN: Deep Domain Generalization via Conditional Invariant Adversarial Networks
  (Li, Tian, Gong, Liu, Liu, Zhang & Tao, ECCV 2018): the discriminator sees the
  features plus a learned class embedding, and its loss is class-balanced.
A discriminator MLP predicts the environment from the features. Instead of a gradient
reversal layer, steps alternate (DomainBed): ``d_steps_per_g_step`` discriminator
steps (loss + grad_penalty * squared input gradient), then one step of the featurizer
and classifier on risk - lambda * discriminator loss. The generator uses the shared
``lr``/``weight_decay`` (DomainBed's lr_g/weight_decay_g have the same defaults and
ranges); both Adams use betas (beta1, 0.9).

Domain adaptation (``uda_fraction`` > 0): each test environment's unlabeled minibatch joins
the discriminator's input as one more domain, so the features are pushed to hide the
target from the source, as in the DANN paper (DomainBed passes ``unlabeled`` but its
DANN never reads it). Unlabeled inputs add no risk term; CDANN embeds the classifier's
(detached) predicted class for them, as no label exists (a deviation; CDAN conditions on
predictions likewise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd, nn

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    predictions,
    register_algorithm,
    split_by_env,
)
from bench.hparams import (
    AT_LEAST_ONE,
    DROPOUT,
    NON_NEGATIVE,
    POSITIVE,
    Choice,
    Domain,
    IntLogUniform,
    LogUniform,
)
from bench.networks import MLP


class AbstractDANN(Algorithm):
    """Alternating discriminator and generator steps; ``CONDITIONAL`` adds class embeddings."""

    VERSION = 1
    CONDITIONAL = False
    HPARAMS = {
        "lambda": LogUniform(
            1.0,
            "weight of the adversarial term in the generator loss",
            low=1e-2,
            high=1e2,
            domain=NON_NEGATIVE,
        ),
        "lr_d": LogUniform(
            1e-3, "discriminator Adam learning rate", low=10**-4.5, high=10**-2.5, domain=POSITIVE
        ),
        "weight_decay_d": LogUniform(
            0.0, "discriminator weight decay", low=1e-6, high=1e-2, domain=NON_NEGATIVE
        ),
        "d_steps_per_g_step": IntLogUniform(
            1,
            "discriminator steps per generator step",
            low=1,
            high=8,
            base=2.0,
            domain=AT_LEAST_ONE,
        ),
        "grad_penalty": LogUniform(
            0.0,
            "weight of the discriminator's squared input gradient",
            low=1e-2,
            high=1e1,
            domain=NON_NEGATIVE,
        ),
        "beta1": Choice(
            0.5,
            "Adam beta1 of both optimisers",
            options=(0.0, 0.5),
            domain=Domain(0, 1, open_high=True),
        ),
        "d_mlp_width": IntLogUniform(
            256, "discriminator hidden width", low=64, high=1024, domain=AT_LEAST_ONE
        ),
        "d_mlp_depth": Choice(
            3, "discriminator Linear layers", options=(3, 4, 5), domain=Domain(2)
        ),
        "d_mlp_dropout": Choice(
            0.0, "discriminator dropout", options=(0.0, 0.1, 0.5), domain=DROPOUT
        ),
    }

    def build(self) -> None:
        """The network, a discriminator with class embeddings, and one Adam for each side."""
        self.build_network()
        hp, width, n_features = self.hparams, self.hparams["d_mlp_width"], self.featurizer.n_outputs
        self.discriminator = nn.Sequential(
            MLP(n_features, width, hp["d_mlp_depth"] - 1, hp["d_mlp_dropout"]),
            nn.Linear(width, self.num_train_envs + self.num_unlabeled_envs),
        )
        self.class_embeddings = nn.Embedding(max(self.num_classes, 2), n_features)
        betas = (hp["beta1"], 0.9)
        d_params = list(self.discriminator.parameters()) + list(self.class_embeddings.parameters())
        self.disc_optimizer = torch.optim.Adam(
            d_params, lr=hp["lr_d"], weight_decay=hp["weight_decay_d"], betas=betas
        )
        self.gen_optimizer = torch.optim.Adam(
            self.network.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], betas=betas
        )

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        y = torch.cat([y for _, y in minibatches])
        z_all = self.featurizer(torch.cat([concat_inputs(minibatches), *(unlabeled or [])]))
        disc_y = y
        if unlabeled:  # the unlabeled rows' class: the classifier's guess (CDANN's embedding)
            with torch.no_grad():
                disc_y = torch.cat([y, predictions(self.classifier(z_all[len(y) :]))])
        disc_input = z_all + self.class_embeddings(disc_y) if self.CONDITIONAL else z_all
        disc_out = self.discriminator(disc_input)
        sizes = [len(y_e) for _, y_e in minibatches] + [len(x) for x in unlabeled or []]
        domains = torch.cat(
            [torch.full((n,), i, dtype=torch.long, device=y.device) for i, n in enumerate(sizes)]
        )
        if self.CONDITIONAL:  # class-balanced discriminator loss
            counts = F.one_hot(disc_y).sum(dim=0)
            disc_loss = (
                F.cross_entropy(disc_out, domains, reduction="none")
                / (counts[disc_y] * counts.shape[0]).float()
            ).sum()
        else:
            disc_loss = F.cross_entropy(disc_out, domains)
        input_grad = autograd.grad(
            F.cross_entropy(disc_out, domains, reduction="sum"), [disc_input], create_graph=True
        )[0]
        disc_loss = disc_loss + self.hparams["grad_penalty"] * input_grad.pow(2).sum(dim=1).mean()

        logits = self.classifier(z_all[: len(y)])
        nlls = [
            classification_loss(l, y_e)
            for l, (_, y_e) in zip(split_by_env(logits, minibatches), minibatches)
        ]
        nll = classification_loss(logits, y)
        diagnostics = self.head_grad_cos(nlls)
        d_steps = self.hparams["d_steps_per_g_step"]
        # DomainBed counts the step first: with one d-step per g-step, step 1 trains the
        # discriminator
        if (int(self.step) + 1) % (1 + d_steps) < d_steps:
            self.disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            self.disc_optimizer.step()  # the adversary: no l2 (it regularises the model)
            self.finish_update()
        else:
            self.disc_optimizer.zero_grad(set_to_none=True)
            gen_loss = nll + self.l2_penalty() - self.hparams["lambda"] * disc_loss
            self.minimize(gen_loss, self.gen_optimizer)
        return {"disc_loss": disc_loss.item(), "nll": nll.item(), **diagnostics}


@register_algorithm("dann")
class DANN(AbstractDANN):
    """DANN (Ganin et al., 2016): features adversarial to an environment discriminator."""

    VERSION = 1
    FAMILY = "alignment"


@register_algorithm("cdann")
class CDANN(AbstractDANN):
    """CDANN (Li et al., 2018): DANN with a class-conditional, class-balanced discriminator."""

    VERSION = 1
    FAMILY = "alignment"
    CONDITIONAL = True
