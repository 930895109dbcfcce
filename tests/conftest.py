"""Shared fixtures: the real-data folder beside the checkout (../shared/data), skipped when
absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> str:
    """Folder with mnist.npz, pacs/ and genomic/; tests that need it skip with the reason."""
    if not (SHARED_DATA / "mnist.npz").exists():
        pytest.skip(
            f"real data not found at {SHARED_DATA} (needs mnist.npz); clone with "
            "../shared beside the repo"
        )
    return str(SHARED_DATA)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP overhead, which dominates on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
