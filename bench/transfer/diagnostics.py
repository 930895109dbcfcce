"""Per-block diagnostics of adaptation: how far, and in which direction, each block moved.

For every block (featurizer blocks and the head), against its weights when adaptation
started (the pretrained weights for copied blocks, the initialisation otherwise):
``dw_rel`` = ||W - W0|| / ||W0||, ``angle`` = angle(W, W0) in degrees, ``grad`` = ||dL/dW||
(0 for frozen blocks). Measured every step and, like every training statistic, averaged
over the steps since the previous evaluation in the record's ``train`` dict.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _flat(params: list[nn.Parameter]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


class BlockDiagnostics:
    """Measures ``diag/<block>/{dw_rel,angle,grad}`` for named parameter groups."""

    def __init__(self, groups: dict[str, list[nn.Parameter]]) -> None:
        self.groups = groups
        self.reference: dict[str, Tensor] = {}
        self.set_reference()

    def set_reference(self) -> None:
        """Take the current weights as W0 (called again after pretrained weights are loaded)."""
        self.reference = {name: _flat(params).clone() for name, params in self.groups.items()}

    @torch.no_grad()
    def measure(self) -> dict[str, float]:
        """Call after ``backward`` and before the optimiser step."""
        values = []
        for name, params in self.groups.items():
            w, w0 = _flat(params), self.reference[name]
            grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
            grad = torch.cat(grads).norm() if grads else torch.zeros((), device=w.device)
            cos = torch.nn.functional.cosine_similarity(w, w0, dim=0).clamp(-1.0, 1.0)
            values.append(
                torch.stack(
                    [
                        (w - w0).norm() / w0.norm().clamp_min(1e-12),
                        torch.rad2deg(torch.arccos(cos)),
                        grad,
                    ]
                )
            )
        table = torch.stack(values).tolist()
        out = {}
        for name, (dw_rel, angle, grad) in zip(self.groups, table):
            out[f"diag/{name}/dw_rel"], out[f"diag/{name}/angle"], out[f"diag/{name}/grad"] = (
                dw_rel,
                angle,
                grad,
            )
        return out
