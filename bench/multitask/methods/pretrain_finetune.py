"""Pretrain then finetune across tasks, with weight rescaling (Lippl & Lindsey, NeurIPS 2024).

The first ``pretrain_fraction`` of the steps train the trunk and heads on the auxiliary
tasks (every task but the main one, mean loss); then the main task's head starts from a copy
of the first auxiliary head of its shape (a fresh one if none has it), the trunk and that
head are multiplied by ``rescale``, Adam restarts, and the rest of the steps train on the
main task alone. Lippl & Lindsey show that rescaling the pretrained weights down (< 1)
moves finetuning towards "nested feature selection" (reusing a sparse subset of the
pretrained features) and up towards the lazy regime. Only the main task is scored.
"""

from typing import Any, Sequence

import torch
from torch import Tensor

from bench.hparams import POSITIVE, Domain, Fixed, LogUniform
from bench.multitask.method import Batches, SharedTrunk, register_method
from bench.multitask.tasks import Task


@register_method("pretrain_finetune")
class PretrainFinetune(SharedTrunk):
    VERSION = 1
    SCORED = "main"
    HPARAMS = {
        "rescale": LogUniform(
            1.0,
            "factor on the pretrained weights before finetuning",
            low=0.1,
            high=2.0,
            domain=POSITIVE,
        ),
        "pretrain_fraction": Fixed(
            0.5,
            "share of the steps spent pretraining on the auxiliary tasks",
            domain=Domain(0, 1, open_low=True, open_high=True),
        ),
    }

    @classmethod
    def incompatible(cls, tasks: Sequence[Task]) -> str | None:
        return "needs at least one auxiliary task" if len(tasks) < 2 else None

    def build(self) -> None:
        super().build()
        self.finetuning = False

    @property
    def pretrain_steps(self) -> int:
        return max(1, round(self.hparams["pretrain_fraction"] * self.steps))

    def objective(self, losses: list[Tensor]) -> Tensor:
        if int(self.step) < self.pretrain_steps:
            aux = [l for j, l in enumerate(losses) if j != self.main_task]
            return torch.stack(aux).mean()
        return losses[self.main_task]

    def main_phase_start(self) -> int:
        return self.pretrain_steps

    def update(self, batches: Batches) -> dict[str, Any]:
        if int(self.step) == self.pretrain_steps and not self.finetuning:
            self.enter_main_phase()
        return super().update(batches)

    @torch.no_grad()
    def enter_main_phase(self) -> None:
        """Copy a donor head into the main one, rescale, restart Adam: finetuning begins."""
        self.finetuning = True
        main = self.heads[self.main_task]
        donor = next(
            (
                h
                for j, h in enumerate(self.heads)
                if j != self.main_task and h.weight.shape == main.weight.shape
            ),
            None,
        )
        if donor is not None:
            main.load_state_dict(donor.state_dict())
        for p in [*self.trunk.parameters(), *main.parameters()]:
            p.mul_(self.hparams["rescale"])
        self.optimizer = self.make_optimizer()
