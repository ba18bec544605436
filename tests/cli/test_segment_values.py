"""``chsnet segment`` refuses what is not a CT in HU: values the reader found not to be HU, label maps
with many labels, volumes of one value; values said to be HU, and in-memory volumes, are segmented."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from napari_chsnet.cli import main
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.pipeline import SegmentationSettings, segment_volume
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import CTVolume


def segment(*args, weights) -> int:
    return main(["segment", *map(str, args), "--device", "cpu", "--weights", str(weights)])


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("chsnet: error: "), lines
    return lines[-1]


def write(path, values, phantom):
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(tuple(reversed(phantom.ct.geometry.spacing_zyx)))
    sitk.WriteImage(image, str(path))
    return path


def mr_like(phantom) -> np.ndarray:
    """The phantom's anatomy as an MR-like volume: 300-1500, nothing negative (no air near 0)."""
    return np.clip(300 + (phantom.ct.hu.astype(np.float32) + 1024) * 0.6, 0, 1500).astype(np.int16)


@pytest.mark.parametrize(
    ("values_of", "reason"),
    [
        (mr_like, "not the air of a chest CT"),
        (lambda p: ((np.clip(p.ct.hu, -1110, 255) + 1110) / 1365).astype(np.float32), "normalised"),
    ],
    ids=["mr-like 0-1500", "float 0-1"],
)
def test_values_that_are_not_hu_are_refused_unless_said_to_be_hu(
    tmp_path, phantom, tiny_weights, capsys, values_of, reason
):
    """An MR-like volume was graded CT-4, exit 0: the reader itself called its values not HU."""
    path = write(tmp_path / "scan.nii.gz", values_of(phantom), phantom)
    assert segment(path, "-o", tmp_path / "auto", weights=tiny_weights) == 2
    line = error_line(capsys)
    for fragment in (str(path), "do not look like Hounsfield units", reason, "--intensity hu", "original CT"):
        assert fragment in line
    assert not (tmp_path / "auto").exists()

    assert segment(path, "-o", tmp_path / "as_hu", "--intensity", "hu", weights=tiny_weights) == 0
    report = json.loads((tmp_path / "as_hu" / "report.json").read_text())
    assert report["input_intensity"] == "hu"
    assert any("do not look like Hounsfield units" in w and reason in w for w in report["warnings"])


def test_a_multi_label_map_is_refused_as_a_label_map(tmp_path, phantom, tiny_weights, capsys):
    """A 55-label map was read as an 8-bit CT: a CT-1 report of 3.7 L of "lungs", exit 0."""
    _z, y, x = np.indices(phantom.ct.shape)
    body = (y - 48) ** 2 / 0.4 + (x - 48) ** 2 < 43**2
    organs = np.where(body, 1 + (y // 8) * 6 + x // 16, 0).astype(np.uint8)
    assert np.unique(organs).size > 32
    path = write(tmp_path / "organs.nii.gz", organs, phantom)
    assert segment(path, "-o", tmp_path / "out", weights=tiny_weights) == 2
    assert re.search(
        r"organs.nii.gz holds a label map \(values 0, (\d+, ){5}…\), not a CT", error_line(capsys)
    )


def test_a_volume_of_one_value_is_refused_as_blank(tmp_path, phantom, tiny_weights, capsys):
    """An all-zero volume was refused as 'a label map (values 0)'."""
    path = write(tmp_path / "water.nii.gz", np.zeros(phantom.ct.shape, np.int16), phantom)
    assert segment(path, "-o", tmp_path / "out", weights=tiny_weights) == 2
    line = error_line(capsys)
    assert "water.nii.gz holds one value only (0 in every voxel): an empty or blank volume" in line
    assert "label map" not in line


def test_in_memory_volumes_without_the_readers_record_are_segmented_as_hu(phantom, tiny_weights):
    """The API: a CTVolume made without ``metadata["intensity"]`` is taken as HU, whatever its values."""
    settings = SegmentationSettings(device="cpu", weights=tiny_weights)
    values = mr_like(phantom)
    result = segment_volume(CTVolume(values, phantom.ct.geometry, "mr_like"), settings)
    assert result.lungs.shape == values.shape
    with pytest.raises(InvalidVolumeError, match=r"^mr_like: the values do not look like Hounsfield units"):
        segment_volume(CTVolume(values, phantom.ct.geometry, "mr_like", {"intensity": "unknown"}), settings)


def test_a_read_volume_carries_its_assessment_to_the_segmentation(tmp_path, phantom, tiny_weights):
    path = write(tmp_path / "scan.nii.gz", mr_like(phantom), phantom)
    settings = SegmentationSettings(device="cpu", weights=tiny_weights)
    steps = []
    with pytest.raises(InvalidVolumeError, match="scan.nii.gz: the values do not look like Hounsfield units"):
        segment_volume(read_ct(path), settings, on_progress=steps.append)
    assert steps == [], "refused before any network runs"
    assert segment_volume(read_ct(path, intensity="hu"), settings).lungs.shape == phantom.ct.shape
