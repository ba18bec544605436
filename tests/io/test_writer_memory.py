"""NIfTI writing without a SimpleITK copy of the volume: same bytes as ITK's own writer, no
full-size image or array on the way, and a cut-off stream still caught."""

from __future__ import annotations

import dataclasses
import gzip
import os
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
from test_readers_and_writers import ORIENTATIONS, _source_image

from napari_chsnet.errors import OutputError
from napari_chsnet.io import writers
from napari_chsnet.io.orientation import image_from_display, to_source
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import Geometry
from napari_chsnet.io.writers import write_volume


def _itk_reference(path, array_zyx, geometry) -> None:
    """What write_volume wrote before it streamed NIfTI: a SimpleITK image, reoriented, written by ITK."""
    sitk.WriteImage(
        to_source(image_from_display(array_zyx, geometry), geometry.source_orientation), str(path)
    )


def _voxels_and_header(path) -> bytes:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read()


def _display_volume(tmp_path, orientation: str):
    """A CT read from a NIfTI, without that file's header fields: with them the writer copies the
    source's qform and sform (test_readers_and_writers), which ITK's reference does not."""
    source = tmp_path / f"src-{orientation}.nii.gz"
    sitk.WriteImage(_source_image(ORIENTATIONS[orientation]), str(source))
    volume = read_ct(source)
    volume.geometry = dataclasses.replace(volume.geometry, nifti=None)
    return volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_streamed_nifti_is_byte_for_byte_what_itk_writes(tmp_path, suffix, orientation, dtype):
    """Header (qform, sform, size, pixel type) and voxels in the file's own order: every byte of the
    uncompressed stream equals ITK's, for every source orientation (LPS writes the array as it is)."""
    volume = _display_volume(tmp_path, orientation)
    rng = np.random.default_rng(7)
    values = (rng.random(volume.shape) * 200).astype(dtype)
    written = write_volume(tmp_path / f"ours{suffix}", values, volume.geometry)
    reference = tmp_path / f"itk{suffix}"
    _itk_reference(reference, values, volume.geometry)
    assert _voxels_and_header(written) == _voxels_and_header(reference)
    back = read_ct(written, intensity="hu") if dtype is not np.uint8 else None
    if back is not None:
        np.testing.assert_array_equal(back.hu, values)


def _write_traced(path, values, geometry):
    """``write_volume``'s path and the peak of the numpy/Python memory it allocated."""
    tracemalloc.start()
    try:
        written = write_volume(path, values, geometry)
        return written, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_lps_write_makes_no_copy_of_the_volume(tmp_path, monkeypatch):
    """No SimpleITK image of the volume (only a one-voxel one for the header) and no numpy copy:
    the LPS array is compressed from its own memory, a slab at a time."""
    built = []
    real = sitk.GetImageFromArray

    def recording(array, *args, **kwargs):
        built.append(np.size(array))
        return real(array, *args, **kwargs)

    monkeypatch.setattr(sitk, "GetImageFromArray", recording)
    monkeypatch.setattr(writers, "_SLAB_BYTES", 1 << 18)  # 256 KiB slabs of an 8 MiB volume
    probability = np.random.default_rng(1).random((32, 256, 256), dtype=np.float32)
    geometry = Geometry((0.75, 0.75, 2.0), origin_mm=(-190.0, -180.0, -300.0))
    path, peak = _write_traced(tmp_path / "probability.nii.gz", probability, geometry)
    assert built and max(built) == 1
    assert peak < probability.nbytes // 3  # slabs, gzip buffers and the read-back's 1 MiB chunks
    monkeypatch.setattr(sitk, "GetImageFromArray", real)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), probability)


@pytest.mark.parametrize("source_orientation", ["RAS", "SLP", "IRP"])  # flips; a permutation; both
def test_another_orientation_copies_slabs_only(tmp_path, monkeypatch, source_orientation):
    monkeypatch.setattr(writers, "_SLAB_BYTES", 1 << 18)
    values = np.random.default_rng(2).random((32, 256, 256), dtype=np.float32)
    geometry = Geometry(
        (0.75, 0.8, 2.0), origin_mm=(-190.0, -180.0, -300.0), source_orientation=source_orientation
    )
    path, peak = _write_traced(tmp_path / "reoriented.nii.gz", values, geometry)
    assert peak < values.nbytes // 3
    _itk_reference(tmp_path / "itk.nii.gz", values, geometry)
    assert _voxels_and_header(path) == _voxels_and_header(tmp_path / "itk.nii.gz")


def test_a_cut_off_stream_is_an_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"
    geometry = Geometry((1.0, 1.0, 1.0))
    write_volume(target, np.zeros((4, 5, 6), np.float32), geometry)
    old = target.read_bytes()
    real_stream = writers._stream_nifti

    def stream_then_lose_the_end(temporary, header, source_zyx):
        real_stream(temporary, header, source_zyx)
        with open(temporary, "r+b") as handle:  # a full disk: the end never reached the file
            handle.truncate(os.path.getsize(temporary) * 2 // 3)

    monkeypatch.setattr(writers, "_stream_nifti", stream_then_lose_the_end)
    values = np.random.default_rng(0).random((40, 50, 60), dtype=np.float32)
    for suffix in (".nii.gz", ".nii"):
        with pytest.raises(OutputError, match="could not write"):
            write_volume(target.with_name(f"out{suffix}"), values, geometry, overwrite=True)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # no temporary, no header file


def test_a_size_nifti1_cannot_hold_is_left_to_itk(tmp_path):
    """NIfTI-1 stores sizes as int16: a longer axis goes to ITK, which refuses it as before."""
    values = np.zeros((1, 1, 40000), dtype=np.float32)
    with pytest.raises(OutputError, match="greater than maximum possible dimension 32767"):
        write_volume(tmp_path / "long.nii.gz", values, Geometry((1.0, 1.0, 1.0)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
@pytest.mark.parametrize("dtype", [">f4", ">i2", "<f2", ">f8"])
def test_big_endian_and_float16_arrays_are_written_as_native_values(tmp_path, suffix, dtype):
    """ITK takes neither another byte order nor float16 (a bare TypeError before): converted first."""
    values = (np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_volume(tmp_path / f"v{suffix}", values, Geometry((0.5, 0.5, 2.0)))
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert back.dtype.isnative and np.array_equal(back, values.astype(np.float64))
