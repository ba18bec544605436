"""CHS-Net's infection stage reads the lung map that lies under its image, crop and mirror included.

The real stage (``cascade.UNetInfectionStage``) and the real contour map (``CHSNet.infection_input``)
run with an ``infection_net`` whose logits are its first input channel, the image masked by the lung
map: the probability comes back as that product, an answer known voxel by voxel. A crop box the size
of the network input makes every resampling exact. The tiny random checkpoints give maps too flat to
show a lung map that is mirrored or shifted against its image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_chsnet.inference.cascade import UNetInfectionStage
from napari_chsnet.inference.preprocessing import CropBox
from napari_chsnet.models.factory import build_model

CPU = torch.device("cpu")
HEIGHT, WIDTH = 64, 64
BOX = CropBox(6, 54, 2, 50)  # off-centre, 48 x 48: the network input size, so no resampling


class FirstChannelLogits(nn.Module):
    """An ``infection_net`` whose probability is its first input channel (clamped to (0, 1))."""

    size_divisor = 16

    def forward(self, contour_map: torch.Tensor) -> torch.Tensor:
        return torch.logit(contour_map[:, :1], eps=1e-6)


def cascade_stage(mirror_averaging: bool) -> UNetInfectionStage:
    network = build_model("chsnet", base_channels=2).eval()
    network.infection_net = FirstChannelLogits()
    return UNetInfectionStage(network, BOX.height, (0.0, 1.0), CPU, 0.5, mirror_averaging)


def one_sided_lungs() -> np.ndarray:
    """Three slices of lung masks, each different and none symmetric left-right in the box."""
    masks = np.zeros((3, HEIGHT, WIDTH), bool)
    masks[0, 10:40, 8:24] = True  # one lung on the image's left
    masks[1, 12:50, 30:46] = True  # one on its right
    masks[2, 20:30, 5:45] = True  # a band off the box's centre
    masks[2, 40:52, 10:14] = True
    return masks


@pytest.mark.parametrize("mirror_averaging", [False, True])
def test_the_infection_stage_reads_each_slice_s_own_lungs_on_its_image(mirror_averaging):
    rng = np.random.default_rng(3)
    images = rng.uniform(0.05, 0.95, (3, HEIGHT, WIDTH)).astype(np.float32)
    lungs = one_sided_lungs()
    output = cascade_stage(mirror_averaging).predict(images, lungs, BOX)

    expected = np.zeros_like(images)
    crop = (slice(None), slice(BOX.y0, BOX.y1), slice(BOX.x0, BOX.x1))
    expected[crop] = (images * lungs)[crop]
    np.testing.assert_allclose(output.probability, expected, atol=1e-5)
    assert np.array_equal(output.mask, expected >= 0.5)
    assert output.mask.any() and not output.mask[~lungs].any()
