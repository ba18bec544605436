"""``--rotate auto``: a folder's quarter turn from the lung stage's certainty (inference/orientation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet.inference.device import resolve_device
from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU
from napari_chsnet.inference.orientation import (
    MIN_MARGIN,
    ROTATIONS,
    RotationEstimate,
    choose_rotation,
    estimate_rotation,
    lung_certainty,
    turned,
    upright,
)
from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
from napari_chsnet.inference.preprocessing import lung_crop_box
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.datasets import read_gray_image


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_upright_undoes_a_counter_clockwise_turn(rotation):
    anterior_up = np.arange(12, dtype=np.uint8).reshape(3, 4)
    stored = np.rot90(anterior_up, rotation // 90)
    assert np.array_equal(upright(stored, rotation), anterior_up)
    assert np.array_equal(turned(anterior_up, rotation), stored)
    for turn in (upright, turned):
        with pytest.raises(ValueError, match="rotation must be one of"):
            turn(stored, 45)


def test_certainty_is_one_when_sure_and_zero_at_one_half():
    assert lung_certainty(np.array([[0.0, 1.0]])) == 1.0
    assert lung_certainty(np.full((3, 3), 0.5)) == 0.0
    assert lung_certainty(np.array([[0.25, 1.0]])) == pytest.approx(0.75)


def test_a_choice_is_doubtful_on_one_slice_on_split_votes_or_a_thin_margin():
    certainty = {0: 0.90, 90: 0.95, 180: 0.89, 270: 0.93}
    clear = RotationEstimate(90, certainty, {0: 0, 90: 8, 180: 0, 270: 2})
    assert clear.agreement == 0.8 and clear.margin == pytest.approx(0.02) and not clear.doubtful
    assert RotationEstimate(90, certainty, {0: 0, 90: 1, 180: 0, 270: 0}).doubtful  # one slice
    assert RotationEstimate(90, certainty, {0: 0, 90: 5, 180: 0, 270: 5}).doubtful  # split votes
    thin = {**certainty, 270: 0.95 - MIN_MARGIN / 2}
    assert RotationEstimate(90, thin, {0: 0, 90: 9, 180: 0, 270: 1}).doubtful
    assert clear.as_dict()["votes"] == {"0": 0, "90": 8, "180": 0, "270": 2}
    assert "90° (lung-stage certainty 0.950" in clear.describe()


@pytest.fixture(scope="module")
def bundled_lung_stage():
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    lung_stage, _, _ = build_stages(SegmentationSettings(model="chsnet", device="cpu"), resolve_device("cpu"))
    return lung_stage


@pytest.fixture(scope="module")
def unseen_phantom_crops(windowed_8bit):
    """Lung crops of the middle slices of an unseen phantom (seed 7), 8-bit in the shared window, upright."""
    phantom = make_phantom(seed=7)
    box = lung_crop_box(phantom.lungs)
    with_lungs = np.nonzero(phantom.lungs.any(axis=(1, 2)))[0]
    slices = with_lungs[len(with_lungs) // 5 : -len(with_lungs) // 5 : max(1, len(with_lungs) // 8)]
    return [
        windowed_8bit(phantom.ct.hu[z, box.y0 : box.y1, box.x0 : box.x1], DISPLAY_WINDOW_HU) for z in slices
    ]


@pytest.mark.slow
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_the_bundled_lung_stage_finds_the_turn_of_unseen_phantom_slices(
    bundled_lung_stage, unseen_phantom_crops, rotation
):
    stored = [np.rot90(crop, rotation // 90) for crop in unseen_phantom_crops]
    estimate = estimate_rotation(stored, bundled_lung_stage)
    assert estimate.rotation == rotation, estimate.describe()
    assert not estimate.doubtful, estimate.describe()


@pytest.mark.slow
@pytest.mark.realdata
def test_covid_semiseg_slices_are_found_turned_90_degrees(bundled_lung_stage, shared_data):
    """All 50 labelled slices (COVID-SemiSeg is rotated 90°: anterior on the image's left), and turned
    a further half turn (270°)."""
    images = [
        read_gray_image(path) for path in sorted((shared_data / "covid-semiseg/train/images").glob("*.jpg"))
    ]
    assert len(images) == 50
    estimate = estimate_rotation(images, bundled_lung_stage)
    assert estimate.rotation == 90 and not estimate.doubtful, estimate.describe()
    assert estimate.agreement >= 0.8, estimate.describe()  # measured: 45 of 50
    turned = estimate_rotation([np.rot90(image, 2) for image in images[:10]], bundled_lung_stage)
    assert turned.rotation == 270, turned.describe()


def test_the_folder_takes_the_turn_of_highest_mean_certainty_not_of_most_votes():
    certainties = [[0.90, 0.94, 0.88, 0.93], [0.91, 0.93, 0.89, 0.935], [0.85, 0.97, 0.86, 0.90]]
    estimate = choose_rotation(certainties)
    assert estimate.rotation == 90 and estimate.votes == {0: 0, 90: 2, 180: 0, 270: 1}
    assert estimate.certainty[90] == pytest.approx((0.94 + 0.93 + 0.97) / 3)
    # two slices mildly prefer 0°, one strongly prefers 90°: the mean certainty decides, not the votes
    split = choose_rotation([[0.9, 0.8, 0.7, 0.6]] * 2 + [[0.5, 0.99, 0.5, 0.5]])
    assert split.rotation == 90 and split.votes[0] == 2 and split.doubtful
    with pytest.raises(ValueError, match="at least one slice"):
        choose_rotation([])
