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

With ``overlapping_tiles`` (not in the paper) every member reads 128 x 128 tiles every 64 pixels (49
per slice, three times the cost) and each pixel gets the mean of the member's probabilities over the
four tiles that cover it (fewer at the crop's edge) before the vote: no pixel is judged only at a
tile's border, where the member sees no context on one side (measured in
``scripts/compare_eamc_tiling.py``; resources/weights/eamc.md).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_chsnet.inference.cascade import StageOutput, check_input_size
from napari_chsnet.inference.device import AUTO_DTYPE, autocast, compute_dtype_for
from napari_chsnet.inference.preprocessing import (
    CropBox,
    crop_and_resize,
    from_tiles,
    restore_probabilities,
    tile_count,
    to_tiles,
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
        overlapping_tiles: tiles every ``patch_size / 2`` pixels, averaged (three times the time).
        compute_dtype: autocast dtype (None: float32; ``"auto"``: the device's default, read now).
    """

    def __init__(
        self, network: EAMC, slice_size: int, patch_size: int, window_hu: tuple[float, float],
        device: torch.device, threshold: float, mirror_averaging: bool = False,
        overlapping_tiles: bool = False, *, compute_dtype: torch.dtype | None | str = AUTO_DTYPE,
    ):  # fmt: skip
        check_input_size(network, patch_size, "EAMC patches")
        self.network, self.slice_size, self.patch_size = network, slice_size, patch_size
        self.window_hu, self.device, self.threshold = window_hu, device, threshold
        self.mirror_averaging = mirror_averaging
        self.compute_dtype = compute_dtype_for(device, compute_dtype)
        self.tile_stride = patch_size // 2 if overlapping_tiles else patch_size
        tile_count(slice_size, patch_size, self.tile_stride)  # the tiles must cover the crop

    def _member_probabilities(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 1, S, S)`` crops → ``(K, N, 1, S, S)`` float32 probabilities of every member, on the
        stage's device (the vote runs there; only its two maps are moved back)."""
        n_slices = crops.shape[0]
        tiles = to_tiles(crops, self.patch_size, self.tile_stride)
        # as many tiles per call as the batch has paper patches: overlap needs no more memory than they
        per_call = n_slices * (self.slice_size // self.patch_size) ** 2
        with torch.inference_mode(), autocast(self.device, self.compute_dtype):
            probabilities = torch.cat(
                [
                    self.network(chunk.to(self.device, non_blocking=True)).float().sigmoid()
                    for chunk in tiles.split(per_call)
                ],
                dim=1,
            )
        return torch.stack(
            [from_tiles(member, n_slices, self.slice_size, self.tile_stride) for member in probabilities]
        )

    def predict(self, unit_slices: np.ndarray, lung_masks: np.ndarray | None, box: CropBox) -> StageOutput:
        """``(N, H, W)`` inputs in [0, 1] → mean probability and vote mask on the same grid.

        ``lung_masks`` is accepted for a uniform stage interface; EAMC reads the CT crop only.
        """
        height, width = unit_slices.shape[-2:]
        crops = crop_and_resize(unit_slices, box, self.slice_size)
        member_probabilities = self._member_probabilities(crops)
        if self.mirror_averaging:
            mirrored = self._member_probabilities(crops.flip(-1)).flip(-1)
            member_probabilities = torch.cat([member_probabilities, mirrored])
        with torch.inference_mode():
            mask, probability = EAMC.vote_probabilities(member_probabilities, self.threshold)
        return StageOutput(
            restore_probabilities(probability.cpu(), box, height, width),
            restore_probabilities(mask.float().cpu(), box, height, width) >= 0.5,
        )
