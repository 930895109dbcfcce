"""V-REx: Risk Extrapolation (Krueger, Caballero, Jacobsen, Zhang, Binas, Zhang, Le Priol
& Courville, ICML 2021, arXiv:2003.00688).

Loss = mean of the per-environment risks + weight * their variance (population variance,
as DomainBed). Annealing as IRM: weight 1 for ``vrex_penalty_anneal_iters`` steps, then
``vrex_lambda`` (see ``Algorithm.penalised_loss``).

On ``cmnist_irm`` and ``cmnist_fishr`` V-REx is the Fishr paper's run (its
coloredmnist/train_coloredmnist.py, algorithm ``rex``): the penalty is the squared risk
difference (R_0 - R_1)^2 (``vrex_penalty: squared_difference``, two training
environments only), weight 1 for 190 steps, then 91257.186 with the loss divided by it.
For two environments that is 4 * Var(R), so after annealing only the loss scale differs
from the variance form, but before it the penalty is 4x DomainBed's. Those settings are the
datasets' (``ALGORITHM_HPARAMS`` in bench/datasets/colored_mnist.py).
"""

from __future__ import annotations

import torch

from bench.algorithms.base import (
    ANNEALING_HPARAMS,
    Algorithm,
    Minibatches,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.errors import UserError
from bench.hparams import NON_NEGATIVE, IntLogUniform, LogUniform, Setting

PENALTIES = ("variance", "squared_difference")


@register_algorithm("vrex")
class VREx(Algorithm):
    """V-REx (Krueger et al., 2021): mean risk + weight * variance of the environment risks."""

    VERSION = 2
    FAMILY = "invariance"
    HPARAMS = {
        "vrex_lambda": LogUniform(
            1e1,
            "weight of the variance of the environment risks after annealing",
            low=1e-1,
            high=1e5,
            domain=NON_NEGATIVE,
        ),
        "vrex_penalty_anneal_iters": IntLogUniform(
            500,
            "steps with penalty weight 1 before vrex_lambda",
            low=1,
            high=1e4,
            base=10.0,
            domain=NON_NEGATIVE,
        ),
        "vrex_penalty": Setting(
            "variance",
            "variance of the risks (DomainBed), or (R_0 - R_1)^2 (the Fishr code)",
            options=PENALTIES,
        ),
        **ANNEALING_HPARAMS,
    }

    def build(self) -> None:
        if self.hparams["vrex_penalty"] == "squared_difference" and self.num_train_envs != 2:
            raise UserError(
                "vrex_penalty squared_difference needs exactly 2 training environments, "
                f"got {self.num_train_envs}"
            )
        super().build()

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        nlls = env_losses(self.predict(concat_inputs(minibatches)), minibatches)
        losses = torch.stack(nlls)
        nll = losses.mean()
        if self.hparams["vrex_penalty"] == "squared_difference":
            penalty = (losses[0] - losses[1]).pow(2)
        else:
            penalty = (losses - nll).pow(2).mean()
        diagnostics = self.head_grad_cos(nlls)
        hp = self.hparams
        loss = self.penalised_loss(nll, penalty, hp["vrex_lambda"], hp["vrex_penalty_anneal_iters"])
        self.minimize(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}
