"""ARM-CML: Adaptive Risk Minimization: Learning to Adapt to Domain Shift (Zhang, Marklund, Dhawan,
Gupta, Levine & Finn, NeurIPS 2021, arXiv:2007.02931), the contextual meta-learner, as DomainBed.

A context network maps every input to a context of the input's spatial size (one channel for
images; a vector of the input's size for vectors); the context averaged over a batch from one
environment is appended to each of its inputs, so the model adapts to the batch it predicts.
Training batches are single environments (the paper's meta-training); at prediction time a
batch is cut into groups of ``batch_size`` (DomainBed's support size) when it divides evenly,
else it is one group. DomainBed fixes ``batch_size`` at 8 on its large images.

Networks: images use DomainBed's ContextNet (5x5 convs 64, 64, 1 with BatchNorm); the
featurizer gets one more input channel (a pretrained ResNet keeps its weights, the new channel
starting as a copy of channel 0's filters, as DomainBed). Vectors (bench's addition: DomainBed
has no vector datasets) use an MLP context of the input's size. Sequences are refused.

Deviation from DomainBed: its context network is created after the optimiser, so it is never
trained (a fixed random network); bench trains it with the model, as the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench import networks
from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.errors import UserError


def context_net(input_shape: tuple[int, ...]) -> nn.Module:
    """Inputs -> one context channel of the same spatial size (images) or a same-size vector."""
    if len(input_shape) == 3:
        layers: list[nn.Module] = []
        for c_in, c_out in ((input_shape[0], 64), (64, 64)):
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2), nn.BatchNorm2d(c_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.Conv2d(64, 1, 5, padding=2))
    if len(input_shape) == 1:
        n = input_shape[0]
        return nn.Sequential(
            nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n)
        )
    raise UserError(
        f"arm needs vector inputs or images (C, H, W); this dataset's inputs are {input_shape}"
    )


def add_input_channel(featurizer: nn.Module) -> None:
    """Give the first convolution one more input channel, a copy of channel 0's filters."""
    conv = next(m for m in featurizer.modules() if isinstance(m, nn.Conv2d))
    wider = nn.Conv2d(
        conv.in_channels + 1,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        wider.weight.copy_(torch.cat([conv.weight, conv.weight[:, :1]], dim=1))
        if conv.bias is not None:
            wider.bias.copy_(conv.bias)
    for module in featurizer.modules():
        for name, child in module.named_children():
            if child is conv:
                setattr(module, name, wider)


@register_algorithm("arm")
class ARM(Algorithm):
    """ARM-CML (Zhang et al., 2021): append the batch-averaged output of a context network."""

    VERSION = 1
    FAMILY = "meta-learning"

    def build_network(self) -> None:
        self.context_net = context_net(self.input_shape)
        channels, *rest = self.input_shape
        pretrained = self.hparams.get("weights", "none") != "none"
        if len(self.input_shape) == 1:
            shape: tuple[int, ...] = (2 * channels,)
        else:
            shape = self.input_shape if pretrained else (channels + 1, *rest)
        self.featurizer = networks.build_featurizer(shape, self.hparams)
        if pretrained and len(self.input_shape) == 3:
            add_input_channel(self.featurizer)
        self.classifier = networks.build_classifier(
            self.featurizer.n_outputs, self.num_classes, self.hparams
        )
        self.network = nn.Sequential(self.featurizer, self.classifier)

    def parameters_to_optimize(self):
        return list(self.network.parameters()) + list(self.context_net.parameters())

    def with_context(self, x: Tensor, group_sizes: list[int]) -> Tensor:
        """Each input with its group's mean context appended (groups are consecutive rows)."""
        context = self.context_net(x)
        means = [c.mean(dim=0, keepdim=True).expand_as(c) for c in context.split(group_sizes)]
        return torch.cat([x, torch.cat(means)], dim=1)

    def predict(self, x: Tensor) -> Tensor:
        support = self.hparams["batch_size"]
        if support and len(x) % support == 0:
            groups = [support] * (len(x) // support)
        else:
            groups = [len(x)]
        return self.network(self.with_context(x, groups))

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        x = self.with_context(concat_inputs(minibatches), [len(y) for _, y in minibatches])
        logits = self.network(x)
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        loss = self.minimize(nll)
        return {"loss": loss.item(), "nll": nll.item(), **diagnostics}
