"""NIfTI/MHA/NRRD reading into the LPS display grid, and writing back onto the source grid."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_factory import physical_point
from napari_chsnet.errors import InvalidVolumeError, OutputError, OutputExistsError
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import Geometry
from napari_chsnet.io.writers import read_mask, write_volume


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    cz, sz = np.cos(np.deg2rad(z_deg)), np.sin(np.deg2rad(z_deg))
    cx, sx = np.cos(np.deg2rad(x_deg)), np.sin(np.deg2rad(x_deg))
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


# Direction matrices (columns = where the file's i, j, k axes point, in LPS).
ORIENTATIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
    "prone-flipped": np.diag([1.0, -1.0, -1.0]),
    "oblique": _rotation(15, 5),
}


def _source_image(direction: np.ndarray) -> sitk.Image:
    values = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) - 150
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-12.5, 30.25, -100.0))
    image.SetDirection(tuple(direction.ravel()))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_round_trip_lands_on_the_source_voxels(tmp_path, suffix, orientation):
    source = _source_image(ORIENTATIONS[orientation])
    original = tmp_path / f"ct{suffix}"
    sitk.WriteImage(source, str(original))
    volume = read_ct(original)
    direction = np.asarray(volume.geometry.direction).reshape(3, 3)
    assert np.all(np.argmax(np.abs(direction), axis=0) == [0, 1, 2]), "display axes must follow x, y, z"
    assert np.all(np.diag(direction) > 0), "display axes must point to L, P, S"
    written = write_volume(tmp_path / f"back{suffix}", volume.hu, volume.geometry)
    first, second = sitk.ReadImage(str(original)), sitk.ReadImage(str(written))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(second), sitk.GetArrayFromImage(first))
    tolerance = 1e-4 if suffix == ".nii.gz" else 1e-9  # NIfTI stores its affine in float32
    np.testing.assert_allclose(second.GetSpacing(), first.GetSpacing(), atol=tolerance)
    np.testing.assert_allclose(second.GetOrigin(), first.GetOrigin(), atol=tolerance * 100)
    np.testing.assert_allclose(second.GetDirection(), first.GetDirection(), atol=tolerance)
    again = read_ct(written)
    np.testing.assert_array_equal(again.hu, volume.hu)
    assert again.geometry.source_orientation == volume.geometry.source_orientation


@pytest.mark.parametrize("orientation", ["LPS", "RAS"])
def test_marker_at_patient_right_ends_at_small_x(tmp_path, orientation):
    image = _source_image(ORIENTATIONS[orientation])
    values = np.full((6, 7, 8), -1000, dtype=np.int16)
    # file index i that lies furthest toward the patient's right (-x in LPS)
    right_i = 0 if orientation == "LPS" else 7
    values[3, 2, right_i] = 500
    marked = sitk.GetImageFromArray(values)
    marked.CopyInformation(image)
    path = tmp_path / "marker.nii.gz"
    sitk.WriteImage(marked, str(path))
    volume = read_ct(path)
    z, y, x = np.argwhere(volume.hu == 500)[0]
    assert x == 0, "the patient's right must be at x index 0 of the display grid"
    expected = marked.TransformIndexToPhysicalPoint((right_i, 2, 3))
    np.testing.assert_allclose(physical_point(volume.geometry, (z, y, x)), expected, atol=1e-3)


@pytest.mark.realdata
def test_real_covid_volume(shared_data):
    volume = read_ct(shared_data / "covid-ct-md" / "P001_ct_hu.nii.gz")
    assert volume.shape == (148, 512, 512)
    assert volume.hu.dtype == np.int16
    assert volume.geometry.source_orientation == "LPS"
    assert volume.geometry.spacing_mm[2] == pytest.approx(2.0)
    assert volume.hu.min() >= -1100 and 1000 < volume.hu.max() < 4000
    middle = volume.hu[74]
    # lungs: a large share of the body is aerated lung at about -850 HU
    assert 0.1 < np.mean((middle > -950) & (middle < -700)) < 0.5


@pytest.mark.parametrize(
    "z_deg, x_deg, orientation, warned",
    [(30, 0, "LPS", True), (-35, 0, "RAS", True), (0, 25, "prone-flipped", True), (8, 0, "RAS", False)],
)
def test_a_grid_turned_far_from_the_axes_is_warned_about(tmp_path, z_deg, x_deg, orientation, warned):
    """napari shows the stored grid unrotated and right/left follow it: a 30° turn misplaces both."""
    direction = _rotation(z_deg, x_deg) @ ORIENTATIONS[orientation]
    sitk.WriteImage(_source_image(direction), str(tmp_path / "ct.nii.gz"))
    notes = [w for w in read_ct(tmp_path / "ct.nii.gz").metadata["warnings"] if "turned" in w]
    if warned:
        [note] = notes
        assert f"turned {abs(z_deg) + abs(x_deg):.0f}° from the patient's axes" in note
        assert "right/left lung labels follow the stored grid" in note
    else:
        assert notes == [], "a small obliquity (under 10°) is common and harmless"


def test_float_values_are_kept_as_float32(tmp_path):
    image = sitk.GetImageFromArray(np.full((2, 3, 4), -850.5, dtype=np.float32))
    sitk.WriteImage(image, str(tmp_path / "f.mha"))
    assert read_ct(tmp_path / "f.mha").hu.dtype == np.float32
    image = sitk.GetImageFromArray(np.full((2, 3, 4), -850.0, dtype=np.float32))
    sitk.WriteImage(image, str(tmp_path / "i.mha"))
    assert read_ct(tmp_path / "i.mha").hu.dtype == np.int16


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    volume = read_ct(_written(tmp_path))
    target = tmp_path / "out.nrrd"
    write_volume(target, volume.hu, volume.geometry)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_volume(target, volume.hu, volume.geometry)
    write_volume(target, volume.hu, volume.geometry, overwrite=True)


def test_truncated_write_is_an_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    # ITK ignores a full disk: the file ends early and WriteImage returns as if it had worked.
    from napari_chsnet.io import writers

    target = tmp_path / "out.nii.gz"
    write_volume(target, np.zeros((4, 5, 6), np.float32), Geometry((1.0, 1.0, 1.0)))
    old = target.read_bytes()
    real_write = sitk.WriteImage

    def write_half(image, name, **kwargs):
        real_write(image, name, **kwargs)
        with open(name, "r+b") as handle:
            handle.truncate(os.path.getsize(name) // 2)

    monkeypatch.setattr(writers.sitk, "WriteImage", write_half)
    values = np.random.default_rng(0).random((4, 5, 6), dtype=np.float32)
    with pytest.raises(OutputError, match="could not write"):
        write_volume(target, values, Geometry((1.0, 1.0, 1.0)), overwrite=True)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # no temporary left


def test_unwritable_folder_is_an_output_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="could not write"):
        write_volume(
            tmp_path / "afile" / "out.nii.gz", np.zeros((2, 2, 2), np.float32), Geometry((1.0, 1.0, 1.0))
        )


def _written(tmp_path, orientation: str = "RAS"):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_source_image(ORIENTATIONS[orientation]), str(path))
    return path


def test_labels_are_written_as_uint8_and_read_back_as_masks(tmp_path):
    volume = read_ct(_written(tmp_path))
    labels = (np.arange(volume.hu.size).reshape(volume.shape) % 3).astype(np.int64)
    path = write_volume(tmp_path / "lungs.nii.gz", labels, volume.geometry, is_label=True)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
    mask = read_mask(path, volume.geometry, volume.shape)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, labels)


def test_labels_outside_uint8_are_refused(tmp_path):
    volume = read_ct(_written(tmp_path))
    with pytest.raises(InvalidVolumeError, match="0..255"):
        write_volume(tmp_path / "bad.nii.gz", np.full(volume.shape, 300), volume.geometry, is_label=True)


def test_mask_on_another_grid_is_refused(tmp_path):
    volume = read_ct(_written(tmp_path))
    other = _source_image(ORIENTATIONS["RAS"])
    other.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(sitk.Cast(other > 0, sitk.sitkUInt8), str(tmp_path / "mask.nii.gz"))
    with pytest.raises(InvalidVolumeError, match="does not lie on the CT's voxel grid.*spacing"):
        read_mask(tmp_path / "mask.nii.gz", volume.geometry)


def test_a_mask_saved_without_a_header_is_told_so(tmp_path):
    """A mask of the CT's size written from an array (default header: 1 mm voxels at the origin) is on
    another grid; the message says how to give it the CT's header instead of 'resample'."""
    ct = _source_image(ORIENTATIONS["LPS"])
    sitk.WriteImage(ct, str(tmp_path / "ct.mha"))
    volume = read_ct(tmp_path / "ct.mha", intensity="hu")
    headerless = sitk.GetImageFromArray(sitk.GetArrayFromImage(ct > 0).astype(np.uint8))
    sitk.WriteImage(headerless, str(tmp_path / "mask.nii.gz"))
    with pytest.raises(InvalidVolumeError, match="1 mm voxels or its first voxel at 0 mm.*CopyInformation"):
        read_mask(tmp_path / "mask.nii.gz", volume.geometry, volume.shape)
    with pytest.raises(InvalidVolumeError, match="resample the mask onto the CT first"):  # size not known
        read_mask(tmp_path / "mask.nii.gz", volume.geometry)
    headerless.SetSpacing(ct.GetSpacing())  # a NIfTI with no qform or sform keeps its voxel size only
    sitk.WriteImage(headerless, str(tmp_path / "no_position.mha"))
    with pytest.raises(InvalidVolumeError, match=r"origin .*first voxel at 0 mm.*CopyInformation"):
        read_mask(tmp_path / "no_position.mha", volume.geometry, volume.shape)


def test_a_bad_mask_file_is_refused_in_a_mask_s_words(tmp_path):
    """A colour or NaN mask was told to be a CT ('not a CT; open a greyscale CT volume', 're-export the scan')."""
    ct = _source_image(ORIENTATIONS["LPS"])
    sitk.WriteImage(ct, str(tmp_path / "ct.mha"))
    volume = read_ct(tmp_path / "ct.mha", intensity="hu")
    labels = sitk.GetArrayFromImage(ct > 0).astype(np.float32)
    labels[0, 0, 0] = np.nan
    with_nan = sitk.GetImageFromArray(labels)
    with_nan.CopyInformation(ct)
    sitk.WriteImage(with_nan, str(tmp_path / "nan.nii.gz"))
    with pytest.raises(
        InvalidVolumeError, match=r"NaN or infinite values \(1 of .*save the mask again with a label"
    ):
        read_mask(tmp_path / "nan.nii.gz", volume.geometry, volume.shape)
    rgb = sitk.Compose([sitk.Cast(ct > 0, sitk.sitkUInt8)] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(
        InvalidVolumeError, match="values per voxel .* not a label mask; save one label per voxel"
    ):
        read_mask(tmp_path / "rgb.mha", volume.geometry, volume.shape)


@pytest.mark.parametrize(("shift_mm", "refused"), [(0.005, False), (0.05, True), (0.4, True)])
def test_a_mask_is_taken_only_within_a_hundredth_of_a_mm_of_the_ct_s_origin(tmp_path, shift_mm, refused):
    """read_mask allows float32 rounding of the origin (0.01 mm, docs/io.md), not a mask moved by part
    of a voxel: 0.4 mm is half of these 0.8 mm voxels, every label drawn beside its CT voxel."""
    ct = _source_image(ORIENTATIONS["LPS"])
    sitk.WriteImage(ct, str(tmp_path / "ct.mha"))
    volume = read_ct(tmp_path / "ct.mha", intensity="hu")
    mask = sitk.Cast(ct > 0, sitk.sitkUInt8)
    mask.SetOrigin(tuple(np.add(ct.GetOrigin(), (shift_mm, 0.0, 0.0))))
    sitk.WriteImage(mask, str(tmp_path / "mask.mha"))
    if refused:
        with pytest.raises(InvalidVolumeError, match=r"does not lie on the CT's voxel grid \(origin"):
            read_mask(tmp_path / "mask.mha", volume.geometry, volume.shape)
    else:
        np.testing.assert_array_equal(
            read_mask(tmp_path / "mask.mha", volume.geometry, volume.shape), volume.hu > 0
        )


@pytest.mark.parametrize("name", ["missing.nii.gz", "missing.mha"])
def test_a_missing_mask_is_an_invalid_volume_naming_it(tmp_path, name):
    volume = read_ct(_written(tmp_path))
    with pytest.raises(InvalidVolumeError, match=f"{name} not found"):
        read_mask(tmp_path / name, volume.geometry)


# NIfTI-1 header offsets: qform_code and sform_code, qoffset_x, srow_x[3] (the sform's x offset).
_CODES, _QOFFSET_X, _SFORM_X = 252, 268, 292


def _qsform_notes(volume) -> list[str]:
    return [w for w in volume.metadata["warnings"] if "qform" in w]


@pytest.mark.parametrize(
    ("name", "codes", "moved", "used"),
    [
        ("qs.nii", (1, 2), _SFORM_X, "qform"),  # sform only "aligned": ITK keeps the qform
        ("sq.nii.gz", (1, 1), _QOFFSET_X, "sform"),  # both scanner-based: ITK takes the sform
    ],
)
def test_disagreeing_qform_and_sform_are_reported(tmp_path, name, codes, moved, used):
    base = tmp_path / "base.nii"
    sitk.WriteImage(_source_image(ORIENTATIONS["oblique"]), str(base))
    expected = read_ct(base, intensity="hu")  # values are not a chest's: no intensity note
    assert _qsform_notes(expected) == [], "ITK's own qform and sform agree to float32 rounding"
    raw = bytearray(base.read_bytes())
    struct.pack_into("<2h", raw, _CODES, *codes)
    struct.pack_into("<f", raw, moved, struct.unpack_from("<f", raw, moved)[0] + 50.0)  # 50 mm along x
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    volume = read_ct(path, intensity="hu")
    [warning] = _qsform_notes(volume)  # beside the note that the 16° oblique grid is shown unrotated
    assert f"the {used} was used" in warning and "up to 50.0 mm apart" in warning
    if used == "qform":  # the reading itself is unchanged (to the float32 rounding of the quaternion)
        np.testing.assert_allclose(volume.geometry.origin_mm, expected.geometry.origin_mm, atol=1e-4)
        np.testing.assert_allclose(volume.geometry.direction, expected.geometry.direction, atol=1e-6)


@pytest.mark.parametrize(("apart_mm", "noted"), [(0.05, False), (0.3, True)])
def test_qform_and_sform_are_noted_only_beyond_a_tenth_of_a_mm_apart(tmp_path, apart_mm, noted):
    """docs/io.md: a note when the two transforms place the voxels more than 0.1 mm apart; a
    disagreement below it (e.g. a converter's rounding) is no note."""
    base = tmp_path / "base.nii"
    sitk.WriteImage(_source_image(ORIENTATIONS["oblique"]), str(base))
    raw = bytearray(base.read_bytes())
    struct.pack_into("<2h", raw, _CODES, 1, 2)  # both set; ITK keeps the qform
    struct.pack_into("<f", raw, _SFORM_X, struct.unpack_from("<f", raw, _SFORM_X)[0] + apart_mm)
    path = tmp_path / "qs.nii"
    path.write_bytes(bytes(raw))
    notes = _qsform_notes(read_ct(path, intensity="hu"))
    if noted:
        [note] = notes
        assert f"lie up to {apart_mm:.1f} mm apart; the qform was used" in note
    else:
        assert notes == []
