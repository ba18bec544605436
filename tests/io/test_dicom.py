"""DICOM series: choice of series, slice order, gaps, orientation, compression, real slices."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from dicom_factory import (
    INTERCEPT,
    jpeg_lossless_copy,
    physical_point,
    series_hu,
    write_enhanced,
    write_series,
)
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.dicom import _without_repeated_acquisitions
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.writers import read_mask, write_volume


@pytest.mark.realdata
def test_real_lungmask_slices_make_a_two_slice_series(shared_data):
    volume = read_ct(shared_data / "dicom-samples" / "lungmask")
    assert volume.shape == (2, 512, 512)
    assert volume.hu.dtype == np.int16
    assert volume.geometry.spacing_mm == pytest.approx((0.625, 0.625, 1.0))
    assert volume.geometry.source_orientation == "LPS"
    body = volume.hu[:, 200:300, 200:300]
    in_field_of_view = volume.hu[volume.hu > -1500]  # -2048 pads the corners outside the scanned circle
    assert -1100 < np.percentile(in_field_of_view, 5) < -900, (
        "air outside the patient should read about -1000 HU"
    )
    assert -200 < np.median(body) < 300, "the mediastinum/body centre should be soft tissue"
    assert volume.metadata["warnings"] == [], "CT Image Storage without a Modality tag still counts as CT"


@pytest.mark.realdata
def test_real_single_dicom_file(shared_data):
    volume = read_ct(shared_data / "dicom-samples" / "pydicom" / "CT_small.dcm")
    assert volume.shape == (1, 128, 128)
    assert volume.geometry.spacing_mm == pytest.approx((0.661468, 0.661468, 5.0))
    assert volume.metadata["Modality"] == "CT"
    assert volume.metadata["PatientName"] == "CompressedSamples^CT1"
    assert volume.hu.min() >= -1024 and volume.hu.max() < 3072


def test_slices_are_ordered_by_position_not_file_name(axial_series):
    folder, hu = axial_series
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.origin_mm == pytest.approx((-10.0, -20.0, 30.0))
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))
    assert volume.metadata["PatientID"] == "T001"


def test_largest_series_is_chosen_and_localizer_dropped(axial_series, tmp_path):
    folder, hu = axial_series
    write_series(folder, series_hu(3), name="small")
    sagittal = (0, 1, 0, 0, 0, -1)
    write_series(
        folder,
        series_hu(1),
        orientation=sagittal,
        name="scout",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert any("2 image series" in w for w in volume.metadata["warnings"])


def test_slice_with_odd_orientation_inside_the_series_is_dropped(axial_series):
    folder, hu = axial_series
    uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    write_series(
        folder,
        series_hu(1),
        orientation=(0, 1, 0, 0, 0, -1),
        series_uid=uid,
        name="odd",
        image_type=("ORIGINAL", "PRIMARY", "OTHER"),
    )
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert any("orientation differs" in w for w in volume.metadata["warnings"])


def test_a_slice_rotated_by_two_degrees_inside_the_series_is_dropped(axial_series):
    """A slice whose rows run 2° from the others' (cosines 0.999\\0.035) has another orientation: its
    pixels would be stacked 2° off the rest (6 mm at the edge of a 350 mm field of view)."""
    folder, hu = axial_series
    uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    a = np.deg2rad(2)
    write_series(  # one slice past the top of the series (z 16 mm): kept, it would make a 9th slice
        folder,
        series_hu(1),
        orientation=(np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0),
        series_uid=uid,
        origin_mm=(-10.0, -20.0, 46.0),
        name="turned",
    )
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert any("dropped 1 slice(s)" in w and "orientation differs" in w for w in volume.metadata["warnings"])


def test_missing_slice_is_refused_or_interpolated_on_request(axial_series):
    folder, hu = axial_series
    (folder / "IM0005.dcm").unlink()  # slice index 3 (files are numbered superior first)
    with pytest.raises(InvalidVolumeError, match="misses slices") as refusal:
        read_ct(folder)
    assert "chsnet segment --fill-missing-slices" in str(refusal.value), "advice a CLI user can follow"
    volume = read_ct(folder, fill_missing_slices=True)
    assert volume.shape == hu.shape
    np.testing.assert_allclose(volume.hu[3], (hu[2].astype(float) + hu[4]) / 2)
    assert volume.metadata["interpolated_slices"] == [3]
    assert any("interpolated" in w for w in volume.metadata["warnings"])


def test_uneven_spacing_is_resampled_so_every_slice_lies_at_its_true_position(tmp_path):
    """Slice 1 lies 0.5 mm (25 % of the spacing) from its place on a regular grid: it was shown there."""
    write_series(tmp_path / "s", series_hu(6), positions_mm=[0.0, 2.5, 4.0, 6.0, 8.0, 10.0])
    volume = read_ct(tmp_path / "s")
    assert volume.hu.dtype == np.float32
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))
    assert volume.geometry.origin_mm == pytest.approx((-10.0, -20.0, 30.0))
    # grid z = 2 mm lies 4/5 of the way from slice 0 (z 0, -1000 HU) to slice 1 (z 2.5, -900 HU)
    np.testing.assert_allclose(volume.hu[:, 0, 0], [-1000, -920, -800, -700, -600, -500])
    assert volume.metadata["resampled_slices"] == {
        "measured": 6, "measured_steps_mm": [1.5, 2.5], "spacing_mm": 2.0
    }  # fmt: skip
    assert any(
        "uneven slice spacing from 1.500 to 2.500 mm" in w
        and "resampled by linear interpolation onto a regular 2.000 mm grid of 6 slices" in w
        for w in volume.metadata["warnings"]
    )


def test_a_layout_is_built_once_with_all_its_warnings(tmp_path):
    """The resampled layout was built and its warning then appended to the list it held, and the tilt
    warning appended to a frozen layout's list; now each layout gets its warnings whole."""
    from napari_chsnet.io.dicom import order_slices
    from napari_chsnet.io.dicom_headers import read_headers

    paths = write_series(tmp_path / "s", series_hu(6), positions_mm=[0.0, 2.5, 4.0, 6.0, 8.0, 10.0])
    for k, path in enumerate(paths):  # each slice 0.5 mm further posterior: a gantry tilt
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient[1] = ds.ImagePositionPatient[1] + 0.5 * k
        ds.save_as(path)
    layout = order_slices(read_headers(paths).headers, 2.0)
    assert layout.resampled and layout.n_grid == 6
    assert isinstance(layout.warnings, tuple)
    assert [w[:40] for w in layout.warnings] == [
        "uneven slice spacing from 1.500 to 2.500",
        "slice positions drift within the slice p",
    ]
    assert "onto a regular 2.000 mm grid of 6 slices" in layout.warnings[0]


def test_slices_1_mm_then_2_mm_apart_keep_the_scan_length(tmp_path):
    """On a regular 2 mm grid the 16 mm scan was 20 mm long, its upper slices up to 4 mm out of place."""
    positions = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
    hu = series_hu(len(positions))
    write_series(tmp_path / "s", hu, positions_mm=positions)
    volume = read_ct(tmp_path / "s")
    assert volume.shape[0] == 9 and volume.geometry.spacing_mm[2] == pytest.approx(2.0)
    on_grid = [positions.index(z) for z in np.arange(0.0, 17.0, 2.0)]  # every grid z is a measured slice
    np.testing.assert_array_equal(volume.hu, hu[on_grid])
    np.testing.assert_allclose(physical_point(volume.geometry, (8, 0, 0))[2], 30.0 + 16.0, atol=1e-4)


def test_slightly_uneven_spacing_is_kept_and_warned_about_with_the_accumulated_offset(tmp_path):
    """Steps of 2.03 mm then one of 1.88 mm: each slice is a little further from its grid place."""
    hu = series_hu(6)
    write_series(tmp_path / "s", hu, positions_mm=[0.0, 2.03, 4.06, 6.09, 8.12, 10.0])
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.spacing_mm[2] == pytest.approx(2.0), (
        "the grid runs from the first to the last slice"
    )
    assert any(
        "slices lie up to 0.120 mm from their measured positions" in w for w in volume.metadata["warnings"]
    )
    assert "resampled_slices" not in volume.metadata


def test_positions_rounded_to_a_hundredth_of_a_mm_give_the_true_spacing(tmp_path):
    """0.625 mm written to two decimals: steps of 0.62 and 0.63 mm, median 0.63 mm. On a 0.63 mm grid
    the last of 100 slices lay 0.5 mm out of place while the warning said 0.010 mm. Rounding
    (0.005 mm off the grid here) is no uneven spacing: no warning."""
    positions = np.round(np.arange(100) * 0.625, 2)
    write_series(tmp_path / "s", series_hu(100, 8, 8), positions_mm=positions)
    volume = read_ct(tmp_path / "s")
    assert volume.geometry.spacing_mm[2] == pytest.approx(0.625, abs=1e-4)
    assert volume.metadata["warnings"] == []


@pytest.mark.parametrize(("step_mm", "missing"), [(2.8, False), (3.4, True)])
def test_a_step_over_one_and_a_half_spacings_is_a_missing_slice(tmp_path, step_mm, missing):
    """docs/io.md: a step larger than 1.5 x the median step is a missing slice (refused unless filled);
    1.4 x the 2 mm spacing is uneven spacing, 1.7 x is a slice missing."""
    positions = [0.0, 2.0, 4.0, 6.0, 6.0 + step_mm, 8.0 + step_mm, 10.0 + step_mm]
    write_series(tmp_path / "s", series_hu(7), positions_mm=positions)
    if missing:
        with pytest.raises(
            InvalidVolumeError, match=r"misses slices \(1 after slice 4 of 7, 2.000 mm spacing\)"
        ):
            read_ct(tmp_path / "s")
        volume = read_ct(tmp_path / "s", fill_missing_slices=True)
        assert volume.shape[0] == 8 and volume.metadata["interpolated_slices"] == [4]
    else:
        volume = read_ct(tmp_path / "s")
        assert "interpolated_slices" not in volume.metadata
        assert not any("missing" in w for w in volume.metadata["warnings"])


@pytest.mark.parametrize(("off_mm", "resampled"), [(0.15, False), (0.3, True)])
def test_slices_are_resampled_only_beyond_a_tenth_of_the_spacing_off_the_grid(tmp_path, off_mm, resampled):
    """docs/io.md: up to 10 % of the spacing from its grid place a slice stays there (with a warning
    beyond 1 %); beyond 10 % the slices are resampled. Slice 1 of a 2 mm series lies 0.15 mm (7.5 %)
    or 0.3 mm (15 %) from 2 mm."""
    hu = series_hu(6)  # slice k: -1000 + 100 k HU
    write_series(tmp_path / "s", hu, positions_mm=[0.0, 2.0 + off_mm, 4.0, 6.0, 8.0, 10.0])
    volume = read_ct(tmp_path / "s")
    assert volume.geometry.spacing_mm[2] == pytest.approx(2.0)
    if resampled:
        assert volume.metadata["resampled_slices"]["measured"] == 6
        # grid z 2 mm, between slice 0 (z 0, -1000 HU) and slice 1 (z 2.3, -900 HU)
        assert volume.hu[1, 0, 0] == pytest.approx(-1000 + 100 * 2.0 / 2.3, abs=1e-3)
    else:
        assert "resampled_slices" not in volume.metadata
        np.testing.assert_array_equal(volume.hu, hu)
        assert any(
            "slices lie up to 0.150 mm from their measured positions" in w
            for w in volume.metadata["warnings"]
        )


def test_a_resampled_grid_takes_the_whole_step_count_nearest_the_median_step(tmp_path):
    """docs/io.md: resampled onto a grid of the median step, adjusted to run from the first to the last
    measured slice. 19.2 mm / 2 mm median step = 9.6 steps: 10 steps of 1.92 mm (9 would be 2.133 mm,
    further from the median; 2 mm steps would end 0.8 mm past the last slice)."""
    positions = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 17.2, 19.2]
    hu = series_hu(len(positions))
    write_series(tmp_path / "s", hu, positions_mm=positions)
    volume = read_ct(tmp_path / "s")
    assert volume.shape[0] == 11
    assert volume.geometry.spacing_mm[2] == pytest.approx(1.92)
    assert volume.metadata["resampled_slices"]["spacing_mm"] == pytest.approx(1.92)
    grid_z = np.arange(11) * 1.92
    expected = np.interp(grid_z, positions, hu[:, 0, 0].astype(float))  # linear along the normal
    np.testing.assert_allclose(volume.hu[:, 0, 0], expected, atol=1e-3)
    np.testing.assert_allclose(physical_point(volume.geometry, (10, 0, 0))[2], 30.0 + 19.2, atol=1e-4)


def test_a_gap_in_resampled_slices_is_reported_slice_by_slice(tmp_path):
    """Uneven spacing (resampled onto 2 mm) and no slice between z 8 and 14 mm: the grid slices at 10
    and 12 mm lie in the gap, interpolated over 6 mm rather than measured, and are both listed."""
    positions = [0.0, 2.5, 4.0, 6.0, 8.0, 14.0, 16.0, 18.0]
    write_series(tmp_path / "s", series_hu(len(positions)), positions_mm=positions)
    volume = read_ct(tmp_path / "s", fill_missing_slices=True)
    assert volume.shape[0] == 10 and volume.metadata["resampled_slices"]["spacing_mm"] == 2.0
    assert volume.metadata["interpolated_slices"] == [5, 6]


def _tilted(paths, drift_mm):
    """Move slice k of ``paths`` ``drift_mm[k]`` mm posterior, within its plane."""
    for path, drift in zip(paths, drift_mm, strict=True):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient[1] = f"{float(ds.ImagePositionPatient[1]) + drift:.4f}"
        ds.save_as(path)


@pytest.mark.parametrize(
    ("drift_mm", "tilted"),
    [
        (np.arange(6) * 2.0 * np.tan(np.deg2rad(1)), True),  # a 1° gantry tilt: 0.035 mm per 2 mm slice
        ([0.0, 0.005, -0.005, 0.005, -0.005, 0.0], False),  # positions rounded to 0.01 mm
    ],
)
def test_a_gantry_tilt_of_one_degree_is_reported_and_rounding_is_not(tmp_path, drift_mm, tilted):
    hu = series_hu(6)
    _tilted(write_series(tmp_path / "s", hu), drift_mm)
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    noted = [w for w in volume.metadata["warnings"] if "drift within the slice plane (gantry tilt)" in w]
    assert len(noted) == int(tilted)


def test_repeated_acquisition_in_one_series_is_kept_whole_not_spliced(tmp_path):
    hu = series_hu(6)
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "s", hu, series_uid=uid, acquisition=1)
    write_series(tmp_path / "s", hu[:3] + 7, series_uid=uid, acquisition=2, name="repeat")  # z 0-4 mm again
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.metadata["warnings"] == [
        "the series holds 2 acquisitions, 1 of them repeating positions another already covers (a scan "
        "repeated inside one series): kept acquisition 1 (6 slices); dropped acquisition 2 (3 slices) whole"
    ]


def test_equal_acquisitions_keep_the_lowest_number(tmp_path):
    hu = series_hu(3)
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "s", hu + 7, series_uid=uid, acquisition=5, name="a")
    write_series(tmp_path / "s", hu, series_uid=uid, acquisition=4, name="b")
    np.testing.assert_array_equal(read_ct(tmp_path / "s").hu, hu)


def test_acquisitions_sharing_a_border_slice_are_not_a_repeated_scan(tmp_path):
    """A step-and-shoot scan numbers each table position as an acquisition; neighbours may overlap."""
    hu = series_hu(8)
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "s", hu[:5], series_uid=uid, acquisition=1, name="a")
    write_series(
        tmp_path / "s", hu[4:], series_uid=uid, acquisition=2, positions_mm=[8.0, 10.0, 12.0, 14.0], name="b"
    )
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.metadata["warnings"] == ["dropped 1 slice(s) repeating a position already present"]


def _write_acquisitions(folder, acquisitions):
    """One series of ``acquisitions`` ({number: slice z positions in mm}); a slice's HU is -1000 + 10 z."""
    uid = pydicom.uid.generate_uid()
    for number, z_mm in acquisitions.items():
        hu = np.stack([np.full((6, 6), -1000 + 10 * z, dtype=np.int16) for z in z_mm])
        write_series(folder, hu, series_uid=uid, acquisition=number, positions_mm=z_mm, name=f"a{number}_")
    return read_ct(folder)


def _z_of(volume):
    """The z (mm, from the first slice's position) each slice was written at, from its HU."""
    return list((volume.hu[:, 0, 0].astype(float) + 1000) / 10)


def test_a_short_repeat_drops_only_itself_not_the_other_table_positions(tmp_path):
    """Reviewer: a helical scan in two acquisitions (z 0-38, 40-78) with a 6-slice re-scan of z 60-70
    came out as acquisition 1 alone: 20 slices, half the chest."""
    volume = _write_acquisitions(
        tmp_path / "s",
        {
            1: [2.0 * k for k in range(20)],
            2: [40 + 2.0 * k for k in range(20)],
            3: [60 + 2.0 * k for k in range(6)],
        },
    )
    assert _z_of(volume) == [2.0 * k for k in range(40)]
    assert volume.metadata["warnings"] == [
        "the series holds 3 acquisitions, 1 of them repeating positions another already covers (a scan "
        "repeated inside one series): kept acquisition 1 (20 slices), acquisition 2 (20 slices); dropped "
        "acquisition 3 (6 slices) whole"
    ]


def test_step_and_shoot_acquisitions_sharing_half_their_slices_are_all_kept(tmp_path):
    """Reviewer: ten 4-slice acquisitions, each sharing 2 border slices with the next, came out as
    the first acquisition's 4 slices, with a warning of 9 repeated acquisitions."""
    volume = _write_acquisitions(
        tmp_path / "s", {a + 1: [4.0 * a + 2.0 * j for j in range(4)] for a in range(10)}
    )
    assert _z_of(volume) == [2.0 * k for k in range(22)]
    assert volume.metadata["warnings"] == ["dropped 18 slice(s) repeating a position already present"]
    assert not any("repeat" in w and "acquisition" in w for w in volume.metadata["warnings"])


def test_a_repeat_shifted_by_half_a_slice_is_dropped_not_interleaved(tmp_path):
    """Reviewer: a repeat 1 mm off the 2 mm grid shares no position and was interleaved with the
    original into a 40-slice volume at 1 mm."""
    volume = _write_acquisitions(
        tmp_path / "s", {1: [2.0 * k for k in range(20)], 2: [1 + 2.0 * k for k in range(20)]}
    )
    assert _z_of(volume) == [2.0 * k for k in range(20)]
    assert volume.geometry.spacing_mm[2] == pytest.approx(2.0)
    assert volume.metadata["warnings"] == [
        "the series holds 2 acquisitions, 1 of them repeating positions another already covers (a scan "
        "repeated inside one series): kept acquisition 1 (20 slices); dropped acquisition 2 (20 slices) whole"
    ]


def test_one_acquisition_number_per_slice_is_no_repeat(tmp_path):
    """Some scanners number every slice as its own acquisition: each is one slice, none a repeat."""
    volume = _write_acquisitions(tmp_path / "s", {k + 1: [2.5 * k] for k in range(8)})
    assert _z_of(volume) == [2.5 * k for k in range(8)]
    assert volume.metadata["warnings"] == []


def test_a_partial_repeat_off_the_grid_is_not_blended_with_the_original(tmp_path):
    """Reviewer: a repeat 1 mm off the 2 mm grid, extending past the original (20 of its 40 slices
    within the original's extent), was interleaved with it and resampled across both."""
    volume = _write_acquisitions(
        tmp_path / "s", {1: [2.0 * k for k in range(50)], 2: [61 + 2.0 * k for k in range(40)]}
    )
    z = np.asarray(_z_of(volume))
    grid = np.arange(len(z)) * volume.geometry.spacing_mm[2]
    # up to the original's last slice (98 mm), every slice is acquisition 1's, linear in z: no blend
    original = grid <= 98
    np.testing.assert_allclose(z[original], grid[original], atol=0.06)
    assert volume.metadata["warnings"][0] == (
        "acquisition 2 (40 slices) overlaps acquisition 1 (50 slices) off its slice positions: dropped the 20 "
        "slice(s) of acquisition 2 within acquisition 1's extent, so that the two are not interleaved"
    )
    assert not any("repeat" in w for w in volume.metadata["warnings"])


def test_many_one_slice_acquisitions_stay_whole_and_quickly(tmp_path):
    """One AcquisitionNumber per slice, 1200 slices: all kept, no note (was O(n^2), 2 s)."""
    headers = [SimpleNamespace(acquisition_number=k + 1) for k in range(1200)]
    kept, notes = _without_repeated_acquisitions(headers, 0.625 * np.arange(1200))
    assert kept.all() and notes == []


def test_repeated_position_within_one_acquisition_drops_the_copy(tmp_path):
    hu = series_hu(4)
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "s", hu, series_uid=uid, acquisition=1)
    write_series(tmp_path / "s", hu[2:3], series_uid=uid, acquisition=1, positions_mm=[4.0], name="copy")
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.metadata["warnings"] == ["dropped 1 slice(s) repeating a position already present"]


def test_coronal_series_is_reoriented_to_axial_display(tmp_path):
    # rows run toward patient left, columns toward inferior, so slices stack toward posterior
    orientation = (1, 0, 0, 0, 0, -1)
    hu = series_hu(5)
    write_series(tmp_path / "s", hu, orientation=orientation)
    volume = read_ct(tmp_path / "s")
    assert volume.geometry.source_orientation == "LIP"
    assert volume.shape == (24, 5, 20)  # (z from the 24 rows, y from the 5 slices, x from 20 columns)
    assert volume.geometry.direction == pytest.approx(np.eye(3).ravel())
    # the marker (row 2, column 3, every slice) lies 2 rows below the top: z index 24 - 1 - 2
    marker = np.argwhere(volume.hu == 1500)
    assert set(marker[:, 0]) == {21} and set(marker[:, 2]) == {3}
    # slice k (HU -1000 + 100 k) lies k * 2 mm toward posterior (larger y)
    assert volume.hu[0, :, 0].tolist() == [-1000, -900, -800, -700, -600]
    expected = np.array([-10.0 + 3 * 0.8, -20.0 + 4 * 2.0, 30.0 - 2 * 0.7])
    np.testing.assert_allclose(physical_point(volume.geometry, (21, 4, 3)), expected, atol=1e-4)


def test_oblique_series_keeps_its_rotation(tmp_path):
    angle = np.deg2rad(12)
    orientation = (np.cos(angle), np.sin(angle), 0, -np.sin(angle), np.cos(angle), 0)
    hu = series_hu(4)
    write_series(tmp_path / "s", hu, orientation=orientation)
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    direction = np.asarray(volume.geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], orientation[:3], atol=1e-5)
    np.testing.assert_allclose(physical_point(volume.geometry, (0, 0, 0)), (-10.0, -20.0, 30.0), atol=1e-4)
    assert any("turned 12° from the patient's axes" in w for w in volume.metadata["warnings"])


def test_cosines_rounded_to_three_decimals_give_a_perpendicular_grid_masks_can_be_written_on(tmp_path):
    # A 10° tilt written as 0.985\0.174 (lengths 1.00025): the grid must be exactly perpendicular, or the
    # NIfTI writer skews it and the masks written for the scan are refused as off its grid.
    orientation = (1, 0, 0, 0, 0.985, -0.174)
    write_series(tmp_path / "s", series_hu(4), orientation=orientation)
    volume = read_ct(tmp_path / "s")
    direction = np.asarray(volume.geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(direction[:, 1], np.array(orientation[3:]) / 1.00025, atol=1e-3)
    lungs = np.zeros(volume.shape, np.uint8)
    lungs[1:3, 5:10, 4:8] = 1
    path = write_volume(tmp_path / "lungs.nii.gz", lungs, volume.geometry, is_label=True)
    np.testing.assert_array_equal(read_mask(path, volume.geometry, volume.shape), lungs)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, "jpeg-lossless"])
def test_compressed_slices_decode_to_the_same_hu(tmp_path, syntax):
    hu = series_hu(3, rows=64, columns=64)  # JPEG 2000's default 6 resolution levels need >= 32 px
    paths = write_series(tmp_path / "s", hu)
    for path in paths:
        if syntax == "jpeg-lossless":
            jpeg_lossless_copy(path, tmp_path)
        else:
            ds = pydicom.dcmread(path)
            ds.compress(syntax)
            ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(read_ct(tmp_path / "s").hu, hu)


def test_list_of_files_reads_as_one_series(axial_series):
    folder, hu = axial_series
    np.testing.assert_array_equal(read_ct(sorted(folder.iterdir())).hu, hu)


def test_non_ct_modality_warns_but_opens(tmp_path):
    write_series(tmp_path / "s", series_hu(2), modality="MR")
    volume = read_ct(tmp_path / "s")
    assert volume.shape[0] == 2
    assert any("not CT" in w for w in volume.metadata["warnings"])


def test_non_ct_series_without_hu_values_is_refused_unless_the_caller_says_what_they_are(tmp_path):
    """An MR series read as HU got a full CT-3 report; its values (300-1500, no air) are not HU."""
    mr = np.random.default_rng(0).integers(300, 1500, (3, 24, 20)).astype(np.int16)
    write_series(tmp_path / "s", mr, modality="MR")
    with pytest.raises(InvalidVolumeError, match=r"modality is MR, not CT.*--intensity hu"):
        read_ct(tmp_path / "s")
    volume = read_ct(tmp_path / "s", intensity="hu")
    np.testing.assert_array_equal(volume.hu, mr)
    assert any("not CT" in w for w in volume.metadata["warnings"])


def test_rescale_slope_gives_float_hu(tmp_path):
    paths = write_series(tmp_path / "s", series_hu(2))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = "0.5"
        ds.save_as(path, enforce_file_format=True)
    volume = read_ct(tmp_path / "s")
    assert volume.hu.dtype == np.float32
    assert volume.hu[0, 0, 0] == pytest.approx((-1000 - INTERCEPT) * 0.5 + INTERCEPT)


def test_multiframe_series_is_ranked_by_its_frames_not_its_files(tmp_path):
    enhanced = series_hu(5, 12, 10)
    write_enhanced(tmp_path / "enhanced.dcm", enhanced)
    write_series(tmp_path / "thick", series_hu(3, 12, 10), spacing_z_mm=5.0)  # 3 files beat 1 file
    volume = read_ct(tmp_path)
    np.testing.assert_array_equal(volume.hu, enhanced)
    assert volume.geometry.spacing_mm == pytest.approx((0.8, 0.7, 2.0))
    assert any('opened series 7 "enhanced" (5 slices, 2 mm thick)' in w for w in volume.metadata["warnings"])


@pytest.mark.parametrize(
    ("spacing_between_slices", "expected_mm"),
    [("-2.5", 2.5), ("0", 2.0), (None, 2.0)],  # 2.0 = the factory's SliceThickness
)
def test_single_slice_spacing_is_the_size_of_spacing_between_slices(
    tmp_path, spacing_between_slices, expected_mm
):
    path = write_series(tmp_path / "s", series_hu(1))[0]
    ds = pydicom.dcmread(path)
    if spacing_between_slices is not None:
        ds.SpacingBetweenSlices = (
            spacing_between_slices  # negative: the stacking direction (SimpleITK refuses it)
        )
    ds.save_as(path, enforce_file_format=True)
    assert read_ct(path).geometry.spacing_mm[2] == pytest.approx(expected_mm)


@pytest.mark.parametrize(
    ("representation", "vr", "padding", "range_limit", "stored"),
    [
        (0, "US", 63536, None, [63536]),  # GE: unsigned padding would read +62512 HU
        (0, "US", 63536, 65535, [63536, 64000, 65535]),  # a range of padding values
        (1, "SS", -2000, None, [-2000]),  # signed storage, intercept 0
        (1, "US", 63536, None, [-2000]),  # signed pixels, padding written as US: the same bits
    ],
)
def test_pixel_padding_reads_as_air(tmp_path, representation, vr, padding, range_limit, stored):
    hu = series_hu(2)
    for path in write_series(tmp_path / "s", hu):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.int32)
        if representation == 1:
            pixels += int(INTERCEPT)  # store the HU themselves
            ds.PixelRepresentation, ds.RescaleIntercept = 1, "0"
        pixels[:, : len(stored)] = stored  # one padded column per padding value
        ds.PixelData = pixels.astype(np.int16 if representation else np.uint16).tobytes()
        ds.PixelPaddingValue = padding
        ds["PixelPaddingValue"].VR = vr
        if range_limit is not None:
            ds.PixelPaddingRangeLimit = range_limit
            ds["PixelPaddingRangeLimit"].VR = vr
        ds.save_as(path, enforce_file_format=True)
    volume = read_ct(tmp_path / "s")
    assert volume.hu.dtype == np.int16, "padding no longer pushes the values out of int16"
    assert np.all(volume.hu[:, :, : len(stored)] == -1024)
    np.testing.assert_array_equal(volume.hu[:, :, len(stored) :], hu[:, :, len(stored) :])
