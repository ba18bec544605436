"""Tiny phantoms and tiny weights sets for the training tests (2 busy CPU cores: keep them small)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models.checkpoints import save_checkpoint
from napari_chsnet.models.factory import build_model

PHANTOM_SHAPE = (8, 64, 64)
SIZE = 64  # lung and infection input size of the tiny sets
TINY_NETWORKS = {
    "chsnet": {"base_channels": 4},
    "rdunet": {"base_channels": 4, "se_reduction": 2, "dropout": 0.0},
    "eamc": {"n_members": 2, "base_channels": 4, "dropout": 0.0},
}


@pytest.fixture(scope="session")
def phantom():
    return make_phantom(PHANTOM_SHAPE, seed=3, involvement_pct=(30.0, 20.0))


def write_tiny_set(folder: Path, seed: int = 0, models=tuple(TINY_NETWORKS)) -> Path:
    """A weights set of untrained tiny networks, with the metadata the real sets carry."""
    for model in models:
        torch.manual_seed(seed)
        network = build_model(model, **TINY_NETWORKS[model])
        preprocessing = {
            "window_hu": [-1000, 400],
            "lung_input_size": SIZE,
            "infection_input_size": SIZE,
            "crop": "lungs",
        }
        if model == "eamc":
            preprocessing["patch_size"] = 32
        metadata = {"role": "infection", "pipeline": model, "preprocessing": preprocessing}
        save_checkpoint(
            folder / f"{model}.safetensors", network, model, metadata=metadata, half_precision=True
        )
    return folder


@pytest.fixture
def tiny_set(tmp_path) -> Path:
    return write_tiny_set(tmp_path / "base_set")
