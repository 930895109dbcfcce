"""SagNet: Reducing Domain Gap by Reducing Style Bias (Nam, Lee, Park, Yoon & Yoo, CVPR 2021,
arXiv:1910.11645), Algorithm 1.

The featurizer is split into a shared front and a last block; a content head and a style head
each own a copy of the last block plus a classifier. Style is the per-channel mean and variance
of the front's feature maps (AdaIN statistics). Each step:
1. content: the content head classifies maps whose style is mixed with another example's
   (statistics interpolated with a U(0, 1) weight); front and content head step;
2. style: the style head classifies maps whose normalised content is swapped with another
   example's (detached); only the style head steps;
3. adversary: the front steps to make the style head's prediction uniform (cross-entropy to
   the uniform distribution, weight ``sag_w_adv``).
The model predicts with front + content head, unrandomised.

Split (bench follows the paper's split, which DomainBed keeps in a commented-out block): a
ResNet before layer4, the MNIST/small/CDSprites CNNs before their last convolution, an MLP
before its last hidden layer (there the style is each example's mean and variance over the
hidden units). DomainBed instead randomises the pooled feature vector for every network, with
single linear heads. The style head's last block is built anew (random, or the same start
weights). Sequence CNNs are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
from bench.hparams import NON_NEGATIVE, LogUniform

SPLITTABLE = ("mlp", "mnist_cnn", "small_cnn", "cdsprites_cnn", "resnet18", "resnet50")


def split_featurizer(featurizer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(front, last block) of a built-in featurizer, so that last(front(x)) == featurizer(x)."""
    if isinstance(featurizer, networks.ResNet):
        net = featurizer.network
        front = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3
        )
        return front, nn.Sequential(net.layer4, net.avgpool, nn.Flatten(), featurizer.dropout)
    layers = getattr(featurizer, "net", None)
    if isinstance(layers, nn.Sequential):
        last = max(i for i, m in enumerate(layers) if isinstance(m, (nn.Conv2d, nn.Linear)))
        if not any(p.requires_grad for p in layers[:last].parameters()):
            raise UserError(
                "sagnet needs a featurizer with at least two weight layers (its style "
                "randomisation sits between them); this one has one (e.g. raise mlp_depth to 2)"
            )
        return layers[:last], layers[last:]
    raise UserError(f"sagnet splits the featurizers {', '.join(SPLITTABLE)}; not this one")


def randomize(maps: Tensor, what: str, eps: float = 1e-5) -> Tensor:
    """Mix each example's style with another's ("style"), or swap its content ("content")."""
    flat = maps.reshape(len(maps), maps.shape[1], -1) if maps.dim() > 2 else maps[:, None]
    mean, var = flat.mean(-1, keepdim=True), flat.var(-1, keepdim=True)
    content = (flat - mean) / (var + eps).sqrt()
    other = torch.randperm(len(maps), device=maps.device)
    if what == "style":
        alpha = torch.rand(len(maps), 1, 1, device=maps.device)
        mean = alpha * mean + (1 - alpha) * mean[other]
        var = alpha * var + (1 - alpha) * var[other]
    else:
        content = content[other].detach()
    return (content * (var + eps).sqrt() + mean).reshape(maps.shape)


@register_algorithm("sagnet")
class SagNet(Algorithm):
    """SagNet (Nam et al., 2021): a content head trained on style-randomised features, with a
    style head the front is adversarial to."""

    VERSION = 1
    FAMILY = "augmentation"
    HPARAMS = {
        "sag_w_adv": LogUniform(
            0.1,
            "weight of the front's adversarial (uniform-style-prediction) loss",
            low=1e-2,
            high=1e1,
            domain=NON_NEGATIVE,
        ),
    }

    def build(self) -> None:
        featurizer = networks.build_featurizer(self.input_shape, self.hparams)
        self.front, content_block = split_featurizer(featurizer)
        _, style_block = split_featurizer(networks.build_featurizer(self.input_shape, self.hparams))
        n_features = featurizer.n_outputs
        self.classifier = networks.build_classifier(n_features, self.num_classes, self.hparams)
        self.content = nn.Sequential(content_block, self.classifier)
        self.style = nn.Sequential(
            style_block, networks.build_classifier(n_features, self.num_classes, self.hparams)
        )
        self.network = nn.Sequential(self.front, self.content)
        self.front_optimizer = self.make_optimizer(self.front.parameters())
        self.content_optimizer = self.make_optimizer(self.content.parameters())
        self.style_optimizer = self.make_optimizer(self.style.parameters())

    def train(self, mode: bool = True) -> "SagNet":
        """Keep a split ResNet's BatchNorm frozen when asked (its wrapper, which did this, is
        gone after the split)."""
        super().train(mode)
        if self.hparams.get("freeze_bn", False):
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def step_on(self, loss: Tensor, modules: list[nn.Module]) -> None:
        """One step of ``modules``' optimisers on ``loss`` + l2 of their parameters."""
        params = [p for m in modules for p in m.parameters()]
        optimizers = {
            self.front: self.front_optimizer,
            self.content: self.content_optimizer,
            self.style: self.style_optimizer,
        }
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        (loss + self.l2_penalty(params)).backward()
        for module in modules:
            optimizers[module].step()

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        x, y = concat_inputs(minibatches), torch.cat([y for _, y in minibatches])
        logits = self.content(randomize(self.front(x), "style"))
        loss_content = classification_loss(logits, y)
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        self.step_on(loss_content, [self.front, self.content])
        loss_style = classification_loss(self.style(randomize(self.front(x), "content")), y)
        self.step_on(loss_style, [self.style])
        logits = self.style(randomize(self.front(x), "content"))
        if logits.shape[1] == 1:  # two classes in one logit: both log-probabilities
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        loss_adv = -self.hparams["sag_w_adv"] * F.log_softmax(logits, dim=1).mean()
        self.step_on(loss_adv, [self.front])
        self.finish_update()
        return {
            "loss_content": loss_content.item(),
            "loss_style": loss_style.item(),
            "loss_adv": loss_adv.item(),
            **diagnostics,
        }
