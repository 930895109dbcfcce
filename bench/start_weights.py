"""Start weights for torchvision ResNets: ``none``, ``imagenet`` or a state-dict file
(``--weights``).

ImageNet weights are never required: they come from torchvision's cache
(``$TORCH_HOME/hub/checkpoints``), downloaded there only when the network allows,
and a missing file is a clear error naming the URL and the folder. A file given by
path is recorded with its SHA-256 (``path@sha256:<hex>``), so the run id changes
when the file does and a run never resumes from different start weights.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import nn

from bench.downloads import require_host
from bench.errors import UserError, reason

NONE, IMAGENET = "none", "imagenet"
_DIGEST = "@sha256:"
_WHAT_TO_PASS = (
    "pass 'imagenet' (torchvision's ImageNet weights), 'none', "
    "or a file saved with torch.save(model.state_dict(), PATH)"
)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def weights_value(text: str) -> str:
    """The hparam value for ``--weights TEXT``: ``none``/``imagenet`` as given, a file as
    ``abs path@sha256:<hex>``."""
    if text in (NONE, IMAGENET):
        return text
    path = Path(text).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"--weights {text}: no such file; {_WHAT_TO_PASS}")
    read_state_dict(path)  # a file that is not a state dict fails here, before any run directory
    return f"{path}{_DIGEST}{file_digest(path)}"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save``d state dict (or its ``state_dict`` entry), else UserError."""
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the one error line says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign file raises many types (pickle, zip, EOF, key errors)
        message = f"--weights {path} is not a torch state_dict ({reason(exc)})"
        raise UserError(f"{message}; {_WHAT_TO_PASS}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    named = isinstance(state, dict) and state and all(isinstance(k, str) for k in state)
    if not (named and all(isinstance(v, torch.Tensor) for v in state.values())):
        kind = type(state).__name__
        message = f"--weights {path} holds a {kind}, not a state_dict of named tensors"
        raise UserError(f"{message}; {_WHAT_TO_PASS}")
    return state


def imagenet_state(depth: int) -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V1 ResNet-``depth`` weights, from its cache or downloaded into
    it."""
    import torchvision

    enum = {18: torchvision.models.ResNet18_Weights, 50: torchvision.models.ResNet50_Weights}[
        depth
    ].IMAGENET1K_V1
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if (
        not target.exists()
    ):  # offline, fail in seconds with what to fetch, not after a minute of retries
        require_host(
            enum.url,
            f"ImageNet weights for resnet{depth}",
            f"{target.parent} (or pass --weights PATH or --weights none)",
        )
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except (
        Exception
    ) as exc:  # offline, proxy or a corrupt partial download: say what to fetch and where
        raise UserError(
            f"ImageNet weights for resnet{depth} are not in torchvision's cache and could "
            f"not be downloaded ({type(exc).__name__}: {exc}). "
            f"Download {enum.url} to {target} (the folder is "
            "$TORCH_HOME/hub/checkpoints), or pass --weights PATH to a state_dict, or "
            "--weights none"
        ) from None


def file_state(value: str) -> dict[str, torch.Tensor]:
    """The state dict of ``path@sha256:<hex>``, checked against the digest recorded in the run's
    spec."""
    path_text, _, digest = value.partition(_DIGEST)
    path = Path(path_text)
    if not path.is_file():
        raise UserError(
            f"start weights {path} not found; this run was started with that file (sha256 "
            f"{digest or '?'})"
        )
    if digest and file_digest(path) != digest:
        raise UserError(
            f"start weights {path} changed since this run was specified (sha256 {digest} "
            "expected); pass --weights again for a new run"
        )
    return read_state_dict(path)


def load_resnet_weights(network: nn.Module, depth: int, value: str) -> None:
    """Load ``value``'s weights into a torchvision ResNet whose ``fc`` is replaced (``fc.*`` keys
    are dropped)."""
    if value == NONE:
        return
    state = imagenet_state(depth) if value == IMAGENET else file_state(value)
    state = {k.removeprefix("module.").removeprefix("network."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise UserError(
            f"start weights {value} do not fit resnet{depth}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
