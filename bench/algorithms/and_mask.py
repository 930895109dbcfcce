"""Gradient masks that keep what the environments agree on.

- ANDMask: Learning Explanations that are Hard to Vary (Parascandolo, Neitz, Orvieto,
  Gresele & Schoelkopf, ICLR 2021, arXiv:2009.00329): a gradient component is kept only
  if the signs of the per-environment gradients agree in at least a fraction ``tau``,
  i.e. |mean_e sign(g_e)| >= tau.
- SAND-mask: An Enhanced Gradient Masking Strategy for the Discovery of Invariances in
  Domain Generalization (Shahtalebi, Gagnon-Audet, Laleh, Faramarzi, Ahuja & Rish, 2021,
  arXiv:2106.02266): the hard mask becomes max(0, tanh(k * (|mean_e sign(g_e)| - tau) /
  var_e(g_e))), shrinking components whose environments disagree in magnitude too.
The update is mask * mean_e(g_e) over every parameter of the network. As DomainBed, each
parameter tensor's masked gradient is divided by the fraction of the mask it keeps (the step
does not shrink as components are masked), var is the unbiased variance across environments
and undefined entries (one environment, or 0 / 0) become 1e-17. One forward pass over the
concatenated environments (DomainBed: one per environment; the same with GroupNorm or
frozen BatchNorm).
"""

from __future__ import annotations

import torch
from torch import Tensor, autograd

from bench.algorithms.base import (
    Algorithm,
    Minibatches,
    concat_inputs,
    env_losses,
    register_algorithm,
)
from bench.hparams import NON_NEGATIVE, Domain, LogUniform, Uniform

UNDEFINED = 1e-17  # DomainBed's value for an undefined variance or mask entry


def and_mask(grads: Tensor, tau: float) -> Tensor:
    """1 where at least a ``tau`` fraction of sign agreement holds; ``grads`` is [envs, ...]."""
    return (grads.sign().mean(dim=0).abs() >= tau).float()


def sand_mask(grads: Tensor, tau: float, k: float) -> Tensor:
    """Smoothed AND-mask in [0, 1): agreement above ``tau``, sharpened by k / variance."""
    variance = torch.nan_to_num(grads.var(dim=0), nan=UNDEFINED)
    agreement = grads.sign().mean(dim=0).abs() - tau
    mask = torch.tanh(k * agreement / variance).clamp_min(0.0)
    return torch.nan_to_num(mask, nan=UNDEFINED)


def masked_mean(grads: Tensor, mask: Tensor) -> Tensor:
    """mask * mean gradient, rescaled by the fraction of the tensor the mask keeps."""
    return mask * grads.mean(dim=0) / (1e-10 + mask.mean())


class GradientMask(Algorithm):
    """Per-environment gradients of the whole network, combined by ``mask``."""

    VERSION = 1
    FAMILY = "gradient matching"

    def mask(self, grads: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        nlls = env_losses(self.predict(concat_inputs(minibatches)), minibatches)
        diagnostics = self.head_grad_cos(nlls)
        params = [p for p in self.network.parameters() if p.requires_grad]
        per_env = [
            autograd.grad(nll, params, retain_graph=True, materialize_grads=True) for nll in nlls
        ]
        kept, total = 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, param in enumerate(params):
            grads = torch.stack([g[i] for g in per_env])
            mask = self.mask(grads)
            param.grad = masked_mean(grads, mask)
            kept, total = kept + float(mask.sum()), total + mask.numel()
        self.apply_gradients()
        nll = torch.stack(nlls).mean()
        return {"nll": nll.item(), "mask_kept": kept / total, **diagnostics}


@register_algorithm("and_mask")
class ANDMask(GradientMask):
    """ANDMask (Parascandolo et al., 2021): step only along sign-consistent gradient components."""

    VERSION = 1
    HPARAMS = {
        "tau": Uniform(
            1.0,
            "fraction of sign agreement across environments a component needs to be kept",
            low=0.5,
            high=1.0,
            domain=Domain(0, 1),
        ),
    }

    def mask(self, grads: Tensor) -> Tensor:
        return and_mask(grads, self.hparams["tau"])


@register_algorithm("sand_mask")
class SANDMask(GradientMask):
    """SAND-mask (Shahtalebi et al., 2021): a smooth ANDMask scaled by the gradients' agreement."""

    VERSION = 1
    HPARAMS = {
        "tau": Uniform(
            1.0,
            "sign agreement at which the mask starts to open",
            low=0.0,
            high=1.0,
            domain=Domain(0, 1),
        ),
        "k": LogUniform(
            10.0, "steepness of the tanh mask", low=1e-3, high=1e5, domain=NON_NEGATIVE
        ),
    }

    def mask(self, grads: Tensor) -> Tensor:
        return sand_mask(grads, self.hparams["tau"], self.hparams["k"])
