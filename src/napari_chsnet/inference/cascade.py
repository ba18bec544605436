"""The network stages of the cascade: lungs on whole slices, then infection on the lung crop.

Each stage takes a batch of slices already mapped to the [0, 1] network input (``hu_to_unit`` for a
CT, ``display8_to_unit`` for 8-bit slices) and gives probabilities back on the slices' own grid,
resampled *before* any threshold. A stage never holds more than its batch: callers pass slice batches.

* :class:`LungStage`: CHS-Net's ``lung_net`` on the whole slice resized to ``lung_input_size``.
* :class:`UNetInfectionStage`: CHS-Net's ``infection_net`` on the lung contour map
  (``CHSNet.infection_input(image, lungs)``), or RD-UNet directly, on the lung crop box resized to
  ``infection_input_size``. EAMC's patch ensemble is in ``ensemble.py``.

With ``mirror_averaging`` the infection stage also reads every slice mirrored left-right and averages
the two probabilities (its mirror undone), a test-time augmentation the networks' training flips make
sound. It raised the held-out Dice of all three bundled models a little, for twice the infection
stage's time; it is on by default where the volume checks held too (``registry.ModelInfo``; the
figures are in the model cards, resources/weights/*.md).

The lung map given to CHS-Net's infection stage is the *post-processed* lung mask (0/1), resized as in
training (where the stage reads the ground-truth mask): the raw lung probability is low in dense
subpleural consolidation, which the post-processing puts back, and the contour map would hide it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_chsnet.errors import WeightsError
from napari_chsnet.inference.device import AUTO_DTYPE, autocast, compute_dtype_for
from napari_chsnet.inference.preprocessing import (
    CropBox,
    crop_and_resize,
    resize_masks,
    restore_probabilities,
)

# The lung stage's own threshold (its probability is resampled to the CT grid first).
LUNG_THRESHOLD = 0.5


@dataclass
class StageOutput:
    """``probability`` float32 (N, H, W) in [0, 1]; ``mask`` bool (N, H, W), the stage's decision."""

    probability: np.ndarray
    mask: np.ndarray


def check_input_size(network: nn.Module, size: int, what: str) -> None:
    divisor = int(getattr(network, "size_divisor", 1))
    if size < divisor or size % divisor:
        raise WeightsError(
            f"{what}: input size {size} (from the checkpoint's preprocessing metadata) must be a positive "
            f"multiple of {divisor} for this network"
        )


def predict_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    device: torch.device,
    compute_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Sigmoid of ``forward(inputs)`` (logits) for one batch, computed under autocast to
    ``compute_dtype`` (None: float32), on the CPU as float32."""
    with torch.inference_mode(), autocast(device, compute_dtype):
        logits = forward(inputs.to(device, non_blocking=True))
    return logits.float().sigmoid().cpu()


def _mirrored(array: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """``array`` flipped left-right (its last axis); a numpy array comes back contiguous."""
    return array.flip(-1) if isinstance(array, torch.Tensor) else np.ascontiguousarray(array[..., ::-1])


def mirror_averaged(predict: Callable, inputs: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Mean of ``predict(inputs)`` and the prediction of the left-right mirrored inputs, mirrored back.

    ``inputs`` have the patient's left-right on the last axis: the stages' ``(N, C, H, W)`` tensors,
    or a ``(y, x)`` slice for the self-training teacher. ``predict`` must give a map on the same grid
    (a probability, not logits, so that the mean stays one).
    """
    return (predict(inputs) + _mirrored(predict(_mirrored(inputs)))) / 2


class LungStage:
    """Lung probability of whole axial slices (CHS-Net ``lung_net``).

    Args:
        lung_net: the RAIU-Net of a CHS-Net checkpoint, in eval mode on ``device``.
        size: side of the square network input (``lung_input_size``).
        window_hu: the intensity window the checkpoint was trained with (for callers mapping HU).
        device: where ``lung_net`` lives.
        compute_dtype: autocast dtype (None: float32; ``"auto"``: the device's default, read now).
    """

    def __init__(
        self,
        lung_net: nn.Module,
        size: int,
        window_hu: tuple[float, float],
        device: torch.device,
        *,
        compute_dtype: torch.dtype | None | str = AUTO_DTYPE,
    ):
        check_input_size(lung_net, size, "lung stage")
        self.network, self.size, self.window_hu, self.device = lung_net, size, window_hu, device
        self.compute_dtype = compute_dtype_for(device, compute_dtype)

    def predict(self, unit_slices: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` inputs in [0, 1] → ``(N, H, W)`` float32 lung probability on the same grid."""
        height, width = unit_slices.shape[-2:]
        box = CropBox.full(height, width)
        probabilities = predict_probabilities(
            self.network, crop_and_resize(unit_slices, box, self.size), self.device, self.compute_dtype
        )
        return restore_probabilities(probabilities, box, height, width)


class UNetInfectionStage:
    """Infection probability on the lung crop box: CHS-Net's second stage or RD-UNet.

    Args:
        network: a ``CHSNet`` (its ``infection_net`` reads ``infection_input(image, lungs)``) or an ``RDUNet``.
        size: side of the network input (``infection_input_size``).
        window_hu: the checkpoint's intensity window.
        device: where the network lives.
        threshold: infection probability from which a pixel is infected.
        mirror_averaging: also predict the mirrored slices and average (twice the time).
        compute_dtype: autocast dtype (None: float32; ``"auto"``: the device's default, read now).
    """

    def __init__(
        self,
        network: nn.Module,
        size: int,
        window_hu: tuple[float, float],
        device: torch.device,
        threshold: float,
        mirror_averaging: bool = False,
        *,
        compute_dtype: torch.dtype | None | str = AUTO_DTYPE,
    ):
        self.is_cascade = hasattr(network, "infection_net")
        check_input_size(network.infection_net if self.is_cascade else network, size, "infection stage")
        self.network, self.size, self.window_hu = network, size, window_hu
        self.device, self.threshold, self.mirror_averaging = device, threshold, mirror_averaging
        self.compute_dtype = compute_dtype_for(device, compute_dtype)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.is_cascade:
            return self.network(inputs)
        image, lungs = inputs[:, :1], inputs[:, 1:]
        return self.network.infection_net(self.network.infection_input(image, lungs))

    def predict(self, unit_slices: np.ndarray, lung_masks: np.ndarray, box: CropBox) -> StageOutput:
        """``(N, H, W)`` inputs and lung masks, the volume's crop box → probability and mask on the grid."""
        height, width = unit_slices.shape[-2:]
        inputs = crop_and_resize(unit_slices, box, self.size)
        if self.is_cascade:
            inputs = torch.cat([inputs, resize_masks(lung_masks, box, self.size)], dim=1)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            return predict_probabilities(self._forward, batch, self.device, self.compute_dtype)

        probabilities = mirror_averaged(predict, inputs) if self.mirror_averaging else predict(inputs)
        restored = restore_probabilities(probabilities, box, height, width)
        return StageOutput(restored, restored >= self.threshold)
