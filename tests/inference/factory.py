"""Tiny random-initialised weights sets and small phantoms for the engine and CLI tests."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU, hu_to_unit
from napari_chsnet.inference.preprocessing import (
    CropBox,
    crop_and_resize,
    lung_crop_box,
    resize_masks,
    to_patches,
)
from napari_chsnet.io.phantom import Phantom, make_phantom
from napari_chsnet.models.checkpoints import save_checkpoint
from napari_chsnet.models.factory import build_model

# Network widths that make each model a fraction of a second per small batch on one CPU thread.
TINY_CONFIGS = {
    "chsnet": {"base_channels": 2},
    "eamc": {"n_members": 3, "base_channels": 2},
    "rdunet": {"base_channels": 4, "se_reduction": 4},
}
# Input sizes recorded in the tiny checkpoints (EAMC: 64 px crops cut into 4 patches of 32).
TINY_SIZES = {
    "chsnet": {"lung_input_size": 64, "infection_input_size": 64},
    "eamc": {"lung_input_size": 64, "infection_input_size": 64, "patch_size": 32},
    "rdunet": {"lung_input_size": 64, "infection_input_size": 64},
}
SMALL_SHAPE = (12, 96, 96)


def _calibrate(head: torch.nn.Conv2d, logits: torch.Tensor, positive_fraction: float) -> None:
    """Shift a head's bias so that ``positive_fraction`` of these logits come out positive."""
    with torch.no_grad():
        head.bias -= torch.quantile(logits.flatten()[::7].float(), 1.0 - positive_fraction)


def _calibrated(model: str, network: torch.nn.Module, phantom: Phantom) -> None:
    """Random weights give all-or-nothing masks; re-centre the output biases on the phantom so that the
    lung stage marks about the phantom's lung share (in blobs) and the infection stages about a fifth."""
    network.eval()
    size = TINY_SIZES[model]
    height, width = phantom.ct.shape[1:]
    unit = hu_to_unit(phantom.ct.hu)
    with torch.no_grad():
        if model == "chsnet":
            lung_in = crop_and_resize(unit, CropBox.full(height, width), size["lung_input_size"])
            _calibrate(network.lung_net.head, network.lung_net(lung_in), float((phantom.lungs > 0).mean()))
            box = lung_crop_box(phantom.lungs)
            image = crop_and_resize(unit, box, size["infection_input_size"])
            lungs = resize_masks(phantom.lungs > 0, box, size["infection_input_size"])
            logits = network.infection_net(network.infection_input(image, lungs))
            _calibrate(network.infection_net.head, logits, 0.2)
        elif model == "eamc":
            patches = to_patches(
                crop_and_resize(unit, lung_crop_box(phantom.lungs), size["infection_input_size"]),
                size["patch_size"],
            )
            for member in network.members:
                _calibrate(member.head, member(patches), 0.2)
        else:
            image = crop_and_resize(unit, lung_crop_box(phantom.lungs), size["infection_input_size"])
            _calibrate(network.head, network(image), 0.2)


def write_tiny_checkpoint(
    folder: Path, model: str, seed: int = 0, phantom: Phantom | None = None, **size_overrides: int
) -> Path:
    """``folder/<model>.safetensors`` with a random-initialised small network and its preprocessing
    (output biases re-centred on ``phantom`` when given, see ``_calibrated``)."""
    torch.manual_seed(seed)
    network = build_model(model, **TINY_CONFIGS[model])
    if phantom is not None:
        _calibrated(model, network, phantom)
    preprocessing = {
        "window_hu": list(DISPLAY_WINDOW_HU),
        "crop": "lungs",
        **TINY_SIZES[model],
        **size_overrides,
    }
    path = folder / f"{model}.safetensors"
    save_checkpoint(path, network, model, metadata={"preprocessing": preprocessing}, overwrite=True)
    return path


def write_tiny_weights_set(
    folder: Path, models=("chsnet", "eamc", "rdunet"), phantom: Phantom | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    phantom = phantom or small_phantom()
    for model in models:
        write_tiny_checkpoint(folder, model, phantom=phantom)
    return folder


def small_phantom(seed: int = 0, shape=SMALL_SHAPE, **kwargs) -> Phantom:
    return make_phantom(shape=shape, spacing_mm=(2.5, 2.5, 5.0), seed=seed, **kwargs)
