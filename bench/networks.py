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
from bench.params import AT_LEAST_ONE, DROPOUT, Choice, Fixed, IntLogUniform, Param, Setting
from bench.start_weights import NONE, load_resnet_weights

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
    """The featurizer named by ``hparams['featurizer']``; missing keys take that featurizer's
    defaults."""
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
            nn.Linear(n_features, n_features // 2),
            nn.ReLU(),
            nn.Linear(n_features // 2, n_features // 4),
            nn.ReLU(),
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
    """``depth`` blocks of Linear -> ReLU -> Dropout on the flattened input; output size
    ``width``."""

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
        "mlp_width": IntLogUniform(256, "hidden width", low=64, high=1024, domain=AT_LEAST_ONE),
        "mlp_depth": Choice(
            3, "number of hidden Linear+ReLU blocks", options=(3, 4, 5), domain=AT_LEAST_ONE
        ),
        "mlp_dropout": Choice(
            0.0, "dropout after each hidden block", options=(0.0, 0.1, 0.5), domain=DROPOUT
        ),
    },
)
def _mlp(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    n_inputs = 1
    for d in input_shape:
        n_inputs *= d
    return MLP(n_inputs, hp["mlp_width"], hp["mlp_depth"], hp["mlp_dropout"])


class MNISTCNN(nn.Module):
    """DomainBed's MNIST CNN: 3x3 convs 64, 128 (stride 2), 128, 128; each ReLU then GroupNorm(8);
    GAP -> 128."""

    n_outputs = 128

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels = [input_shape[0], 64, 128, 128, 128]
        strides = [1, 2, 1, 1]
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels, channels[1:], strides):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                nn.ReLU(),
                nn.GroupNorm(8, c_out),
            ]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_featurizer("mnist_cnn")
def _mnist_cnn(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    return MNISTCNN(input_shape)


SHARED_HEAD_SPACE: dict[str, Param] = {
    "nonlinear_classifier": Fixed(False, "DomainBed's 3-layer MLP head instead of a linear one"),
    "init": Setting(
        "default",
        "weight init: torch default, or xavier-uniform with zero bias (not searched: "
        "DomainBed has no such key)",
        options=("default", "xavier"),
    ),
}


class ConvBlocks(nn.Module):
    """2D convolutions, each followed by ReLU (and GroupNorm(8) when ``norm``), then global average
    pooling.

    ``specs`` lists (out_channels, kernel, stride, padding) per layer.
    """

    def __init__(
        self,
        in_channels: int,
        specs: list[tuple[int, int, int, int]],
        norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for out_channels, kernel, stride, padding in specs:
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding),
                nn.ReLU(),
            ]
            if norm:
                layers.append(nn.GroupNorm(8, out_channels))
            in_channels = out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.n_outputs = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_featurizer("cdsprites_cnn")
def _cdsprites_cnn(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    """The CDSprites-N CNN of Shi et al. (Fish, 2022): five 4x4 stride-2 convs 32, 32, 64, 128, 128
    -> 128."""
    specs = [(32, 4, 2, 1), (32, 4, 2, 1), (64, 4, 2, 1), (128, 4, 2, 1), (128, 4, 2, 0)]
    return ConvBlocks(input_shape[0], specs)


@register_featurizer(
    "small_cnn",
    {
        "cnn_width": Choice(
            32,
            "channels of the first conv; doubles at blocks 2 and 3",
            options=(16, 32, 64),
            domain=AT_LEAST_ONE,
        ),
        "cnn_dropout": Choice(
            0.0, "dropout on the pooled features", options=(0.0, 0.1, 0.5), domain=DROPOUT
        ),
    },
)
def _small_cnn(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    """A CPU-sized image CNN: four 3x3 stride-2 convs (w, 2w, 4w, 4w) with GroupNorm, average
    pooled."""
    w = hp["cnn_width"]
    specs = [(w, 3, 2, 1), (2 * w, 3, 2, 1), (4 * w, 3, 2, 1), (4 * w, 3, 2, 1)]
    return ConvBlocks(input_shape[0], specs, norm=True, dropout=hp["cnn_dropout"])


class ResNet(nn.Module):
    """torchvision ResNet-18/50 without its final layer, started from ``weights`` (see
    bench/start_weights.py)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        depth: int,
        weights: str,
        dropout: float,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn
        import torchvision  # lazy: slow to import, and only the ResNet featurizers need it

        factory = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
        self.network = factory(weights=None)
        if input_shape[0] != 3:
            if weights != NONE:
                raise UserError(
                    f"start weights need 3 input channels; this dataset has {input_shape[0]}"
                )
            self.network.conv1 = nn.Conv2d(
                input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False
            )
        load_resnet_weights(self.network, depth, weights)
        self.n_outputs = self.network.fc.in_features
        self.network.fc = nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.network(x))

    def train(self, mode: bool = True) -> "ResNet":
        """DomainBed keeps BatchNorm in eval mode while training (its ``freeze_bn``): running stats
        stay ImageNet's."""
        super().train(mode)
        if self.freeze_bn:
            for module in self.network.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


_RESNET_SPACE: dict[str, Param] = {
    "weights": Fixed(
        "none",
        "start weights: none (random), imagenet (torchvision IMAGENET1K_V1, cached or "
        "downloaded), or a state_dict file (--weights)",
    ),
    "resnet_dropout": Choice(
        0.0,
        "dropout on the pooled features (DomainBed's search)",
        options=(0.0, 0.1, 0.5),
        domain=DROPOUT,
    ),
    "freeze_bn": Setting(
        False,
        "BatchNorm layers stay in eval mode while training (DomainBed's ResNet)",
        options=(False, True),
    ),
}


@register_featurizer("resnet18", _RESNET_SPACE)
def _resnet18(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    return ResNet(input_shape, 18, hp["weights"], hp["resnet_dropout"], hp["freeze_bn"])


@register_featurizer("resnet50", _RESNET_SPACE)
def _resnet50(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    return ResNet(input_shape, 50, hp["weights"], hp["resnet_dropout"], hp["freeze_bn"])


class SeqCNN(nn.Module):
    """1D CNN for one-hot DNA (4 x L): same-padded convs + ReLU, max-pool 2 after the first two;
    global max and mean pooling concatenated (motif presence and composition) -> 2 * width."""

    def __init__(
        self, in_channels: int, width: int, depth: int, kernel: int, dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv1d(in_channels if i == 0 else width, width, kernel, padding=kernel // 2),
                nn.ReLU(),
            ]
            if i < 2:
                layers.append(nn.MaxPool1d(2, ceil_mode=True))
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.n_outputs = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)
        return self.dropout(torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1))


@register_featurizer(
    "seq_cnn",
    {
        "seq_width": Choice(
            64, "channels of every conv layer", options=(32, 64, 128), domain=AT_LEAST_ONE
        ),
        "seq_depth": Choice(
            3,
            "number of conv layers (the first two are followed by max-pool 2)",
            options=(2, 3, 4),
            domain=AT_LEAST_ONE,
        ),
        "seq_kernel": Choice(
            9, "convolution width in bases", options=(5, 9, 15), domain=AT_LEAST_ONE
        ),
        "seq_dropout": Choice(
            0.0, "dropout on the pooled features", options=(0.0, 0.1, 0.5), domain=DROPOUT
        ),
    },
)
def _seq_cnn(input_shape: tuple[int, ...], hp: Mapping[str, Any]) -> nn.Module:
    return SeqCNN(
        input_shape[0], hp["seq_width"], hp["seq_depth"], hp["seq_kernel"], hp["seq_dropout"]
    )
