"""EAMC's patch ensemble at inference (Pal Das, Mitra & Uma Shankar 2023, Sec. 2.2 and 5.1).

The lung crop of each slice is resized to the EAMC slice size (512) and cut into non-overlapping
128 x 128 patches (16 per slice), the size the members were trained on. Every member predicts every
patch; ``EAMC.vote`` gives the majority-vote mask and the members' mean probability; the patches are
put back together and both are resampled to the CT grid.

The *mask* of EAMC is its vote, not the mean probability thresholded (the two differ where a few
confident members outvote a hesitant majority): the vote mask is resampled bilinearly as 0/1 and
thresholded at 0.5, and the mean probability is the probability map.

With ``mirror_averaging`` every member also reads the left-right mirrored crop (its output mirrored
back), so 2K outputs vote instead of K (``cascade.mirror_averaged`` for one network).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_chsnet.inference.cascade import StageOutput, check_input_size
from napari_chsnet.inference.device import autocast
from napari_chsnet.inference.preprocessing import (
    CropBox,
    crop_and_resize,
    from_patches,
    restore_probabilities,
    to_patches,
)
from napari_chsnet.models.eamc import EAMC


class EAMCInfectionStage:
    """Infection of lung crops by the EAMC ensemble (lung masks come from the lung stage's crop box).

    Args:
        network: an ``EAMC`` in eval mode on ``device``.
        slice_size: side the crop is resized to (the checkpoint's ``infection_input_size``, 512).
        patch_size: side of the patches the members read (128).
        window_hu: the checkpoint's intensity window.
        device: where the members live.
        threshold: each member's vote threshold (EAMC.vote).
        mirror_averaging: every member also votes on the mirrored crop (twice the time).
    """

    def __init__(
        self, network: EAMC, slice_size: int, patch_size: int, window_hu: tuple[float, float],
        device: torch.device, threshold: float, mirror_averaging: bool = False,
    ):  # fmt: skip
        check_input_size(network, patch_size, "EAMC patches")
        self.network, self.slice_size, self.patch_size = network, slice_size, patch_size
        self.window_hu, self.device, self.threshold = window_hu, device, threshold
        self.mirror_averaging = mirror_averaging

    def _member_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 1, S, S)`` crops → ``(K, N, 1, S, S)`` float32 logits of every member, on the stage's
        device (the vote runs there; only its two maps are moved back)."""
        with torch.inference_mode(), autocast(self.device):
            logits = self.network(to_patches(crops, self.patch_size).to(self.device, non_blocking=True))
        n_slices = crops.shape[0]
        return torch.stack([from_patches(member.float(), n_slices, self.slice_size) for member in logits])

    def predict(self, unit_slices: np.ndarray, lung_masks: np.ndarray | None, box: CropBox) -> StageOutput:
        """``(N, H, W)`` inputs in [0, 1] → mean probability and vote mask on the same grid.

        ``lung_masks`` is accepted for a uniform stage interface; EAMC reads the CT crop only.
        """
        height, width = unit_slices.shape[-2:]
        crops = crop_and_resize(unit_slices, box, self.slice_size)
        member_logits = self._member_logits(crops)
        if self.mirror_averaging:
            member_logits = torch.cat([member_logits, self._member_logits(crops.flip(-1)).flip(-1)])
        with torch.inference_mode():
            mask, probability = EAMC.vote(member_logits, self.threshold)
        return StageOutput(
            restore_probabilities(probability.cpu(), box, height, width),
            restore_probabilities(mask.float().cpu(), box, height, width) >= 0.5,
        )
