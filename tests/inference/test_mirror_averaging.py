"""Mirror averaging of the infection stage: the mean of a slice and its mirror, for both stage kinds.

Networks with a known left-right bias (a horizontal-gradient convolution) make the answers exact; the
tiny random checkpoints of the other tests are too flat (outputs within 1e-5 of 0.5) to show it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from napari_chsnet.errors import ConfigError
from napari_chsnet.inference.cascade import UNetInfectionStage
from napari_chsnet.inference.device import precision_name
from napari_chsnet.inference.ensemble import EAMCInfectionStage
from napari_chsnet.inference.pipeline import SegmentationSettings, segment_volume
from napari_chsnet.inference.preprocessing import CropBox

from .factory import Members

CPU = torch.device("cpu")
MIRROR = (slice(None), slice(None), slice(None, None, -1))
BOX = CropBox.full(128, 128)


def gradient_conv(weight: float = 8.0, skew: float = 0.0) -> nn.Conv2d:
    """A 1 → 1 convolution that answers to left-right intensity change: ``weight * (right - left)``
    (``skew`` adds a symmetric centre term, so the output is not antisymmetric)."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 0], conv.weight[0, 0, 1, 2], conv.weight[0, 0, 1, 1] = -weight, weight, skew
    return conv.eval()


def unet_stage(network: nn.Module, mirror_averaging: bool) -> UNetInfectionStage:
    return UNetInfectionStage(network, 128, (0.0, 1.0), CPU, 0.5, mirror_averaging)


def eamc_stage(network: nn.Module, mirror_averaging: bool) -> EAMCInfectionStage:
    return EAMCInfectionStage(network, 128, 32, (0.0, 1.0), CPU, 0.5, mirror_averaging)


def asymmetric_slices(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    slices = rng.random((2, 128, 128), dtype=np.float32) * 0.3
    slices[:, 40:70, 20:50] += 0.6
    return slices


STAGES = {
    "unet": lambda mirror: unet_stage(gradient_conv(skew=2.0), mirror),
    "eamc": lambda mirror: eamc_stage(
        Members(gradient_conv(8.0, 2.0), gradient_conv(-3.0, 1.0), gradient_conv(5.0, -1.0)), mirror
    ),
}


@pytest.mark.parametrize("kind", STAGES)
def test_mirror_averaged_output_follows_a_mirrored_input(kind):
    slices = asymmetric_slices()
    mirrored = np.ascontiguousarray(slices[MIRROR])
    averaged = STAGES[kind](True)
    direct, of_mirror = averaged.predict(slices, None, BOX), averaged.predict(mirrored, None, BOX)
    np.testing.assert_allclose(of_mirror.probability, direct.probability[MIRROR], atol=1e-6)
    clear = np.abs(direct.probability - 0.5) > 1e-3  # the mask, save where rounding meets the threshold
    assert clear.mean() > 0.1
    assert np.array_equal(of_mirror.mask[MIRROR][clear], direct.mask[clear])

    plain = STAGES[kind](False)
    asymmetry = (
        plain.predict(mirrored, None, BOX).probability - plain.predict(slices, None, BOX).probability[MIRROR]
    )
    assert np.abs(asymmetry).max() > 0.1


@pytest.mark.parametrize("kind", STAGES)
def test_a_purely_left_right_cue_averages_to_one_half(kind):
    """σ(g) and σ(-g) average to exactly 0.5: a network that only sees left-right change learns nothing
    mirror averaging keeps (EAMC: every member's two votes cancel, ties go to the mean, 0.5)."""
    slices = asymmetric_slices(1)
    if kind == "unet":
        stage, plain = unet_stage(gradient_conv(), True), unet_stage(gradient_conv(), False)
    else:
        members = Members(gradient_conv(8.0), gradient_conv(-3.0), gradient_conv(5.0))
        stage, plain = eamc_stage(members, True), eamc_stage(members, False)
    np.testing.assert_allclose(stage.predict(slices, None, BOX).probability, 0.5, atol=1e-6)
    assert np.abs(plain.predict(slices, None, BOX).probability - 0.5).max() > 0.1


def test_the_mirrored_pass_reads_the_mirrored_crop():
    """With an off-centre box the second pass is the plain stage on the mirrored slice and mirrored box."""
    slices = asymmetric_slices(2)
    box = CropBox(10, 120, 5, 125)
    mirrored_box = CropBox(box.y0, box.y1, 128 - box.x1, 128 - box.x0)
    network = gradient_conv(skew=2.0)
    first = unet_stage(network, False).predict(slices, None, box).probability
    second = unet_stage(network, False).predict(np.ascontiguousarray(slices[MIRROR]), None, mirrored_box)
    averaged = unet_stage(network, True).predict(slices, None, box).probability
    np.testing.assert_allclose(averaged, (first + second.probability[MIRROR]) / 2, atol=1e-5)


def test_the_run_records_its_inference_options(phantom, tiny_weights):
    settings = SegmentationSettings(model="chsnet", device="cpu", weights=tiny_weights, threshold=0.4)
    with_mirror = segment_volume(phantom.ct, settings)
    without = segment_volume(phantom.ct, dataclasses.replace(settings, mirror_averaging=False))
    assert with_mirror.run_info.inference_options == {
        "threshold": 0.4, "min_lesion_ml": settings.min_lesion_ml, "mirror_averaging": True,
        "precision": precision_name(torch.device("cpu")),
    }  # fmt: skip
    assert without.run_info.inference_options["mirror_averaging"] is False
    assert not np.array_equal(with_mirror.probability, without.probability)


def test_mirror_averaging_must_be_true_or_false():
    with pytest.raises(ConfigError, match="mirror_averaging"):
        SegmentationSettings(mirror_averaging="yes")


def test_without_a_choice_each_model_uses_its_default():
    """On where it passed its rule with the bundled weights: all three since EAMC's round 5."""
    assert SegmentationSettings(model="chsnet").inference_options()["mirror_averaging"] is True
    assert SegmentationSettings(model="rdunet").uses_mirror_averaging
    assert SegmentationSettings(model="eamc").uses_mirror_averaging
    assert not SegmentationSettings(model="eamc", mirror_averaging=False).uses_mirror_averaging
    assert not SegmentationSettings(model="chsnet", mirror_averaging=False).uses_mirror_averaging
