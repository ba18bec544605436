"""Fixtures of the engine tests: tiny weights sets (random weights) and a small phantom."""

from __future__ import annotations

import pytest
import torch

from napari_chsnet.inference.weights import clear_cache

from .factory import small_phantom, write_tiny_weights_set


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_session():
    """Set before the session fixtures build networks (two busy threads crawl on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine is shared: one torch thread per test, and no network cache carried over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_cache()
    yield
    clear_cache()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A weights set folder with tiny chsnet, eamc and rdunet checkpoints."""
    return write_tiny_weights_set(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def phantom():
    return small_phantom()
