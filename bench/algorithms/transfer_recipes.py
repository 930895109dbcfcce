"""Transfer adaptation recipes (see bench/transfer/recipes.py for the mechanics).

- ``scratch``: no pretraining; the target alone.
- ``linear_probe``: pretrained featurizer frozen; a new linear head trained (Adam on the head).
- ``finetune``: every block starts pretrained and is trained, copied blocks at ``lr * pretrained_lr_mult``.
- ``lp_ft`` (Kumar et al. 2022): a linear probe for ``probe_steps``, then fine-tuning from it.
- ``surgical`` (Lee et al. 2023): only the named ``block`` (and the new head) is trained.
- ``frozen_first_n`` / ``reinit_above_n`` (Yosinski et al. 2014): the first ``n`` blocks are copied,
  blocks above ``n`` re-initialised; frozen (AnB/BnB) or fine-tuned (AnB+/BnB+). Pretraining on the
  source gives AnB, on the target's training examples (``pretrain_data="target"``) gives BnB.
- ``self_pretrain``: masked-input pretraining on the target's own training inputs, then fine-tuning.
"""

from __future__ import annotations

from bench.algorithms.base import register_algorithm
from bench.errors import UserError
from bench.hparams import Fixed, IntLogUniform, LogUniform
from bench.transfer.pretrain import OBJECTIVES
from bench.transfer.recipes import Recipe, Setting


@register_algorithm("scratch")
class Scratch(Recipe):
    PRETRAINED = False


@register_algorithm("linear_probe")
class LinearProbe(Recipe):
    def frozen_blocks(self, n_blocks: int) -> set[int]:
        return set(range(n_blocks))


@register_algorithm("finetune")
class Finetune(Recipe):
    HPARAMS = {"pretrained_lr_mult": LogUniform(0.1, "learning-rate multiplier of the pretrained blocks (smaller lr)", low=0.01, high=1.0)}


@register_algorithm("lp_ft")
class LinearProbeThenFinetune(Finetune):
    HPARAMS = {"probe_steps": IntLogUniform(300, "steps of linear probing before the featurizer is unfrozen", low=50, high=2000, base=10.0, minimum=0)}

    def before_update(self) -> None:
        probing = int(self.step) < self.hparams["probe_steps"]
        for p in self.featurizer.parameters():
            p.requires_grad_(not probing)


@register_algorithm("surgical")
class Surgical(Recipe):
    HPARAMS = {"block": Fixed("block1", "the one featurizer block fine-tuned (block1 = nearest the input); the new head is trained too")}

    def frozen_blocks(self, n_blocks: int) -> set[int]:
        if self.hparams["block"] not in self.block_names:
            raise UserError(f"surgical: unknown block {self.hparams['block']!r}; blocks of this featurizer: {', '.join(self.block_names)}")
        keep = self.block_names.index(self.hparams["block"])
        return set(range(n_blocks)) - {keep}


class _FirstN(Recipe):
    HPARAMS = {"n": Fixed(1, "number of blocks copied from the pretrained featurizer, counted from the input")}

    def copied_blocks(self, n_blocks: int) -> int:
        return self.hparams["n"]


@register_algorithm("frozen_first_n")
class FrozenFirstN(_FirstN):
    def frozen_blocks(self, n_blocks: int) -> set[int]:
        return set(range(min(self.hparams["n"], n_blocks)))


@register_algorithm("reinit_above_n")
class ReinitAboveN(_FirstN):
    """Copied blocks are fine-tuned at the same learning rate, as Yosinski et al.'s AnB+/BnB+."""


@register_algorithm("self_pretrain")
class SelfPretrain(Finetune):
    HPARAMS = {
        "pretrain_data": Setting("target", "self-pretraining: the target's own training inputs", options=("source", "target")),
        "pretrain_objective": Setting("masked", "masked-input prediction (self-supervised)", options=OBJECTIVES),
    }
