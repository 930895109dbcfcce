"""Featurizers (input -> feature vector) and classifier heads.

Each featurizer is registered by name with the hyperparameters it reads; datasets
name their default featurizer and algorithms build it from the resolved hparams,
so every algorithm runs on every dataset.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from bench.errors import UserError
from bench.hparams import Choice, Fixed, IntLogUniform, Param

FeaturizerFactory = Callable[[tuple[int, ...], Mapping[str, Any]], nn.Module]
_FEATURIZERS: dict[str, tuple[FeaturizerFactory, dict[str, Param]]] = {}


def register_featurizer(name: str, space: dict[str, Param] | None = None):
    """Register ``factory(input_shape, hparams) -> nn.Module`` with attribute ``n_outputs``."""

    def decorator(factory: FeaturizerFactory) -> FeaturizerFactory:
        if name in _FEATURIZERS:
            raise ValueError(f"featurizer {name!r} already registered")
        _FEATURIZERS[name] = (factory, dict(space or {}))
        return factory

    return decorator


def featurizer_names() -> list[str]:
    return sorted(_FEATURIZERS)


def featurizer_space(name: str) -> dict[str, Param]:
    if name not in _FEATURIZERS:
        raise UserError(f"unknown featurizer {name!r}; known: {', '.join(featurizer_names())}")
    return dict(_FEATURIZERS[name][1])


def build_featurizer(input_shape: tuple[int, ...], hparams: Mapping[str, Any]) -> nn.Module:
    """The featurizer named by ``hparams['featurizer']``; missing keys take that featurizer's defaults."""
    name = hparams["featurizer"]
    factory, space = _FEATURIZERS.get(name, (None, {}))
    if factory is None:
        raise UserError(f"unknown featurizer {name!r}; known: {', '.join(featurizer_names())}")
    resolved = {key: param.default for key, param in space.items()}
    resolved.update({k: v for k, v in hparams.items() if k in space})
    net = factory(tuple(input_shape), resolved)
    if hparams.get("init", "default") == "xavier":
        xavier_init_(net)
    return net


def build_classifier(n_features: int, n_outputs: int, hparams: Mapping[str, Any]) -> nn.Module:
    """Linear head, or DomainBed's 3-layer nonlinear head when ``nonlinear_classifier``."""
    if hparams.get("nonlinear_classifier", False):
        head: nn.Module = nn.Sequential(
            nn.Linear(n_features, n_features // 2), nn.ReLU(),
            nn.Linear(n_features // 2, n_features // 4), nn.ReLU(),
            nn.Linear(n_features // 4, n_outputs),
        )
    else:
        head = nn.Linear(n_features, n_outputs)
    if hparams.get("init", "default") == "xavier":
        xavier_init_(head)
    return head


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases on every Linear layer (the IRM paper's MLP init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """``depth`` blocks of Linear -> ReLU -> Dropout on the flattened input; output size ``width``."""

    def __init__(self, n_inputs: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(n_inputs if i == 0 else width, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.n_outputs = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_featurizer(
    "mlp",
    {
        "mlp_width": IntLogUniform(256, "hidden width", low=64, high=1024),
        "mlp_depth": Choice(3, "number of hidden Linear+ReLU blocks", options=(3, 4, 5)),
        "mlp_dropout": Choice(0.0, "dropout after each hidden block", options=(0.0, 0.1, 0.5)),
    },
)
def _mlp(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    n_inputs = 1
    for d in input_shape:
        n_inputs *= d
    return MLP(n_inputs, hp["mlp_width"], hp["mlp_depth"], hp["mlp_dropout"])


class MNISTCNN(nn.Module):
    """DomainBed's MNIST CNN: 3x3 convs 64, 128 (stride 2), 128, 128; each ReLU then GroupNorm(8); GAP -> 128."""

    n_outputs = 128

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels = [input_shape[0], 64, 128, 128, 128]
        strides = [1, 2, 1, 1]
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels, channels[1:], strides):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(), nn.GroupNorm(8, c_out)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_featurizer("mnist_cnn")
def _mnist_cnn(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    return MNISTCNN(input_shape)


SHARED_HEAD_SPACE: dict[str, Param] = {
    "nonlinear_classifier": Fixed(False, "DomainBed's 3-layer MLP head instead of a linear one"),
    "init": Choice("default", "weight init: torch default, or xavier-uniform with zero bias", options=("default", "xavier")),
}
