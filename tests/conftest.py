"""Shared fixtures: where the real (never committed) data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$CHSNET_SHARED_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("CHSNET_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test when it is absent (as on a user's machine)."""
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set CHSNET_SHARED_DATA to run this test)")
    return folder
