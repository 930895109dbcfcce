"""MAML (Finn, Abbeel & Levine, ICML 2017): learn an initialisation from which a few gradient
steps on a support set fit the task.

Inner loop: ``theta' = theta - inner_lr * grad L_support(theta)``, ``inner_steps`` times.
Outer loop: Adam on the query loss at ``theta'``, averaged over ``meta_batch`` episodes.
The second-order meta-gradient differentiates through the inner gradients
(``create_graph=True``); ``first_order`` drops those terms (FOMAML: the query gradient at
``theta'`` is applied to ``theta``). The paper's mini-ImageNet settings: inner lr 0.01, 5
inner steps when meta-training and 10 at test, meta-batch 4, Adam 1e-3; Omniglot used inner
lr 0.4 and 1 step. The head has ``way`` outputs and is adapted with the rest.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bench.hparams import AT_LEAST_ONE, POSITIVE, Choice, Fixed, LogUniform, Setting
from bench.meta.base import Draw, MetaMethod, register_method
from bench.meta.episodes import Episode

Params = dict[str, Tensor]


def inner_loop(
    net: nn.Module, params: Params, x: Tensor, y: Tensor, steps: int, lr: float, create_graph: bool
) -> Params:
    """``steps`` plain gradient steps on (x, y) from ``params``; differentiable in ``params``
    through the gradients themselves only when ``create_graph``."""
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(net, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    return params


def query_loss(
    net: nn.Module, params: Params, episode: Episode, steps: int, lr: float, first_order: bool
) -> Tensor:
    """The MAML objective of one episode: query loss after adapting ``params`` on its support."""
    fast = inner_loop(net, params, episode.support_x, episode.support_y, steps, lr, not first_order)
    return F.cross_entropy(functional_call(net, fast, (episode.query_x,)), episode.query_y)


@register_method("maml")
class MAML(MetaMethod):
    REFERENCE = "Finn et al. 2017, Model-Agnostic Meta-Learning (ICML), section 5.2"
    HPARAMS = {
        "inner_lr": LogUniform(
            0.1, "inner-loop SGD step size", low=0.01, high=0.5, domain=POSITIVE
        ),
        "inner_steps": Choice(
            5, "inner steps when meta-training", options=(1, 3, 5), domain=AT_LEAST_ONE
        ),
        "test_inner_steps": Fixed(
            10, "inner steps on a meta-val/test support set", domain=AT_LEAST_ONE
        ),
        "meta_batch": Choice(4, "episodes per meta-update", options=(2, 4, 8), domain=AT_LEAST_ONE),
        "first_order": Setting(False, "drop second-order terms (FOMAML)", options=(False, True)),
    }

    def __init__(
        self, input_shape: tuple[int, ...], way: int, n_classes: int, hparams: Mapping[str, Any]
    ) -> None:
        super().__init__(input_shape, way, n_classes, hparams)
        self.head = nn.Linear(self.featurizer.n_outputs, way)
        self.net = nn.Sequential(self.featurizer, self.head)
        self.make_optimizer()

    def meta_update(self, draw: Draw) -> dict[str, float]:
        episodes = draw.episodes(self.hparams["meta_batch"])
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for episode in episodes:  # one backward per episode: the graph of one inner loop at a time
            loss = query_loss(
                self.net,
                dict(self.net.named_parameters()),
                episode,
                self.hparams["inner_steps"],
                self.hparams["inner_lr"],
                self.hparams["first_order"],
            )
            (loss / len(episodes)).backward()
            total += loss.item() / len(episodes)
        self.optimizer.step()
        self.step += 1
        return {"loss": total}

    def adapt_predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        with torch.enable_grad():
            params = {n: p.detach().requires_grad_() for n, p in self.net.named_parameters()}
            fast = inner_loop(
                self.net,
                params,
                support_x,
                support_y,
                self.hparams["test_inner_steps"],
                self.hparams["inner_lr"],
                create_graph=False,
            )
        with torch.no_grad():
            return functional_call(self.net, fast, (query_x,))
