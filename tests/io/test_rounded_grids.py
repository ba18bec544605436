"""Direction cosines rounded to a few decimals (``0.985, -0.174`` for 10°): axes perpendicular to
rounding but not unit length are neither skewed nor off the CT's grid, in any format.

Such a grid is read as the nearest orthonormal one (``orientation.straightened``, the rule DICOM's
ImageOrientationPatient follows too), its masks are written on that grid in every format and read
back on it, and masks saved before (on the rounded grid) still reopen. A real skew is kept and
refused where it was.
"""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_factory import series_hu, write_series
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.orientation import (
    image_from_display,
    nearest_orthonormal,
    orthonormal_departure,
    straightened,
    to_source,
)
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import Geometry
from napari_chsnet.io.writers import check_writable, grid_skew_deg, read_mask, write_volume

ROTATED_3_DECIMALS = (0.985, -0.174, 0.0, 0.174, 0.985, 0.0, 0.0, 0.0, 1.0)  # 10° about z, lengths 1.00025
TILTED_4_DECIMALS = (1.0, 0.0, 0.0, 0.0, 0.9962, -0.0872, 0.0, 0.0872, 0.9962)
# 25° about z then 15° about x to 3 decimals: neither perpendicular (axes 0.04° off) nor unit length to
# 1e-4, but rounding all the same (max |MᵀM - I| = 8.3e-4)
ROUNDED_OBLIQUE = (0.906, -0.408, 0.109, 0.423, 0.875, -0.235, 0.0, 0.259, 0.966)
SHEAR = math.radians(15)
SHEARED = (1.0, 0.0, 0.0, 0.0, 1.0, math.sin(SHEAR), 0.0, 0.0, math.cos(SHEAR))
SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def _ct_file(tmp_path, direction, suffix=".mha"):
    hu = np.random.default_rng(0).integers(-1000, 400, size=(6, 20, 24)).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.7, 0.7, 2.5))
    image.SetOrigin((-120.3, -90.1, 55.0))
    image.SetDirection(direction)
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(path))
    return path


def _file_direction(path) -> np.ndarray:
    """The direction another tool reads: a NIfTI's sform as nibabel does (RAS → LPS, columns normalised),
    an .mha/.nrrd's as ITK holds it."""
    if str(path).endswith((".nii", ".nii.gz")):
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        srow = np.reshape(struct.unpack_from("<12f", raw, 280), (3, 4))[:, :3] * np.array([[-1], [-1], [1]])
        return srow / np.linalg.norm(srow, axis=0)
    return np.reshape(sitk.ReadImage(str(path)).GetDirection(), (3, 3))


# ---------------------------------------------------------------- the shared rule
def test_nearest_orthonormal_is_shared_by_dicom_and_keeps_a_rounded_grids_handedness():
    matrix = np.reshape(ROTATED_3_DECIMALS, (3, 3))
    nearest = nearest_orthonormal(matrix)
    np.testing.assert_allclose(nearest.T @ nearest, np.eye(3), atol=1e-12)
    assert np.linalg.det(nearest) > 0 and np.abs(nearest - matrix).max() < 1e-3
    left_handed = matrix * np.array([1, 1, -1])
    assert np.linalg.det(nearest_orthonormal(left_handed)) < 0
    # DICOM's two cosines give the first two columns of the same matrix
    np.testing.assert_allclose(nearest_orthonormal(matrix[:, :2]), nearest[:, :2], atol=1e-12)


def test_only_a_rounding_size_departure_is_straightened():
    assert orthonormal_departure(np.reshape(ROTATED_3_DECIMALS, (3, 3))) == pytest.approx(5.01e-4, rel=1e-3)
    for rounded in (ROTATED_3_DECIMALS, TILTED_4_DECIMALS, ROUNDED_OBLIQUE):
        matrix = np.reshape(straightened(rounded), (3, 3))
        np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)
    assert straightened(SHEARED) == SHEARED  # a real skew is the file's grid: kept
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert straightened(identity) == identity  # exact cosines are not touched


def test_grid_skew_counts_the_angles_between_axes_not_their_lengths():
    """``chsnet segment`` refused a scan with cosines 0.985/0.174 as "0.00° from perpendicular"."""
    for rounded in (ROTATED_3_DECIMALS, TILTED_4_DECIMALS, ROUNDED_OBLIQUE):
        assert grid_skew_deg(Geometry((0.7, 0.7, 2.5), direction=rounded)) is None
        check_writable("lungs.nii.gz", Geometry((0.7, 0.7, 2.5), direction=rounded))
    long_axes = tuple(np.multiply(np.reshape(np.eye(3), 9), 1.01))  # perpendicular, 1 % long: no skew
    assert grid_skew_deg(Geometry((1.0, 1.0, 1.0), direction=long_axes)) is None
    assert grid_skew_deg(Geometry((1.0, 1.0, 1.0), direction=SHEARED)) == pytest.approx(15.0)


# ---------------------------------------------------------------- a CT with rounded cosines
@pytest.mark.parametrize(
    "direction",
    [ROTATED_3_DECIMALS, TILTED_4_DECIMALS, ROUNDED_OBLIQUE],
    ids=["rot10-3dec", "tilt5-4dec", "oblique-3dec"],
)
@pytest.mark.parametrize("source_suffix", [".mha", ".nrrd"])
def test_a_ct_with_rounded_cosines_is_read_on_the_nearest_orthonormal_grid(
    tmp_path, direction, source_suffix
):
    volume = read_ct(_ct_file(tmp_path, direction, source_suffix), intensity="hu")
    matrix = np.reshape(volume.geometry.direction, (3, 3))
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(matrix, np.reshape(direction, (3, 3)), atol=1e-3)
    assert grid_skew_deg(volume.geometry) is None


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize(
    "direction", [ROTATED_3_DECIMALS, ROUNDED_OBLIQUE], ids=["rot10-3dec", "oblique-3dec"]
)
def test_masks_of_a_ct_with_rounded_cosines_are_written_and_read_back_on_its_grid(
    tmp_path, suffix, direction
):
    """NIfTI was refused ("0.00° from perpendicular") and .nrrd failed its read-back ("direction cosines
    differ by up to 0.0002" between identical printed numbers)."""
    source = _ct_file(tmp_path, direction)
    volume = read_ct(source, intensity="hu")
    labels = (volume.hu > 0).astype(np.uint8)
    written = write_volume(tmp_path / f"lungs{suffix}", labels, volume.geometry, is_label=True)
    np.testing.assert_array_equal(read_mask(written, volume.geometry, volume.shape), labels)
    # other tools place the mask where the CT file is, to the rounding of its cosines
    np.testing.assert_allclose(_file_direction(written), np.reshape(direction, (3, 3)), atol=1e-3)
    first, second = sitk.ReadImage(str(source)), sitk.ReadImage(str(written))
    np.testing.assert_allclose(second.GetSpacing(), first.GetSpacing(), rtol=1e-4)
    np.testing.assert_allclose(second.GetOrigin(), first.GetOrigin(), atol=1e-3)


def test_a_mask_off_the_grid_names_numbers_that_differ(tmp_path):
    """The message printed 3 decimals for a 1e-4 tolerance: "spacing (0.700, …) vs (0.700, …)"."""
    volume = read_ct(_ct_file(tmp_path, (1, 0, 0, 0, 1, 0, 0, 0, 1)), intensity="hu")
    image = sitk.GetImageFromArray(np.zeros(volume.shape, np.uint8))
    image.SetSpacing((0.7003, 0.7, 2.5))
    image.SetOrigin(volume.geometry.origin_mm)
    sitk.WriteImage(image, str(tmp_path / "lungs.mha"))
    with pytest.raises(
        InvalidVolumeError, match=r"spacing \(0\.7003, 0\.7, 2\.5\) vs \(0\.7, 0\.7, 2\.5\) mm"
    ):
        read_mask(tmp_path / "lungs.mha", volume.geometry, volume.shape)


# ---------------------------------------------------------------- masks saved before (review 3)
DICOM_ORIENTATION = (1, 0, 0, 0, 0.985, -0.174)  # 10° tilt to 3 decimals: lengths 1.00025


def _old_geometry(volume, orientation=DICOM_ORIENTATION, spacing_z_mm=2.0) -> Geometry:
    """The grid the previous version read the series on: the cosines as written, the normal their cross
    product (1.0005 long) and the slice spacing measured along it (2 mm x 1.0005²)."""
    row, column = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, column)
    direction = np.column_stack([row, column, normal])
    spacing_z = spacing_z_mm * float(np.linalg.norm(normal)) ** 2
    return Geometry(
        (volume.geometry.spacing_mm[0], volume.geometry.spacing_mm[1], spacing_z),
        volume.geometry.origin_mm,
        tuple(float(v) for v in direction.ravel()),
        volume.geometry.source_orientation,
    )


def _write_as_before(path, labels, geometry: Geometry):
    """Write a mask as the previous version did: ITK's writer, the grid as it stood (unstraightened)."""
    image = to_source(image_from_display(labels, geometry), geometry.source_orientation)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_masks_saved_for_a_rounded_dicom_series_before_it_was_straightened_reopen(tmp_path, suffix):
    """read_mask allows 1e-4, but straightening moved the series' direction ~2.5e-4 and its slice
    spacing 2.001 → 2.0005 mm: masks from the previous version no longer reopened."""
    write_series(tmp_path / "s", series_hu(4), orientation=DICOM_ORIENTATION)
    volume = read_ct(tmp_path / "s")
    lungs = np.zeros(volume.shape, np.uint8)
    lungs[1:3, 5:10, 4:8] = 1
    old = _write_as_before(tmp_path / f"old_lungs{suffix}", lungs, _old_geometry(volume))
    np.testing.assert_array_equal(read_mask(old, volume.geometry, volume.shape), lungs)
    new = write_volume(tmp_path / f"new_lungs{suffix}", lungs, volume.geometry, is_label=True)
    np.testing.assert_array_equal(read_mask(new, volume.geometry, volume.shape), lungs)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_a_mask_on_a_really_different_grid_is_still_refused(tmp_path, suffix):
    write_series(tmp_path / "s", series_hu(4), orientation=DICOM_ORIENTATION)
    volume = read_ct(tmp_path / "s")
    lungs = np.zeros(volume.shape, np.uint8)
    old = _old_geometry(volume)
    sheared = np.reshape(old.direction, (3, 3)).copy()
    sheared[:, 2] = np.reshape(SHEARED, (3, 3))[:, 2]  # the slices lean 15°: a real skew
    skewed = Geometry(old.spacing_mm, old.origin_mm, tuple(sheared.ravel()), old.source_orientation)
    with pytest.raises(InvalidVolumeError, match="direction cosines differ"):
        read_mask(
            _write_as_before(tmp_path / f"skewed{suffix}", lungs, skewed), volume.geometry, volume.shape
        )
    thicker = Geometry((*old.spacing_mm[:2], 2.02), old.origin_mm, old.direction, old.source_orientation)
    with pytest.raises(InvalidVolumeError, match="spacing"):  # 1 % off: another grid, not rounding
        read_mask(
            _write_as_before(tmp_path / f"thicker{suffix}", lungs, thicker), volume.geometry, volume.shape
        )
