"""Enhanced (multi-frame) DICOM: frames go through the same ordering, gap, spacing, rescale and
padding handling as the slices of a one-file-per-slice series."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicom_factory import series_hu, write_enhanced, write_series
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.readers import read_ct


def _edit(path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def test_frames_stored_head_first_are_ordered_by_position(tmp_path):
    hu = series_hu(5, 12, 10)
    write_enhanced(tmp_path / "e.dcm", hu[::-1], positions_z_mm=[38.0, 36.0, 34.0, 32.0, 30.0])
    volume = read_ct(tmp_path / "e.dcm")
    assert volume.hu.dtype == np.int16
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))
    assert volume.geometry.origin_mm == pytest.approx((-10.0, -20.0, 30.0))
    assert volume.metadata["warnings"] == []
    assert volume.metadata["SliceThickness"] == "2", "a multi-frame file states it per frame"


def test_missing_frame_is_refused_or_interpolated_on_request(tmp_path):
    """GDCM read this file with a spacing of 1 mm in every direction, silently."""
    hu = series_hu(6, 12, 10)
    kept = [0, 1, 2, 4, 5]
    write_enhanced(tmp_path / "e.dcm", hu[kept], positions_z_mm=[30.0 + 2 * k for k in kept])
    with pytest.raises(InvalidVolumeError, match=r"misses slices \(1 after slice 3 of 5, 2.000 mm spacing\)"):
        read_ct(tmp_path)
    volume = read_ct(tmp_path, fill_missing_slices=True)
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))
    np.testing.assert_allclose(volume.hu[:, 0, 0], hu[:, 0, 0])
    assert volume.metadata["interpolated_slices"] == [3]


def test_frame_positions_rounded_to_a_micrometre_keep_the_spacing(tmp_path):
    """GDCM gave up on positions jittered by 0.001 mm and returned a spacing of 1 mm."""
    jitter = np.random.default_rng(1).uniform(-0.001, 0.001, 8)
    hu = series_hu(8, 12, 10)
    write_enhanced(tmp_path / "e.dcm", hu, positions_z_mm=30.0 + 2.0 * np.arange(8) + jitter)
    volume = read_ct(tmp_path / "e.dcm")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0), abs=1e-3)
    assert volume.metadata["warnings"] == []


def test_per_frame_rescale_is_applied_to_its_own_frame(tmp_path):
    """GDCM applied one rescale to every frame: odd frames came out 76 HU off."""
    hu = series_hu(4, 12, 10)
    write_enhanced(tmp_path / "e.dcm", hu, intercepts=[-1024.0, -1100.0, -1024.0, -1100.0])
    volume = read_ct(tmp_path / "e.dcm")
    assert volume.hu.dtype == np.int16
    np.testing.assert_array_equal(volume.hu, hu)


def test_series_split_over_two_multiframe_files_reads_as_one(tmp_path):
    hu = series_hu(10, 12, 10)
    uid = pydicom.uid.generate_uid()
    write_enhanced(tmp_path / "part1.dcm", hu[0::2], series_uid=uid, positions_z_mm=30.0 + 4.0 * np.arange(5))
    write_enhanced(tmp_path / "part2.dcm", hu[1::2], series_uid=uid, positions_z_mm=32.0 + 4.0 * np.arange(5))
    volume = read_ct(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))
    assert volume.metadata["warnings"] == []


def test_each_file_is_decoded_once_however_many_frames_it_holds(tmp_path, monkeypatch):
    uid = pydicom.uid.generate_uid()
    write_enhanced(tmp_path / "part1.dcm", series_hu(5, 12, 10), series_uid=uid)
    write_enhanced(tmp_path / "part2.dcm", series_hu(5, 12, 10), series_uid=uid, first_z_mm=40.0)
    decoded = []
    pixel_array = pydicom.Dataset.pixel_array

    def counting(ds):
        decoded.append(ds.filename)
        return pixel_array.fget(ds)

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(counting))
    assert read_ct(tmp_path).shape == (10, 12, 10)
    assert sorted(decoded) == [str(tmp_path / "part1.dcm"), str(tmp_path / "part2.dcm")]


def test_frames_without_positions_are_stacked_in_frame_order(tmp_path):
    hu = series_hu(4, 12, 10)
    path = write_enhanced(tmp_path / "e.dcm", hu)

    def drop_positions(ds):
        for frame in ds.PerFrameFunctionalGroupsSequence:
            del frame.PlanePositionSequence

    _edit(path, drop_positions)
    volume = read_ct(path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.spacing_mm[2] == pytest.approx(2.0), (
        "SpacingBetweenSlices of PixelMeasuresSequence"
    )
    assert any("carry no ImagePositionPatient" in w for w in volume.metadata["warnings"])


def test_per_frame_orientation_and_pixel_spacing_are_used(tmp_path):
    """PlaneOrientationSequence and PixelMeasuresSequence may sit in each frame instead of the shared group."""
    hu = series_hu(3, 12, 10)
    path = write_enhanced(tmp_path / "e.dcm", hu)

    def move_to_frames(ds):
        shared = ds.SharedFunctionalGroupsSequence[0]
        for frame in ds.PerFrameFunctionalGroupsSequence:
            frame.PlaneOrientationSequence = shared.PlaneOrientationSequence
            frame.PixelMeasuresSequence = shared.PixelMeasuresSequence
        del shared.PlaneOrientationSequence, shared.PixelMeasuresSequence

    _edit(path, move_to_frames)
    volume = read_ct(path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))


def test_padding_in_a_multiframe_file_reads_as_air(tmp_path):
    hu = series_hu(3, 12, 10)
    path = write_enhanced(tmp_path / "e.dcm", hu)

    def pad_first_column(ds):
        stored = ds.pixel_array.copy()
        stored[:, :, 0] = 63536
        ds.PixelData, ds.PixelPaddingValue = stored.tobytes(), 63536
        ds["PixelPaddingValue"].VR = "US"

    _edit(path, pad_first_column)
    volume = read_ct(path)
    assert volume.hu.dtype == np.int16
    assert np.all(volume.hu[:, :, 0] == -1024)
    np.testing.assert_array_equal(volume.hu[:, :, 1:], hu[:, :, 1:])


def test_multiframe_and_single_frame_files_of_one_series_read_together(tmp_path):
    hu = series_hu(6, 12, 10)
    uid = pydicom.uid.generate_uid()
    write_enhanced(tmp_path / "frames.dcm", hu[:3], series_uid=uid)
    write_series(tmp_path, hu[3:], series_uid=uid, origin_mm=(-10.0, -20.0, 36.0), pixel_spacing=(0.7, 0.8))
    np.testing.assert_array_equal(read_ct(tmp_path).hu, hu)
