"""Shared fixtures: one torch thread, and where the real (never committed) data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$CHSNET_SHARED_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("CHSNET_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the whole suite, set before any session fixture builds a network: the test
    networks are tiny, and on a shared 2-core machine two OpenMP threads wait on each other whenever
    another process holds a core (a training step measured 23 s with 2 threads, 0.13 s with 1)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test when it is absent (as on a user's machine)."""
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set CHSNET_SHARED_DATA to run this test)")
    return folder
