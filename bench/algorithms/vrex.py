"""V-REx: Risk Extrapolation (Krueger, Caballero, Jacobsen, Zhang, Binas, Zhang, Le Priol
& Courville, ICML 2021, arXiv:2003.00688).

Loss = mean of the per-environment risks + weight * their variance (population variance,
as DomainBed). Annealing as IRM: weight 1 for ``vrex_penalty_anneal_iters`` steps, then
``vrex_lambda`` (see ``Algorithm.penalised_loss``).

On ``cmnist_irm`` (the Fishr paper's V-REx run with the IRM paper's settings) the Fishr
code penalises (R_0 - R_1)^2 with weight 91257.186; for two environments that is
4 * Var(R), so ``vrex_lambda`` there is 4 * 91257.186 and the objective is the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.algorithms.base import (
    ANNEALING_HPARAMS, Algorithm, Minibatches, classification_loss, irm_paper_cmnist, register_algorithm, split_by_env,
)
from bench.hparams import NON_NEGATIVE, IntLogUniform, LogUniform

IRM_PAPER_WEIGHT = 91257.18613115903


@register_algorithm("vrex")
class VREx(Algorithm):
    """V-REx (Krueger et al., 2021): mean risk + weight * variance of the environment risks."""

    VERSION = 1
    HPARAMS = {
        "vrex_lambda": LogUniform(1e1, "weight of the variance of the environment risks after annealing", low=1e-1, high=1e5, domain=NON_NEGATIVE),
        "vrex_penalty_anneal_iters": IntLogUniform(500, "steps with penalty weight 1 before vrex_lambda", low=1, high=1e4, base=10.0, domain=NON_NEGATIVE),
        **ANNEALING_HPARAMS,
    }
    DATASET_HPARAMS = {"cmnist_irm": irm_paper_cmnist("vrex_lambda", "vrex_penalty_anneal_iters", weight=4 * IRM_PAPER_WEIGHT)}

    def __init__(self, input_shape, num_classes, num_train_envs, hparams):
        super().__init__(input_shape, num_classes, num_train_envs, hparams)
        self.build_network()
        self.optimizer = self.make_optimizer(self.network.parameters())

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        logits = split_by_env(self.predict(torch.cat([x for x, _ in minibatches])), minibatches)
        nlls = [classification_loss(l, y) for l, (_, y) in zip(logits, minibatches)]
        losses = torch.stack(nlls)
        nll = losses.mean()
        penalty = (losses - nll).pow(2).mean()
        diagnostics = self.head_grad_cos(nlls)
        loss = self.penalised_loss(nll, penalty, self.hparams["vrex_lambda"], self.hparams["vrex_penalty_anneal_iters"])
        self.minimize(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item(), **diagnostics}

    def predict(self, x: Tensor) -> Tensor:
        return self.network(x)
