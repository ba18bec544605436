"""EAMC's overlapping tiles (inference/ensemble.py): 128² tiles every 64 pixels, each member's
probabilities averaged over the tiles that cover a pixel, then the vote.

Known answers: a member that reads each pixel alone cannot tell the tilings apart; a member that reads
a 3 x 3 neighbourhood sees the zero padding at every patch border, and overlapping tiles halve that seam
where two tiles meet it from either side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_chsnet.errors import ConfigError
from napari_chsnet.inference.ensemble import EAMCInfectionStage
from napari_chsnet.inference.pipeline import SegmentationSettings
from napari_chsnet.inference.preprocessing import (
    CropBox,
    from_patches,
    from_tiles,
    tile_count,
    to_patches,
    to_tiles,
)

from .factory import Members

CPU = torch.device("cpu")


class Probability(nn.Module):
    """A member whose probability is ``reading(x)`` (its logit is that probability's logit)."""

    def __init__(self, reading: nn.Module):
        super().__init__()
        self.reading = reading

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.reading(x).clamp(1e-6, 1 - 1e-6))


def box_mean() -> nn.Conv2d:
    """The 3 x 3 mean with zero padding: 6/9 of a constant on a tile's edge, 4/9 in its corner."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1 / 9)
    return conv


def stage(member: nn.Module, overlapping: bool, mirror: bool = False) -> EAMCInfectionStage:
    """A 128-pixel crop (the slice itself) read in 32-pixel patches, or tiles every 16 pixels."""
    return EAMCInfectionStage(Members(member), 128, 32, (0.0, 1.0), CPU, 0.5, mirror, overlapping)


def test_tiles_every_patch_side_are_the_paper_patches_and_overlapping_ones_average_back():
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_tiles(images, 32, 32), to_patches(images, 32))
    assert torch.equal(
        from_tiles(to_patches(images, 32), 2, 128, 32), from_patches(to_patches(images, 32), 2, 128)
    )
    tiles = to_tiles(images, 32, 16)
    assert tiles.shape == (2 * 7 * 7, 3, 32, 32)
    torch.testing.assert_close(from_tiles(tiles, 2, 128, 16), images)


def test_each_pixel_is_the_mean_of_the_tiles_that_cover_it():
    # Tile t (row-major, 7 x 7 per side) filled with t: pixel (20, 5) lies in tiles (0, 0) and (1, 0),
    # numbers 0 and 7; pixel (20, 20) in (0, 0), (0, 1), (1, 0), (1, 1): 0, 1, 7, 8.
    numbers = torch.arange(49, dtype=torch.float32).reshape(49, 1, 1, 1).expand(49, 1, 32, 32)
    image = from_tiles(numbers, 1, 128, 16)[0, 0]
    assert image[20, 5] == 3.5 and image[20, 20] == 4.0 and image[0, 0] == 0 and image[127, 127] == 48


def test_tiles_must_cover_the_crop_exactly():
    assert tile_count(512, 128, 64) == 7
    assert tile_count(512, 128, 128) == 4
    with pytest.raises(ValueError, match="do not cover"):
        tile_count(128, 48, 24)
    with pytest.raises(ValueError, match="do not cover"):
        EAMCInfectionStage(Members(box_mean()), 128, 48, (0.0, 1.0), CPU, 0.5, overlapping_tiles=True)


def test_a_member_that_reads_each_pixel_alone_gives_the_same_map_either_way():
    slices = np.random.default_rng(1).random((2, 128, 128), dtype=np.float32)
    box = CropBox.full(128, 128)
    pointwise = Probability(nn.Identity())
    paper, overlapping = (stage(pointwise, flag).predict(slices, None, box) for flag in (False, True))
    np.testing.assert_allclose(overlapping.probability, paper.probability, atol=1e-6)
    assert np.array_equal(overlapping.mask, paper.mask)


def test_overlapping_tiles_halve_the_seam_a_patch_border_leaves():
    slices = np.full((1, 128, 128), 0.9, np.float32)
    box = CropBox.full(128, 128)
    member = Probability(box_mean())
    paper = stage(member, False).predict(slices, None, box).probability[0]
    overlapping = stage(member, True).predict(slices, None, box).probability[0]
    # Row 31 is the last row of the first patches: 0.9 * 6/9 there, 0.9 inside.
    assert paper[31, 8] == pytest.approx(0.6, abs=1e-5) and paper[24, 8] == pytest.approx(0.9, abs=1e-5)
    # Overlapping, row 31 is also row 15 of the tiles from row 16, where it is inside: (0.6 + 0.9) / 2.
    assert overlapping[31, 8] == pytest.approx(0.75, abs=1e-5)
    # Where four tiles meet a seam crossing, one corner (4/9), two edges and one inside: 0.7.
    assert paper[31, 31] == pytest.approx(0.4, abs=1e-5)
    assert overlapping[31, 31] == pytest.approx((0.4 + 0.6 + 0.6 + 0.9) / 4, abs=1e-5)
    inner = (slice(1, 127), slice(1, 127))  # the crop's own border has no neighbour in either tiling
    assert np.abs(overlapping[inner] - 0.9).max() < np.abs(paper[inner] - 0.9).max()


def test_mirror_and_overlap_combine():
    """The mirrored crop is tiled too: a member that reads the 3 x 3 mean gives a left-right symmetric
    map on a symmetric slice, so mirror averaging changes nothing there, with or without overlap."""
    slices = np.full((1, 128, 128), 0.9, np.float32)
    box = CropBox.full(128, 128)
    member = Probability(box_mean())
    for overlapping in (False, True):
        alone = stage(member, overlapping).predict(slices, None, box).probability
        mirrored = stage(member, overlapping, mirror=True).predict(slices, None, box).probability
        np.testing.assert_allclose(mirrored, alone, atol=1e-6)


def test_overlapping_tiles_are_eamc_s_and_recorded_for_it():
    with pytest.raises(ConfigError, match="overlapping tiles are for EAMC"):
        SegmentationSettings(model="chsnet", overlapping_tiles=True)
    with pytest.raises(ConfigError, match="overlapping_tiles"):
        SegmentationSettings(model="eamc", overlapping_tiles="yes")
    assert "overlapping_tiles" not in SegmentationSettings(model="rdunet").inference_options()
    assert SegmentationSettings(model="chsnet", overlapping_tiles=False).uses_overlapping_tiles is False
    assert SegmentationSettings(model="eamc", overlapping_tiles=True).inference_options()["overlapping_tiles"]


def test_overlapping_tiles_reach_the_members_in_calls_no_larger_than_the_paper_s():
    """Memory per network call is the batch's paper patches (slices x 16 at 512/128; here 2 x 16 at
    128/32), so the batch size keeps bounding it with overlapping tiles too."""
    calls = []

    class Recording(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return x

    slices = np.zeros((2, 128, 128), np.float32)
    stage(Recording(), False).predict(slices, None, CropBox.full(128, 128))
    assert calls == [32]
    calls.clear()
    stage(Recording(), True).predict(slices, None, CropBox.full(128, 128))
    assert calls == [32, 32, 32, 2] and sum(calls) == 2 * 7 * 7
