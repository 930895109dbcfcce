"""Transfer adaptation recipes (see bench/transfer/recipes.py for the mechanics).

- ``scratch``: no pretraining; the target alone.
- ``linear_probe``: pretrained featurizer frozen; a new linear head trained (Adam on the head, or
  ``probe="sklearn"``: logistic regression with a C grid selected on the target validation split).
- ``finetune``: every block starts pretrained and is trained, copied blocks at
``lr * pretrained_lr_mult``.
- ``lp_ft`` (Kumar et al. 2022): a linear probe for ``probe_steps``, then fine-tuning from it.
- ``surgical`` (Lee et al. 2023): only the named ``block`` (and the new head) is trained.
- ``frozen_first_n`` / ``reinit_above_n`` (Yosinski et al. 2014): the first ``n`` blocks are copied,
  blocks above ``n`` re-initialised; frozen (AnB/BnB) or fine-tuned (AnB+/BnB+). Pretraining on the
  source gives AnB, on the target's training examples (``pretrain_data="target"``) gives BnB.
- ``self_pretrain``: masked-input pretraining on the target's own training inputs, then fine-tuning.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.algorithms.base import classification_loss, register_algorithm
from bench.errors import UserError
from bench.hparams import NON_NEGATIVE, Fixed, IntLogUniform, LogUniform, Setting
from bench.run_data import RunData
from bench.transfer.pretrain import OBJECTIVES
from bench.transfer.recipes import Recipe
from bench.transfer.sklearn_probe import fit_logistic_head, frozen_features


@register_algorithm("scratch")
class Scratch(Recipe):
    """Transfer baseline: the same network trained on the target alone, from random
    initialisation."""

    FAMILY = "transfer"

    PRETRAINED = False


@register_algorithm("linear_probe")
class LinearProbe(Recipe):
    """Linear probe: pretrained featurizer frozen, a new linear head (Adam, or probe="sklearn"
    logistic regression).

    With ``probe="sklearn"`` the head is fitted once before training
    (bench/transfer/sklearn_probe.py); the training steps then only log its loss.
    """

    FAMILY = "transfer"

    HPARAMS = {
        "probe": Setting(
            "adam",
            "how the head is trained: Adam steps, or scikit-learn logistic regression "
            "with a C grid",
            options=("adam", "sklearn"),
        )
    }

    def frozen_blocks(self, n_blocks: int) -> set[int]:
        return set(range(n_blocks))

    def prepare_run(self, data: RunData) -> dict[str, Any]:
        info = super().prepare_run(data)
        if self.hparams["probe"] == "sklearn":
            info["sklearn_probe"] = self._fit_sklearn_head(data)
            self.classifier.requires_grad_(False)
        return info

    def _fit_sklearn_head(self, data: RunData) -> dict[str, Any]:
        spec = data.spec
        if not spec.holdout_fraction:
            raise UserError(
                "linear_probe with probe=sklearn picks C on the target validation split; "
                "use a holdout fraction > 0"
            )
        if len(data.train_envs) != 1:
            raise UserError(
                f"probe=sklearn fits one target environment; {spec.dataset} trains on "
                f"{data.train_envs}"
            )
        name = data.train_envs[0]
        env, parts, device = data.dataset.envs[name], data.splits[name], self.step.device
        return fit_logistic_head(
            self.classifier,
            frozen_features(self.featurizer, env, parts["in"], device),
            frozen_features(self.featurizer, env, parts["out"], device),
        )

    def update(self, minibatches, unlabeled=None) -> dict[str, float]:
        if self.hparams["probe"] != "sklearn":
            return super().update(minibatches, unlabeled)
        with torch.no_grad():  # the fitted head is final; report its training loss like any run
            nll = classification_loss(
                self.network(torch.cat([x for x, _ in minibatches])),
                torch.cat([y for _, y in minibatches]),
            )
        self.finish_update()
        return {"loss": nll.item(), "nll": nll.item()}


@register_algorithm("finetune")
class Finetune(Recipe):
    """Fine-tuning: every block starts pretrained and is trained, pretrained blocks at lr *
    pretrained_lr_mult."""

    FAMILY = "transfer"

    HPARAMS = {
        "pretrained_lr_mult": LogUniform(
            0.1,
            "learning-rate multiplier of the pretrained blocks (smaller lr)",
            low=0.01,
            high=1.0,
        )
    }


@register_algorithm("lp_ft")
class LinearProbeThenFinetune(Finetune):
    """LP-FT (Kumar et al., 2022): a linear probe for probe_steps, then fine-tuning from it."""

    FAMILY = "transfer"

    HPARAMS = {
        "probe_steps": IntLogUniform(
            300,
            "steps of linear probing before the featurizer is unfrozen",
            low=50,
            high=2000,
            base=10.0,
            domain=NON_NEGATIVE,
        )
    }

    def before_update(self) -> None:
        probing = int(self.step) < self.hparams["probe_steps"]
        for p in self.featurizer.parameters():
            p.requires_grad_(not probing)


@register_algorithm("surgical")
class Surgical(Recipe):
    """Surgical fine-tuning (Lee et al., 2023): only the named block (and the new head) is
    trained."""

    FAMILY = "transfer"

    HPARAMS = {
        "block": Fixed(
            "block1",
            "the one featurizer block fine-tuned (block1 = nearest the input); the new "
            "head is trained too",
        )
    }

    def frozen_blocks(self, n_blocks: int) -> set[int]:
        if self.hparams["block"] not in self.block_names:
            raise UserError(
                f"surgical: unknown block {self.hparams['block']!r}; blocks of this "
                f"featurizer: {', '.join(self.block_names)}"
            )
        keep = self.block_names.index(self.hparams["block"])
        return set(range(n_blocks)) - {keep}


class _FirstN(Recipe):
    HPARAMS = {
        "n": Fixed(
            1,
            "number of blocks copied from the pretrained featurizer, counted from the input",
            domain=NON_NEGATIVE,
        )
    }

    def copied_blocks(self, n_blocks: int) -> int:
        return self.hparams["n"]


@register_algorithm("frozen_first_n")
class FrozenFirstN(_FirstN):
    """Yosinski et al.'s AnB/BnB: the first n blocks copied and frozen, the blocks above
    re-initialised and trained."""

    FAMILY = "transfer"

    def frozen_blocks(self, n_blocks: int) -> set[int]:
        return set(range(min(self.hparams["n"], n_blocks)))


@register_algorithm("reinit_above_n")
class ReinitAboveN(_FirstN):
    """Yosinski et al.'s AnB+/BnB+: the first n blocks copied, the rest re-initialised, all
    fine-tuned at the same lr."""

    FAMILY = "transfer"


@register_algorithm("self_pretrain")
class SelfPretrain(Finetune):
    """Self-pretraining: masked-input pretraining on the target's own training inputs, then
    fine-tuning."""

    FAMILY = "transfer"

    HPARAMS = {
        "pretrain_data": Setting(
            "target",
            "self-pretraining: the target's own training inputs",
            options=("source", "target"),
        ),
        "pretrain_objective": Setting(
            "masked", "masked-input prediction (self-supervised)", options=OBJECTIVES
        ),
    }
