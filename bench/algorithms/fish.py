"""Fish: Gradient Matching for Domain Generalization (Shi, Seely, Torr, Siddharth, Hannun,
Usunier & Synnaeve, ICLR 2022, arXiv:2104.09937), Algorithm 2.

Each step copies the model, takes one Adam step per training environment on the copy
(in environment order, one minibatch each), then moves the model towards the copy:
theta <- theta + meta_lr * (theta_inner - theta). A first-order approximation of IDGM
(see idgm.py): it increases the inner product of per-environment gradients.

As DomainBed: the inner Adam's state persists across steps (the authors' code reloads it
when ``reload_inner_optim``); meta_lr is not divided by the number of inner steps (the
authors' code divides it by ``meta_steps``); the outer model has no optimiser of its own.
``grad_cos`` is measured at theta before the inner loop, from one extra forward pass.
"""

from __future__ import annotations

import copy

import torch

from bench.algorithms.base import Algorithm, Minibatches, classification_loss, register_algorithm
from bench.hparams import POSITIVE, Choice


@register_algorithm("fish")
class Fish(Algorithm):
    """Fish (Shi et al., 2022): one inner step per environment on a copy, then a meta step towards
    it."""

    VERSION = 1
    FAMILY = "gradient matching"
    HPARAMS = {
        "meta_lr": Choice(
            0.5,
            "step size of the meta update towards the inner-loop weights",
            options=(0.05, 0.1, 0.5),
            domain=POSITIVE,
        ),
    }

    def build(self) -> None:
        """No outer optimiser: the inner copy has its own Adam; it is reloaded each step."""
        self.build_network()
        self.inner = copy.deepcopy(self.network)
        self.inner_optimizer = self.make_optimizer(self.inner.parameters())

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        diagnostics = self.head_grad_cos_at(minibatches)
        self.inner.load_state_dict(self.network.state_dict())
        losses = []
        for x, y in minibatches:
            loss = classification_loss(self.inner(x), y) + self.l2_penalty(self.inner.parameters())
            self.inner_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.inner_optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            for meta, inner in zip(self.network.parameters(), self.inner.parameters()):
                meta.add_(inner - meta, alpha=self.hparams["meta_lr"])
            for meta, inner in zip(self.network.buffers(), self.inner.buffers()):
                meta.copy_(inner)
        self.finish_update()
        return {"loss": sum(losses) / len(losses), **diagnostics}
