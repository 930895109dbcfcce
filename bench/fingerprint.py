"""Content fingerprints of data files and plugin code: part of every run's identity.

A run's numbers depend on the bytes it reads, not on where they live, so the run id
carries a digest of the dataset's files (a manifest of relative paths, sizes and
SHA-256 of each file) and of any plugin module that defines its algorithm or dataset.
Hashing a large folder once is enough: digests are cached per path in memory and on
disk (``$XDG_CACHE_HOME/bench/fingerprints.json``), keyed by a signature of every
file's size and modification time, so a changed file is hashed again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from pathlib import Path

from bench.user_cache import read_cache, write_cache

GENERATED = "generated"
CACHE = "fingerprints.json"
_NOT_PLUGINS = {"bench", "builtins", "torch", "typing", "abc"}


def _files(path: Path) -> list[Path]:
    """``path`` itself, or every file below it in a stable order (hidden files included)."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.as_posix())


def _relative(file: Path, root: Path) -> str:
    return file.relative_to(root).as_posix() if file != root else file.name


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_signature(path: Path, files: list[Path]) -> str:
    stats = [(_relative(f, path), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def path_digest(path: Path) -> str:
    """SHA-256 of the manifest (relative path, size, content digest) of a file or folder.

    Files are read again only when a size or modification time changed since the last digest.
    """
    path = Path(path).resolve()
    files = _files(path)
    return _digest(path, _stat_signature(path, files))


@functools.lru_cache(maxsize=64)
def _digest(path: Path, signature: str) -> str:
    files = _files(path)
    cache = read_cache(CACHE)
    entry = cache.get(str(path))
    if entry and entry.get("signature") == signature:
        return entry["digest"]
    manifest = [
        [_relative(f, path) if f != path else "", f.stat().st_size, _file_sha256(f)] for f in files
    ]
    digest = hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    if _stat_signature(path, files) == signature:  # unchanged while it was read
        cache[str(path)] = {"signature": signature, "digest": digest}
    write_cache(CACHE, cache)
    return digest


def data_fingerprint(paths: list[Path]) -> str:
    """``sha256:<16 hex>`` over the dataset's files in order; ``generated`` if it reads none."""
    if not paths:
        return GENERATED
    combined = hashlib.sha256("\n".join(path_digest(Path(p)) for p in paths).encode())
    return "sha256:" + combined.hexdigest()[:16]


def code_digests(*classes: type) -> dict[str, str]:
    """Source digest of every module outside ``bench`` defining one of ``classes`` or their bases.

    bench's own code is identified by each class's VERSION and the recorded git commit;
    a plugin has neither, so its source is part of the run's identity.
    """
    out: dict[str, str] = {}
    for cls in classes:
        for klass in cls.__mro__:
            module = klass.__module__
            if module.split(".")[0] in _NOT_PLUGINS:
                continue
            try:
                source = inspect.getsource(inspect.getmodule(klass))
            except (OSError, TypeError):
                source = module  # defined interactively: nothing more to hash
            out[module] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return out
