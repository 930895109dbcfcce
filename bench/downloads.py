"""Network reachability before a download: one clear error within seconds when offline.

Shared by the dataset loaders (``bench.datasets``) and the start weights of the networks
(``bench.start_weights``), so it sits below both.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from bench.errors import DataNotFoundError, UserError

HUB_URL = "https://huggingface.co"


def require_host(url: str, what: str, where: Path | str, timeout_s: float = 3.0) -> None:
    """DataNotFoundError within ``timeout_s`` when ``url``'s host (or https proxy) is unreachable.

    Offline, a download would otherwise hang for about a minute in retries before failing.
    """
    parsed = urllib.parse.urlsplit(urllib.request.getproxies().get("https") or url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    problem = unreachable(parsed.hostname or "", port, timeout_s)
    if problem:
        raise DataNotFoundError(
            f"cannot download {what}: {parsed.hostname}:{port} is unreachable ({problem}). "
            f"Fetch {url} on a machine with network access and put it in {where}"
        )


def unreachable(host: str, port: int, timeout_s: float) -> str | None:
    """Why ``host:port`` takes no TCP connection within ``timeout_s`` (lookup included), or None."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def hub_precheck(what: str, where: Path | str) -> None:
    """One UserError line, before anything heavy is imported, when a hub dataset cannot load:
    the ``datasets`` package is missing, or (unless HF_*_OFFLINE asks for the cache) the hub
    is unreachable. The CLI calls it before the registries import torch, so it takes < 1 s."""
    purpose = f"downloading {what}"
    if not _importable("datasets"):
        raise UserError(install_hint(purpose))
    if not hub_offline():
        url = f"{os.environ.get('HF_ENDPOINT', HUB_URL).rstrip('/')}/datasets/{what}"
        require_host(url, f"{what} from the HuggingFace hub", where)


def hub_offline() -> bool:
    """Whether HF_DATASETS_OFFLINE or HF_HUB_OFFLINE asks ``datasets`` to read its cache only."""
    flags = (os.environ.get(k, "").lower() for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def install_hint(purpose: str) -> str:
    return f"{purpose} needs the datasets package: pip install 'bench[hub]'"


def _importable(name: str) -> bool:
    """Whether ``import name`` would find a module, without importing it."""
    if name in sys.modules:  # None there means that imports of it are blocked
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None
