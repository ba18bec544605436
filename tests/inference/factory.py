"""Tiny random-initialised weights sets and small phantoms for the engine and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import napari_chsnet.inference.pipeline as pipeline_module
from napari_chsnet.inference.cascade import StageOutput
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


class ImageInLungsStage:
    """An infection stage whose answer is a known function of what it is given: inside the crop box,
    the probability of a pixel is its network input (the CT through ``window_hu``) where the lung mask
    it is given holds lung, else 0; the mask is that probability from 0.5. So a result can be checked
    voxel by voxel against the CT's own slice and lungs (``expected_probability``)."""

    # A narrow window about air: the tiny random lung stage's "lungs" are blobs of the air around the
    # phantom (-1024 to -973 HU), whose noise then gives probabilities across [0, 1] that differ from
    # slice to slice, about half of them from 0.5.
    window_hu = (-1050.0, -950.0)
    threshold = 0.5

    def predict(self, unit, lung_masks, box) -> StageOutput:
        probability = np.zeros(np.shape(unit), np.float32)
        crop = (slice(None), slice(box.y0, box.y1), slice(box.x0, box.x1))
        probability[crop] = np.where(lung_masks[crop], unit[crop], 0.0)
        return StageOutput(probability, probability >= self.threshold)

    def expected_probability(self, hu: np.ndarray, lungs: np.ndarray) -> np.ndarray:
        """The probability of a whole volume: the lungs lie inside their crop box, and slices without
        lung are never given to the stage (so they stay 0 as well)."""
        return np.where(lungs > 0, hu_to_unit(hu, self.window_hu), 0.0).astype(np.float32)


def use_infection_stage(monkeypatch, stage) -> None:
    """Run the pipeline's real lung stage with ``stage`` as its infection stage."""
    real_build = pipeline_module.build_stages

    def build(*args):
        lung_stage, _infection_stage, checkpoints = real_build(*args)
        return lung_stage, stage, checkpoints

    monkeypatch.setattr(pipeline_module, "build_stages", build)


class Members(torch.nn.Module):
    """An EAMC stand-in: ``forward`` gives the members' ``(K, N, 1, H, W)`` logits, as EAMC's does."""

    def __init__(self, *members: torch.nn.Module):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members])
