"""Direction cosines rounded to a few decimals (``0.985, -0.174`` for 10°): axes perpendicular to
rounding but not unit length are neither skewed nor off the CT's grid, in any format.

Such a grid is read as the file holds it (DICOM's ImageOrientationPatient is straightened when read),
its masks are written as each format holds it (.mha: exactly the CT's; .nrrd: unit columns; NIfTI: the
nearest orthonormal one, ``orientation.straightened``) and read back on it, and masks saved before (on
the rounded grid) still reopen. A real skew is kept and refused where it was.
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


def test_grid_skew_counts_what_straightening_leaves_not_rounding():
    """``chsnet segment`` refused a scan with cosines 0.985/0.174 as "0.00° from perpendicular"; a direction
    that straightening cannot make orthonormal (1 % long axes: not rounding) has no NIfTI file, so it is
    refused up front, not after the networks ran."""
    for rounded in (ROTATED_3_DECIMALS, TILTED_4_DECIMALS, ROUNDED_OBLIQUE):
        assert grid_skew_deg(Geometry((0.7, 0.7, 2.5), direction=rounded)) is None
        check_writable("lungs.nii.gz", Geometry((0.7, 0.7, 2.5), direction=rounded))
    long_axes = tuple(np.multiply(np.reshape(np.eye(3), 9), 1.01))  # perpendicular, 1 % long: not rounding
    assert grid_skew_deg(Geometry((1.0, 1.0, 1.0), direction=long_axes)) is not None
    with pytest.raises(InvalidVolumeError, match="write .mha or .nrrd"):
        check_writable("lungs.nii.gz", Geometry((1.0, 1.0, 1.0), direction=long_axes))
    assert grid_skew_deg(Geometry((1.0, 1.0, 1.0), direction=SHEARED)) == pytest.approx(15.0)


# ---------------------------------------------------------------- a CT with rounded cosines
@pytest.mark.parametrize(
    "direction",
    [ROTATED_3_DECIMALS, TILTED_4_DECIMALS, ROUNDED_OBLIQUE],
    ids=["rot10-3dec", "tilt5-4dec", "oblique-3dec"],
)
@pytest.mark.parametrize("source_suffix", [".mha", ".nrrd"])
def test_a_ct_with_rounded_cosines_is_read_as_the_file_holds_it_and_is_not_skewed(
    tmp_path, direction, source_suffix
):
    path = _ct_file(tmp_path, direction, source_suffix)
    volume = read_ct(path, intensity="hu")
    # as ITK reads the file (an .nrrd's columns come back at unit length), not straightened
    np.testing.assert_allclose(
        volume.geometry.direction, sitk.ReadImage(str(path)).GetDirection(), atol=1e-12
    )
    np.testing.assert_allclose(
        np.reshape(volume.geometry.direction, (3, 3)), np.reshape(direction, (3, 3)), atol=1e-3
    )
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


@pytest.mark.parametrize("suffix", [".mha"])
def test_masks_saved_for_a_rounded_dicom_series_before_it_was_straightened_reopen(tmp_path, suffix):
    """read_mask allows 1e-4, but straightening moved the series' direction ~2.5e-4 and its slice
    spacing 2.001 → 2.0005 mm: masks from the previous version no longer reopened. The spacing slack
    needs a direction that shows the rounding (the .mha mask's); an old .nrrd/.nii.gz mask reads back
    with orthonormal axes, as does the straightened series, so it gets the normal tolerance."""
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


# ---------------------------------------------------------------- review of the straightening (diff2)
def _rotation_z(degrees: float, decimals: int | None = None) -> tuple[float, ...]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if decimals is not None:
        c, s = round(c, decimals), round(s, decimals)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def test_every_3_decimal_tilt_is_rounding_and_its_nifti_masks_are_written(tmp_path):
    """6.0° written 0.995/0.105 departs 1.05e-3 from orthonormal (52 of 901 tilts exceed 1e-3): it was left
    unstraightened, counted "not skewed", and ``chsnet segment`` ran the networks, then failed writing
    lungs.nii.gz ("direction cosines differ by up to 0.000522")."""
    for tenth in range(0, 901):
        direction = _rotation_z(tenth / 10, 3)
        assert grid_skew_deg(Geometry((0.7, 0.7, 2.5), direction=direction)) is None, tenth / 10
    source = _ct_file(tmp_path, _rotation_z(6.0, 3))
    volume = read_ct(source, intensity="hu")
    labels = (volume.hu > 0).astype(np.uint8)
    for suffix in SUFFIXES:
        written = write_volume(tmp_path / f"lungs{suffix}", labels, volume.geometry, is_label=True)
        np.testing.assert_array_equal(read_mask(written, volume.geometry, volume.shape), labels)


def test_a_direction_straightening_cannot_fix_is_refused_before_anything_is_written(tmp_path):
    """The up-front check (``chsnet segment`` runs it before the networks) refuses every direction the
    NIfTI writer could not write on its grid, so no write fails after inference."""
    beyond = tuple(np.multiply(np.reshape(np.eye(3), 9), 1.003))  # 3e-3 long: not rounding, not a shear
    geometry = Geometry((0.7, 0.7, 2.5), direction=beyond)
    assert grid_skew_deg(geometry) is not None
    with pytest.raises(InvalidVolumeError, match="write .mha or .nrrd"):
        write_volume(tmp_path / "lungs.nii.gz", np.zeros((2, 3, 4), np.uint8), geometry, is_label=True)
    assert not (tmp_path / "lungs.nii.gz").exists()


@pytest.mark.parametrize("mask_suffix", [".mha", ".nrrd", ".nii.gz", ".nii"])
def test_masks_of_an_mha_ct_with_rounded_cosines_match_the_ct_file_for_itk_filters(tmp_path, mask_suffix):
    """The .mha mask's direction differed from the CT file's by 2.47e-4 (straightened on read): ITK filters
    (``sitk.Mask``: "Inputs do not occupy the same physical space") and pyradiomics refused it. The .mha mask
    now has exactly the file's direction; an .nrrd holds unit columns (read back to the CT's within the
    cosines' rounding), a NIfTI the straightened grid; all reopen on the CT."""
    source = _ct_file(tmp_path, ROTATED_3_DECIMALS)
    volume = read_ct(source, intensity="hu")
    labels = (volume.hu > 0).astype(np.uint8)
    written = write_volume(tmp_path / f"lungs{mask_suffix}", labels, volume.geometry, is_label=True)
    np.testing.assert_array_equal(read_mask(written, volume.geometry, volume.shape), labels)
    ct_file, mask_file = sitk.ReadImage(str(source)), sitk.ReadImage(str(written))
    if mask_suffix == ".mha":
        assert mask_file.GetDirection() == ct_file.GetDirection()
        masked = sitk.Mask(ct_file, sitk.Cast(mask_file, sitk.sitkUInt8))
        assert masked.GetSize() == ct_file.GetSize()
    elif mask_suffix == ".nrrd":  # unit columns, exactly as written
        columns = np.reshape(ct_file.GetDirection(), (3, 3))
        unit = columns / np.linalg.norm(columns, axis=0)
        np.testing.assert_allclose(np.reshape(mask_file.GetDirection(), (3, 3)), unit, atol=1e-12)
        np.testing.assert_allclose(mask_file.GetSpacing(), ct_file.GetSpacing(), rtol=1e-12)
    else:
        np.testing.assert_allclose(mask_file.GetDirection(), straightened(ct_file.GetDirection()), atol=1e-6)


def test_the_oblique_spacing_slack_is_only_for_rounded_cosines(tmp_path):
    """Any oblique grid let a mask's spacing differ by 0.1 %: an exact 10° rotation took a mask on a grid
    0.1 % larger. Only a direction that shows the rounding (the CT's or the mask's) gets the slack."""
    for direction, accepted in ((_rotation_z(10.0), False), (ROTATED_3_DECIMALS, True)):
        volume = read_ct(_ct_file(tmp_path, direction), intensity="hu")
        image = sitk.GetImageFromArray(np.zeros(volume.shape, np.uint8))
        image.SetSpacing(tuple(v * 1.001 for v in volume.geometry.spacing_mm))
        image.SetOrigin(volume.geometry.origin_mm)
        image.SetDirection(volume.geometry.direction)
        sitk.WriteImage(image, str(tmp_path / "larger.mha"))
        if accepted:
            read_mask(tmp_path / "larger.mha", volume.geometry, volume.shape)
        else:
            with pytest.raises(InvalidVolumeError, match="spacing"):
                read_mask(tmp_path / "larger.mha", volume.geometry, volume.shape)
