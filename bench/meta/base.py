"""The meta-learning method contract: meta-train step by step, then adapt to one episode.

A method is built from (input shape, way, number of meta-train classes, hparams). Each
step the runner hands ``meta_update`` a ``Draw`` bound to that step, from which the method
takes what it trains on: episodes of the meta-train split (MAML, ProtoNets) or ordinary
class-labelled minibatches of the meta-train classes (the fine-tuning baselines).
``adapt_predict`` learns from one support set and returns logits for its queries; it may
train (MAML's inner loop, a probe) but must leave the method's own weights unchanged.
The runner seeds torch's global RNG before every step and every episode, so neither
depends on what ran before: that is what makes resume exact without saved RNG state.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor, nn

from bench.hparams import POSITIVE, LogUniform, Param
from bench.meta.episodes import Episode
from bench.networks import build_featurizer
from bench.registry import Registry

METHODS: Registry["MetaMethod"] = Registry("meta-learning method", "bench.meta.methods")
register_method = METHODS.register


class Draw:
    """What one meta-training step may sample: episodes of the train split, or a minibatch."""

    def __init__(
        self,
        episode: Callable[[int], Episode],
        batch: Callable[[int], tuple[Tensor, Tensor]],
    ) -> None:
        self._episode, self._batch = episode, batch

    def episodes(self, n: int) -> list[Episode]:
        return [self._episode(i) for i in range(n)]

    def batch(self, size: int) -> tuple[Tensor, Tensor]:
        return self._batch(size)


class MetaMethod(nn.Module):
    """Base: the featurizer named by the hparams, an Adam meta-optimiser and the step counter."""

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    REFERENCE: ClassVar[str] = ""
    META_TRAINS: ClassVar[bool] = True  # False: nothing to learn before the episodes (scratch)
    HPARAMS: ClassVar[dict[str, Param]] = {
        "lr": LogUniform(
            1e-3, "Adam meta/pretraining learning rate", low=1e-4, high=1e-2, domain=POSITIVE
        ),
    }

    def __init__(
        self, input_shape: tuple[int, ...], way: int, n_classes: int, hparams: Mapping[str, Any]
    ) -> None:
        super().__init__()
        self.input_shape, self.way, self.n_classes = tuple(input_shape), way, n_classes
        self.hparams = dict(hparams)
        self.featurizer = build_featurizer(input_shape, hparams)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def make_optimizer(self) -> None:
        """Call at the end of a subclass's ``__init__``, once every trained module exists."""
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])

    def meta_update(self, draw: Draw) -> dict[str, float]:
        raise NotImplementedError

    def adapt_predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        raise NotImplementedError

    def optimise(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1

    def checkpoint_state(self) -> dict[str, Any]:
        """Weights and optimiser state: tensors and plain types (loads with weights_only)."""
        state = {"model": self.state_dict()}
        if hasattr(self, "optimizer"):
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


def train_on_support(
    module: nn.Module,
    support_x: Tensor,
    support_y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
) -> None:
    """``epochs`` passes over the support set in shuffled minibatches (Chen et al. 2019's
    fine-tuning loop); shuffles draw from torch's global RNG, seeded per episode."""
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(support_y))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(support_x[idx], support_y[idx]).backward()
            optimizer.step()
