"""Fixtures of the engine tests: tiny weights sets (random weights) and a small phantom."""

from __future__ import annotations

import pytest

from napari_chsnet.inference.weights import clear_cache

from .factory import small_phantom, write_tiny_weights_set


@pytest.fixture(autouse=True)
def fresh_cache():
    """No network cache carried over from one test to the next."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A weights set folder with tiny chsnet, eamc and rdunet checkpoints."""
    return write_tiny_weights_set(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def phantom():
    return small_phantom()
