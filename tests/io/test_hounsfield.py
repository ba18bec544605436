"""Volumes not stored in Hounsfield units are recognised, converted and warned about.

The phantom stands in for a chest CT; it is stored the three ways real files come: HU, HU + 1024
(unsigned, without the rescale intercept) and 8-bit display values through a lung window
([-1250, 250] HU, as the Radiopaedia cases of the public COVID-19 CT segmentation set).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.inference.intensity import hu_to_unit
from napari_chsnet.io.hounsfield import (
    DISPLAY8,
    DISPLAY_WINDOW_HU,
    HU,
    OFFSET1024,
    UNKNOWN,
    assess_intensity,
    display8_to_unit,
    is_label_map,
    one_value_only,
    to_hounsfield,
    unit_to_display8,
)
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.io.readers import read_ct


@pytest.fixture(scope="module")
def chest_hu() -> np.ndarray:
    return make_phantom(shape=(12, 96, 96), spacing_mm=(2.5, 3.0, 3.0), seed=3).ct.hu


def write(path, values: np.ndarray, spacing=(3.0, 3.0, 2.5)):
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_hu_offset_and_8bit_storage_are_told_apart(chest_hu, windowed_8bit):
    assert assess_intensity(chest_hu).kind == HU
    assert assess_intensity((chest_hu.astype(np.int32) + 1024).clip(0).astype(np.uint16)).kind == OFFSET1024
    assert assess_intensity(windowed_8bit(chest_hu)).kind == DISPLAY8


@pytest.mark.parametrize(
    "values, why",
    [
        (np.linspace(0.0, 1.0, 1000, dtype=np.float32), "normalised"),
        (
            np.full((4, 8, 8), 40, np.int16) - np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8) % 90,
            "no air",
        ),
        (np.arange(300, 3000, dtype=np.int16), "no air near 0 either"),
    ],
)
def test_values_without_air_are_not_guessed(values, why):
    assessment = assess_intensity(values)
    assert assessment.kind == UNKNOWN, why
    assert assessment.reason


def test_offset_storage_converts_back_to_the_exact_hu(chest_hu):
    stored = (chest_hu.astype(np.int32) + 1024).astype(np.uint16)
    back = to_hounsfield(stored, OFFSET1024)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, chest_hu)


def test_8bit_values_land_on_the_training_slices_window(chest_hu, windowed_8bit):
    """Stored through the shared window, the 8-bit values come back to within half a grey level."""
    low, high = DISPLAY_WINDOW_HU
    stored = windowed_8bit(chest_hu, DISPLAY_WINDOW_HU)
    back = to_hounsfield(stored, DISPLAY8)
    inside = (chest_hu > low) & (chest_hu < high)
    half_level = (high - low) / 255 / 2
    assert np.abs(back[inside] - chest_hu[inside]).max() <= half_level + 1e-3


def test_8bit_values_survive_the_network_input_and_back(chest_hu, windowed_8bit):
    """Every grey level comes back from the [0, 1] input exactly; HU outside the window saturate."""
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(unit_to_display8(display8_to_unit(levels)), levels)
    np.testing.assert_array_equal(unit_to_display8(np.array([-0.2, 1.7], np.float32)), [0, 255])
    np.testing.assert_array_equal(
        unit_to_display8(hu_to_unit(chest_hu)), windowed_8bit(chest_hu, DISPLAY_WINDOW_HU)
    )


def test_reading_an_8bit_file_converts_it_and_says_so(tmp_path, chest_hu, windowed_8bit):
    path = write(tmp_path / "windowed.nii.gz", windowed_8bit(chest_hu))
    volume = read_ct(path)
    assert volume.metadata["intensity"] == DISPLAY8
    assert any("not Hounsfield units" in w and "display values" in w for w in volume.metadata["warnings"])
    low, high = DISPLAY_WINDOW_HU
    assert low <= volume.hu.min() and volume.hu.max() <= high
    # the lungs' air is air again, not soft tissue
    assert np.median(volume.hu[chest_hu < -700]) < -700


def test_reading_an_offset_file_gives_the_hu(tmp_path, chest_hu):
    path = write(tmp_path / "unsigned.mha", (chest_hu.astype(np.int32) + 1024).astype(np.uint16))
    volume = read_ct(path)
    assert volume.metadata["intensity"] == OFFSET1024
    np.testing.assert_array_equal(volume.hu, chest_hu)
    assert any("HU + 1024" in w for w in volume.metadata["warnings"])


def test_a_hu_file_is_read_unchanged_without_a_warning(tmp_path, chest_hu):
    volume = read_ct(write(tmp_path / "hu.nii.gz", chest_hu))
    assert volume.metadata["intensity"] == HU and volume.metadata["warnings"] == []
    np.testing.assert_array_equal(volume.hu, chest_hu)


def test_the_caller_can_say_what_the_values_are(tmp_path, chest_hu, windowed_8bit):
    path = write(tmp_path / "windowed.nii.gz", windowed_8bit(chest_hu))
    as_hu = read_ct(path, intensity="hu")  # the caller's call, but said
    assert as_hu.metadata["intensity"] == HU
    (warning,) = as_hu.metadata["warnings"]
    assert "intensity given as hu although the values look like display8" in warning
    np.testing.assert_array_equal(as_hu.hu, windowed_8bit(chest_hu))
    said = read_ct(path, intensity="display8")
    assert any("intensity given as display8" in w for w in said.metadata["warnings"])
    with pytest.raises(ConfigError, match="intensity must be one of"):
        read_ct(path, intensity="8bit")


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("display8", "8-bit display values lie in 0-255"),
        ("offset1024", r"which HU \+ 1024 storage never holds"),
    ],
)
def test_an_intensity_the_values_rule_out_is_refused(tmp_path, chest_hu, given, why):
    """A HU scan read as HU + 1024 got three times its lung volume and a report, exit 0."""
    path = write(tmp_path / "hu.nii.gz", chest_hu)
    with pytest.raises(InvalidVolumeError, match=f"the intensity given, {given}, cannot be right: .*{why}"):
        read_ct(path, intensity=given)


def test_a_file_without_air_is_kept_as_stored_with_a_warning(tmp_path):
    tissue = np.full((4, 16, 16), 40, dtype=np.int16)
    tissue[:, :8] = -60
    volume = read_ct(write(tmp_path / "tissue.nrrd", tissue))
    assert volume.metadata["intensity"] == UNKNOWN
    np.testing.assert_array_equal(volume.hu, tissue)
    assert any(
        "do not look like Hounsfield units" in w and "the segmentation refuses them" in w
        for w in volume.metadata["warnings"]
    )


def test_values_given_as_hu_that_do_not_look_like_hu_keep_a_warning(tmp_path):
    """An MR-like volume (300-1500, no air) given as HU is read as asked; the warning stays (it was
    given only for values that looked like display8 or offset1024)."""
    mr_like = 300 + np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16) % 1200
    volume = read_ct(write(tmp_path / "mr_like.nii.gz", mr_like), intensity="hu")
    assert volume.metadata["intensity"] == HU
    np.testing.assert_array_equal(volume.hu, mr_like)
    (warning,) = volume.metadata["warnings"]
    assert "intensity given as hu although the values do not look like Hounsfield units" in warning
    assert "not the air of a chest CT" in warning, "the assessment's reason"


def test_a_mask_file_is_not_taken_for_an_8bit_ct(tmp_path):
    """Label maps (0/1/2) also have no negative values and a maximum under 255."""
    lungs = np.zeros((4, 16, 16), dtype=np.uint8)
    lungs[:, 4:12, 2:7], lungs[:, 4:12, 9:14] = 1, 2
    assessment = assess_intensity(lungs)
    assert assessment.kind == UNKNOWN and "label map" in assessment.reason
    np.testing.assert_array_equal(read_ct(write(tmp_path / "lungs.nii.gz", lungs)).hu, lungs)


def test_a_binary_mask_is_a_label_map_not_normalised_values(chest_hu, windowed_8bit):
    """An infection mask holds 0/1 only (an empty one 0 only): a label map, as the lungs' 0/1/2."""
    infection = np.zeros((4, 16, 16), dtype=np.uint8)
    infection[:, 4:8, 4:8] = 1
    for mask in (infection, np.zeros_like(infection), infection.astype(np.float32)):
        assert is_label_map(mask)
        assert "label map" in assess_intensity(mask).reason
    for picture in (chest_hu, windowed_8bit(chest_hu), np.linspace(0.0, 1.0, 1000, dtype=np.float32)):
        assert not is_label_map(picture)


def multi_label_map(shape=(12, 96, 96), n_labels=60) -> np.ndarray:
    """A multi-organ label map (as TotalSegmentator writes): background 0 around a body of blocks
    labelled 1..n_labels, each label constant over its block."""
    z, y, x = np.indices(shape)
    labels = (1 + (y // 8) * 6 + x // 16) % n_labels + 1
    body = (y - shape[1] / 2) ** 2 / 0.4 + (x - shape[2] / 2) ** 2 < (0.45 * shape[2]) ** 2
    return np.where(body, labels, 0).astype(np.uint8)


def test_a_multi_label_map_is_not_taken_for_an_8bit_ct(tmp_path, chest_hu, windowed_8bit):
    """A 55-label map (more than 32 values, all under 255) was read as a display8 CT: a CT-1 report of
    3.7 L of "lungs". Its labels are constant over whole regions; CT noise never is."""
    labels = multi_label_map()
    assert np.unique(labels).size > 32
    assessment = assess_intensity(labels)
    assert assessment.kind == UNKNOWN and "label map" in assessment.reason
    assert is_label_map(labels)
    volume = read_ct(write(tmp_path / "organs.nii.gz", labels))
    assert volume.metadata["intensity"] == UNKNOWN
    np.testing.assert_array_equal(volume.hu, labels)
    for window in ((-1350, 150), (-160, 240), DISPLAY_WINDOW_HU):  # lung, soft tissue, training slices
        picture = windowed_8bit(chest_hu, window)
        assert not is_label_map(picture) and assess_intensity(picture).kind == DISPLAY8, window


def test_a_volume_of_one_value_says_so():
    for blank in (np.zeros((4, 16, 16), np.int16), np.full((4, 16, 16), 1024, np.uint16)):
        assert one_value_only(blank) == f"one value only ({blank.flat[0]} in every voxel)"
        assert "one value only" in assess_intensity(blank).reason
    assert one_value_only(np.full((4, 16, 16), -1000, np.int16)) == "one value only (-1000 in every voxel)"
    almost = np.zeros((64, 64, 64), np.int16)
    almost[1, 2, 3] = 1  # off the subsample: the whole volume decides
    assert one_value_only(almost) is None


@pytest.mark.realdata
def test_no_real_ct_is_taken_for_a_label_map(shared_data, windowed_8bit):
    """covid-ct-md in HU and as 8-bit through a lung and a soft-tissue window, and COVID-SemiSeg's
    8-bit JPEG slices, are pictures (flat share at most 0.14, hounsfield._FLAT_SHARE); a multi-label
    map drawn on P001 (0.97) is a label map."""
    from PIL import Image

    for name in ("normal001", "P001"):  # P001 last: the label map below is drawn on it
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "covid-ct-md" / f"{name}_ct_hu.nii.gz")))
        assert assess_intensity(hu).kind == HU
        for window in ((-1350, 150), (-160, 240)):
            picture = windowed_8bit(hu, window)
            assert not is_label_map(picture) and assess_intensity(picture).kind == DISPLAY8, (name, window)
    y, x = np.arange(hu.shape[1])[:, None], np.arange(hu.shape[2])[None, :]
    organs = np.where(hu > -400, 1 + (y // 24) * 3 + (x // 64) % 3, 0).astype(np.uint8)  # in the body
    assert np.unique(organs).size > 32 and is_label_map(organs)
    slices = sorted((shared_data / "covid-semiseg" / "train" / "images").glob("*.jpg"))
    assert slices, "COVID-SemiSeg training images"
    pixels = [np.asarray(Image.open(path).convert("L")) for path in slices]
    for picture in pixels:
        assert not is_label_map(picture[None]), "one slice"
    same_size = [p for p in pixels if p.shape == pixels[0].shape][:8]
    assert not is_label_map(np.stack(same_size))
