"""EAMC's vote mask restored to the CT grid: "resampled bilinearly as 0/1 and thresholded at 0.5"
(inference/ensemble.py), a voxel positive *from* 0.5 on, as every threshold of the engine reads
("infection probability from which a voxel is infected"; EAMC.vote's members and ties, ``>=``).

The vote's own ties (even K) are EAMC.vote's business; here the members agree, and the exact 0.5s come
from the restore: a crop enlarged 2 x for the members and shrunk back averages pairs of crop pixels, so
a vote edge at an odd crop pixel half-covers a voxel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_chsnet.inference.cascade import UNetInfectionStage
from napari_chsnet.inference.ensemble import EAMCInfectionStage
from napari_chsnet.inference.preprocessing import CropBox

from .factory import Members

CPU = torch.device("cpu")


class Brighter(nn.Module):
    """A certain member: logit ±∞-like, probability exactly 1 where the input exceeds ``level``, else 0."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e4 * (x - self.level)


def lesion_slice() -> np.ndarray:
    """One 64 x 64 slice, a bright square lesion on rows and columns 20..39."""
    slices = np.zeros((1, 64, 64), np.float32)
    slices[0, 20:40, 20:40] = 1.0
    return slices


def test_voxels_half_covered_by_the_vote_are_in_the_mask_and_quarter_covered_ones_are_not():
    # Crop 64 → 128: crop pixel j reads the slice at j / 2 - 0.25, so the lesion edge at 19.5 | 20 gives
    # crop 38: 0, 39: 0.25, 40: 0.75 (and 79: 0.75, 80: 0.25, 81: 0); the corner crop pixel (39, 39) reads
    # 0.25 * 0.25 = 0.0625. Members marking > 0.05 vote for crop rows/columns 39..80. Back to 64, voxel i
    # averages crop 2i, 2i + 1: voxels 19 and 40 are half covered (0.5) along an edge, and a quarter (0.25)
    # at the four corners.
    stage = EAMCInfectionStage(Members(Brighter(0.05), Brighter(0.05)), 128, 32, (0.0, 1.0), CPU, 0.5)
    out = stage.predict(lesion_slice(), None, CropBox.full(64, 64))
    expected = np.zeros((1, 64, 64), bool)
    expected[0, 19:41, 19:41] = True
    expected[0, [19, 19, 40, 40], [19, 40, 19, 40]] = False
    assert out.probability[0, 19, 30] == 0.5 and out.probability[0, 19, 19] == 0.25  # the ties are exact
    assert np.array_equal(out.mask, expected)
    assert int(out.mask.sum()) == 22 * 22 - 4


def test_a_certain_one_member_ensemble_marks_what_the_same_network_marks_as_a_single_stage():
    """With certain members the vote and the mean probability are the same 0/1 map, so EAMC's mask is the
    single-network stage's ``restored >= threshold`` (0.5), voxel for voxel, ties included."""
    member = Brighter(0.1)
    box = CropBox.full(64, 64)
    ensemble = EAMCInfectionStage(Members(member), 128, 32, (0.0, 1.0), CPU, 0.5).predict(
        lesion_slice(), None, box
    )
    single = UNetInfectionStage(member, 128, (0.0, 1.0), CPU, 0.5).predict(lesion_slice(), None, box)
    np.testing.assert_array_equal(ensemble.probability, single.probability)
    assert (single.probability == 0.5).sum() == 4 * 20  # the half-covered edge voxels
    assert np.array_equal(ensemble.mask, single.mask)
