"""Which runs the batched engine can train: a network of Linear and ReLU modules and one plain
Adam over its weights (``train._vectorisable`` adds the run's own conditions)."""

from __future__ import annotations

import torch
from torch import nn

from bench.algorithms import Algorithm


def network_layers(algorithm: Algorithm) -> list[nn.Module] | None:
    """The network as a flat list of Linear and ReLU modules (Flatten of vectors dropped); None
    for anything else."""
    if len(algorithm.input_shape) != 1:
        return None
    out = []
    for module in algorithm.network.modules():
        if list(module.children()):
            continue
        if isinstance(module, nn.Linear) and module.bias is not None:
            out.append(module)
        elif isinstance(module, nn.ReLU):
            out.append(module)
        elif not isinstance(module, nn.Flatten):
            return None
    return out if out and isinstance(out[-1], nn.Linear) else None


def plain_adam(algorithm: Algorithm, layers: list[nn.Module]) -> bool:
    """One Adam over exactly the layers' weights and biases, in their order, with the defaults
    ``BatchedERM`` reproduces."""
    opt = algorithm.optimizer
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or opt.state:
        return False
    group = opt.param_groups[0]
    params = [p for m in layers if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
    return (
        len(group["params"]) == len(params)
        and all(a is b for a, b in zip(group["params"], params))
        and group["betas"] == (0.9, 0.999)
        and group["eps"] == 1e-8
        and not any(group[k] for k in ("amsgrad", "maximize", "foreach", "fused", "capturable"))
        and not group["differentiable"]
        and not group.get("decoupled_weight_decay", False)
    )
