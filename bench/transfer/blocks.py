"""A featurizer's "blocks": each weight layer (Linear/Conv) with the norm layers that follow it.

Yosinski et al. (2014) count layers this way (conv1..conv5, fc6, fc7); recipes copy,
freeze or fine-tune blocks by index (``block1`` is nearest the input) or by name.
"""

from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def named_blocks(featurizer: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """``[("block1", [modules...]), ...]`` in forward-definition order; parameter-free modules are
    skipped."""
    blocks: list[list[nn.Module]] = []
    for module in featurizer.modules():
        if (
            next(module.children(), None) is not None
            or next(module.parameters(recurse=False), None) is None
        ):
            continue  # containers and parameter-free layers
        if isinstance(module, WEIGHT_LAYERS) or not blocks:
            blocks.append([module])
        else:
            blocks[-1].append(
                module
            )  # GroupNorm/LayerNorm/BatchNorm belong to the layer before them
    return [(f"block{i + 1}", mods) for i, mods in enumerate(blocks)]


def block_parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters(recurse=False)]


def block_names(featurizer: nn.Module) -> list[str]:
    return [name for name, _ in named_blocks(featurizer)]
