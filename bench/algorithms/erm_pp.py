"""ERM++: An Improved Baseline for Domain Generalization (Teterwak, Saito, Tsiligkaridis, Saenko &
Plummer, 2023, arXiv:2304.01973), the parts that make sense without ImageNet weights, as
DomainBed's ``ERMPlusPlus``.

Implemented:
- **Warm start by linear probing**: for the first ``linear_steps`` steps only the classifier
  trains (its own Adam, lr ``linear_lr``), then the whole network (Adam, ``lr``). This protects
  start weights from a random head's gradients; from random weights it only delays training
  (set ``linear_steps`` to 0 there), but it applies to any start weights (``--weights``).
- **Model parameter averaging**: predictions come from a running average of the weights
  (buffers included) from step 600 on (DomainBed's fixed start; before it the average is a copy
  of the current weights). When the network has BatchNorm layers in training mode, each step
  the average also runs one training-mode forward pass to refresh its running statistics.
- **BatchNorm unfrozen** is bench's ``freeze_bn`` False (the default outside the DomainBed
  image protocols, which freeze it for every algorithm).

Not implemented, because they need ImageNet-scale pretraining or are not part of an
algorithm: stronger initialisations (AugMix-trained ResNet-50, ``resnet50_augmix``; DINOv2
ViTs and their attention-only tuning), the LARS optimiser option (off in DomainBed), training on
the in and out splits together ("full data", a protocol choice) and the automatic learning-rate
schedule on validation loss (DomainBed's train_autolr.py, not its train.py).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    classification_loss,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import NON_NEGATIVE, POSITIVE, Fixed, LogUniform

AVERAGE_FROM = 600  # DomainBed's ErmPlusPlusMovingAvg.sma_start_iter (not searched)


@register_algorithm("erm_pp")
class ERMPlusPlus(Algorithm):
    """ERM++ (Teterwak et al., 2023): linear-probe warm start, then ERM with weight averaging."""

    VERSION = 1
    FAMILY = "baseline"
    HPARAMS = {
        "linear_lr": LogUniform(
            5e-5,
            "Adam lr of the linear-probing warm start",
            low=1e-5,
            high=10**-3.5,
            domain=POSITIVE,
        ),
        "linear_steps": Fixed(500, "steps that train only the classifier", domain=NON_NEGATIVE),
    }

    def build(self) -> None:
        super().build()
        self.linear_optimizer = self.make_optimizer(
            self.classifier.parameters(), lr=self.hparams["linear_lr"]
        )
        self.average = copy.deepcopy(self.network).requires_grad_(False)
        self.register_buffer("averaged", torch.zeros((), dtype=torch.long))
        self.refresh_bn = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.network.modules()
        )

    def update_average(self, start: bool) -> None:
        """Uniform average of the weights once ``start``ed (from AVERAGE_FROM on); a copy before."""
        if start:
            self.averaged += 1
        n = int(self.averaged)
        with torch.no_grad():
            current = self.network.state_dict()
            for name, avg in self.average.state_dict().items():
                if name.endswith("num_batches_tracked"):
                    continue
                avg.copy_((avg * n + current[name]) / (n + 1) if n else current[name])

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        x = concat_inputs(minibatches)
        logits = self.network(x)
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        diagnostics = self.head_grad_cos(env_losses(logits, minibatches))
        probing = int(self.step) <= self.hparams["linear_steps"]
        averaging = int(self.step) + 1 >= AVERAGE_FROM
        optimizer = self.linear_optimizer if probing else self.optimizer
        loss = self.minimize(nll + self.l2_penalty(self.network.parameters()), optimizer)
        self.update_average(averaging)
        if self.refresh_bn:  # bench's ResNet keeps BatchNorm in eval mode when freeze_bn
            with torch.no_grad():
                self.average.train()(x)
        return {"loss": loss.item(), "nll": nll.item(), "probing": float(probing), **diagnostics}

    def predict(self, x: Tensor) -> Tensor:
        return self.average.eval()(x)
