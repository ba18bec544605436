"""Every kind of bad input gives one InvalidVolumeError sentence naming the file and the fix."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_factory import series_hu, write_series
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.readers import read_ct


def test_text_file_is_not_a_ct(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InvalidVolumeError, match="not a supported CT file"):
        read_ct(path)


def test_text_file_named_like_nifti(tmp_path):
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(gzip.compress(b"not an image at all"))
    with pytest.raises(InvalidVolumeError, match="fake.nii.gz cannot be read"):
        read_ct(path)


def test_missing_path(tmp_path):
    with pytest.raises(InvalidVolumeError, match="does not exist"):
        read_ct(tmp_path / "nowhere.nii.gz")


def test_empty_folder(tmp_path):
    with pytest.raises(InvalidVolumeError, match="contains no DICOM files"):
        read_ct(tmp_path)


def test_folder_of_unrelated_files(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.csv").write_text("1,2")
    with pytest.raises(InvalidVolumeError, match="contains no DICOM files"):
        read_ct(tmp_path)


def test_dicom_without_pixel_data(tmp_path):
    path = write_series(tmp_path / "s", series_hu(1))[0]
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidVolumeError, match="without pixel data"):
        read_ct(path)
    with pytest.raises(InvalidVolumeError, match="without pixel data"):
        read_ct(tmp_path / "s")


def test_dicom_that_is_not_an_image(tmp_path):
    path = write_series(tmp_path / "s", series_hu(1))[0]
    ds = pydicom.dcmread(path)
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InvalidVolumeError, match="hold no image"):
        read_ct(tmp_path / "s")


def test_truncated_dicom(tmp_path):
    path = write_series(tmp_path / "s", series_hu(2, rows=64, columns=64))[1]
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(InvalidVolumeError, match="slice001.dcm"):
        read_ct(tmp_path / "s")


@pytest.mark.parametrize(
    "cut",
    # inside the value of the file meta group length (pydicom: BytesLengthException) and inside the
    # 4-byte length of FileMetaInformationVersion (a bare struct.error); both sit at fixed offsets
    [141, 153],
)
def test_dicom_cut_off_in_its_header_is_skipped_by_name(tmp_path, cut):
    hu = series_hu(3)
    paths = write_series(tmp_path / "s", hu)
    damaged = tmp_path / "s" / "zz_cut.dcm"
    damaged.write_bytes(paths[0].read_bytes()[:cut])
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    assert any("skipped 1 damaged" in w and "zz_cut.dcm" in w for w in volume.metadata["warnings"])
    with pytest.raises(InvalidVolumeError, match="zz_cut.dcm is not a readable DICOM file"):
        read_ct(damaged)
    for path in paths:
        path.unlink()
    with pytest.raises(InvalidVolumeError, match=r"no image could be read.*\(zz_cut\.dcm\)"):
        read_ct(tmp_path / "s")


def _set_tag(path, keyword, value):
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, value)
    ds.save_as(path)


MALFORMED_TAGS = [
    ("PixelSpacing", "0.7", "PixelSpacing has 1 value, expected 2"),
    (
        "ImageOrientationPatient",
        ["1", "0", "0", "0", "1"],
        "ImageOrientationPatient has 5 values, expected 6",
    ),
    ("ImagePositionPatient", ["0", "0"], "ImagePositionPatient has 2 values, expected 3"),
    (
        "ImageOrientationPatient",
        ["0"] * 6,
        r"ImageOrientationPatient \(0\\0\\0\\0\\0\\0\) is not two perpendicular",
    ),
    ("PixelSpacing", ["0", "0.7"], r"PixelSpacing \(0\\0.7\) holds a spacing that is not positive"),
]


@pytest.mark.parametrize(("keyword", "value", "fault"), MALFORMED_TAGS)
def test_a_malformed_geometry_tag_is_named_not_called_damaged(tmp_path, keyword, value, fault):
    """Reviewer: a wrong count of ImageOrientationPatient/ImagePositionPatient values escaped as a bare
    ValueError (exit 1 in the CLI); a single PixelSpacing value was called 'damaged or truncated'."""
    paths = write_series(tmp_path / "s", series_hu(3))
    for path in paths:
        _set_tag(path, keyword, value)
    with pytest.raises(
        InvalidVolumeError,
        match=rf"no image could be read; 3 DICOM file\(s\) have a malformed header value \({fault}.* in slice000.dcm, slice001.dcm, slice002.dcm\)",
    ) as refused:
        read_ct(tmp_path / "s")
    assert "damaged" not in str(refused.value)
    with pytest.raises(
        InvalidVolumeError, match=rf"slice001.dcm: no image could be read; .*\({fault}.* in slice001.dcm\)"
    ):
        read_ct(paths[1])


@pytest.mark.parametrize(("row_length", "taken"), [(1.02, True), (1.1, False)])
def test_orientation_cosines_are_taken_as_rounded_to_5_percent_of_unit_length(tmp_path, row_length, taken):
    """docs/io.md: two perpendicular unit vectors, to 5 %. A row cosine 2 % long is rounding: read, on
    unit vectors. 10 % long is no orientation: the file is refused, not read on a guessed grid."""
    path = write_series(tmp_path / "s", series_hu(1), orientation=(row_length, 0, 0, 0, 1, 0))[0]
    if taken:
        direction = np.reshape(read_ct(path).geometry.direction, (3, 3))
        np.testing.assert_allclose(direction, np.eye(3), atol=1e-9)
    else:
        with pytest.raises(
            InvalidVolumeError,
            match=r"ImageOrientationPatient \(1.1\\0\\0\\0\\1\\0\) is not two perpendicular unit vectors",
        ):
            read_ct(path)


def test_a_file_with_a_malformed_tag_is_skipped_by_name_and_the_tag(tmp_path):
    hu = series_hu(5)
    paths = write_series(tmp_path / "s", hu)
    _set_tag(paths[4], "ImageOrientationPatient", ["1", "0", "0", "0", "1"])
    volume = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu[:4])
    assert volume.metadata["warnings"] == [
        "skipped 1 DICOM file(s) with a malformed header value (ImageOrientationPatient has 5 values, expected "
        "6 in slice004.dcm); if they belong to the opened series, export it again"
    ]


def test_a_missing_slice_skipped_for_a_malformed_tag_is_named_in_the_error(tmp_path):
    """The error is all a user of the command line sees: the skipped file and its tag are in it."""
    paths = write_series(tmp_path / "s", series_hu(5))
    _set_tag(paths[2], "ImagePositionPatient", ["0", "0"])
    with pytest.raises(
        InvalidVolumeError,
        match=r"misses slices .* Also skipped 1 DICOM file\(s\) with a malformed header value \(ImagePositionPatient has 2 values, expected 3 in slice002.dcm\)",
    ):
        read_ct(tmp_path / "s")


def test_a_bug_in_reading_headers_is_not_reported_as_a_damaged_file(tmp_path, monkeypatch):
    """A KeyError, IndexError or TypeError of the reader's own code was caught and reported as a
    'damaged or truncated' file."""
    import napari_chsnet.io.dicom_headers as dicom_headers

    write_series(tmp_path / "s", series_hu(2))
    for error in (KeyError, IndexError, TypeError):

        def bug(*args, error=error):
            raise error("a bug")

        monkeypatch.setattr(dicom_headers, "_plane", bug)
        with pytest.raises(error, match="a bug"):
            read_ct(tmp_path / "s")


def test_uncompressed_nifti_named_nii_gz_is_read(tmp_path):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(plain))
    misnamed = tmp_path / "misnamed.nii.gz"
    misnamed.write_bytes(plain.read_bytes())  # ITK reads it: gzip is told by content, not name
    np.testing.assert_array_equal(read_ct(misnamed).hu, values)


def test_truncated_nifti(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(
        sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1000, (8, 64, 64)).astype(np.int16)),
        str(path),
    )
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(InvalidVolumeError, match="ct.nii.gz cannot be read"):
        read_ct(path)


def test_two_dimensional_picture_is_not_a_ct(tmp_path):
    path = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), dtype=np.uint8)), str(path))
    with pytest.raises(InvalidVolumeError, match="2-D picture"):
        read_ct(path)


def test_single_slice_image_is_a_one_slice_volume(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 12), -800, dtype=np.int16)), str(path))
    assert read_ct(path).shape == (1, 16, 12)


def test_colour_image_is_refused(tmp_path):
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8, 3), dtype=np.uint8), isVector=True), str(path))
    with pytest.raises(InvalidVolumeError, match="values per voxel"):
        read_ct(path)


def test_volume_too_large_for_memory_is_refused_from_its_header(tmp_path):
    (tmp_path / "huge.raw").write_bytes(b"\0" * 16)
    (tmp_path / "huge.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 1000\nElementType = MET_SHORT\n"
        "ElementSpacing = 1 1 1\nElementDataFile = huge.raw\n"
    )
    with pytest.raises(InvalidVolumeError, match="GiB of memory is available"):
        read_ct(tmp_path / "huge.mhd")


def _ct_with_non_finite_ring(dtype=np.float32) -> np.ndarray:
    """Float HU with NaN outside a circle (how some converters mark the field of view) and one Inf."""
    values = np.full((3, 16, 16), -800.0, dtype=dtype)
    yy, xx = np.mgrid[0:16, 0:16]
    values[:, (yy - 7.5) ** 2 + (xx - 7.5) ** 2 > 7.5**2] = np.nan
    values[1, 8, 8] = np.inf
    return values


@pytest.mark.parametrize(
    "name, dtype",
    [("ct.nii.gz", np.float32), ("ct.nii", np.float32), ("ct.nii.gz", np.float64), ("ct.mha", np.float32)],
)
def test_nan_or_inf_voxels_are_refused(tmp_path, name, dtype):
    """ITK reads a NIfTI's NaN and Inf as 0 HU (water), so they are checked among the stored voxels."""
    values = _ct_with_non_finite_ring(dtype)
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    with pytest.raises(
        InvalidVolumeError, match=rf"{name} holds NaN or infinite values \({n_bad} of 768 voxels\)"
    ):
        read_ct(path)


def test_nan_refusal_comes_without_a_numpy_warning(tmp_path):
    """A NaN cast to int16 printed numpy's 'invalid value encountered in cast' before the error."""
    path = tmp_path / "ct.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_ct_with_non_finite_ring()), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidVolumeError, match="NaN"):
            read_ct(path)


def test_finite_float_nifti_is_read_and_a_truncated_one_refused(tmp_path):
    values = np.full((3, 16, 16), -800.25, dtype=np.float32)
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    np.testing.assert_array_equal(read_ct(path).hu, values)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InvalidVolumeError, match="ct.nii.gz cannot be read"):
        read_ct(path)


def test_a_file_without_read_permission_is_named_as_such(tmp_path, monkeypatch):
    """ITK reported a file it may not open as one that "does not exist … damaged". (Faked: the tests
    may run as root, who reads every file.)"""
    import builtins

    import napari_chsnet.io.readers as readers

    path = tmp_path / "ct.nii.gz"
    image = sitk.GetImageFromArray(np.full((4, 8, 8), -1000, np.int16))
    sitk.WriteImage(image, str(path))

    def refuse(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(readers, "open", refuse, raising=False)
    with pytest.raises(InvalidVolumeError, match=r"ct.nii.gz cannot be read \(permission denied\)"):
        read_ct(path)
