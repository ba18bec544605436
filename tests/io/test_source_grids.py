"""Masks written where the CT lies for every tool: skewed grids, the NIfTI header's own transforms and
units, 2-D NIfTI slices, upper-case suffixes, and NIfTI files ITK cannot read refused for their reason."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from test_readers_and_writers import ORIENTATIONS, _source_image

from napari_chsnet.errors import InvalidVolumeError, OutputError
from napari_chsnet.io import writers
from napari_chsnet.io.atomic import atomic_write
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.writers import read_mask, write_volume

# NIfTI-1 header fields that place the voxels: (offset, struct format).
_PIXDIM, _UNITS, _CODES, _QUATERN, _SROW = (76, "8f"), (123, "B"), (252, "2h"), (256, "6f"), (280, "12f")
_PLACING = {"pixdim": _PIXDIM, "xyzt_units": _UNITS, "codes": _CODES, "quatern": _QUATERN, "srow": _SROW}


def _nifti_bytes(path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _fields(path) -> dict[str, tuple]:
    raw = _nifti_bytes(path)
    return {name: struct.unpack_from("<" + fmt, raw, offset) for name, (offset, fmt) in _PLACING.items()}


def _patched(path, target, **fields) -> None:
    """Write ``path`` (a NIfTI-1 file) to ``target`` with some placing fields replaced."""
    raw = bytearray(_nifti_bytes(path))
    for name, values in fields.items():
        offset, fmt = _PLACING[name]
        struct.pack_into("<" + fmt, raw, offset, *values)
    target.write_bytes(gzip.compress(bytes(raw)) if str(target).endswith(".gz") else bytes(raw))


def _corners_mm(first: sitk.Image, second: sitk.Image) -> float:
    """How far apart the two images place their corner voxels (mm)."""
    corners = [(i, j, k) for i in (0, first.GetWidth() - 1) for j in (0, first.GetHeight() - 1)
               for k in (0, first.GetDepth() - 1)]  # fmt: skip
    return max(
        float(
            np.linalg.norm(
                np.subtract(first.TransformIndexToPhysicalPoint(c), second.TransformIndexToPhysicalPoint(c))
            )
        )
        for c in corners
    )


# 1. Skewed (non-orthogonal) grids -----------------------------------------------------------------


def _sheared(tmp_path, suffix=".mha"):
    """A gantry-tilted scan stored with its shear: the k axis leans 15° toward posterior."""
    tilt = np.deg2rad(15)
    image = _source_image(np.array([[1.0, 0, 0], [0, 1, np.sin(tilt)], [0, 0, np.cos(tilt)]]))
    path = tmp_path / f"tilted{suffix}"
    sitk.WriteImage(image, str(path))
    return path


def test_a_skewed_grid_is_not_written_as_nifti(tmp_path):
    """ITK's NIfTI writer made the shear a rotation (corners up to 50 mm off on a real CT) and
    read_mask then refused the mask; no NIfTI can hold the grid as ITK reads it."""
    volume = read_ct(_sheared(tmp_path), intensity="hu")
    for suffix in (".nii.gz", ".nii"):
        with pytest.raises(
            InvalidVolumeError, match=r"15.00° from perpendicular .* write .mha or .nrrd instead"
        ):
            write_volume(
                tmp_path / f"lungs{suffix}", np.zeros(volume.shape, np.uint8), volume.geometry, is_label=True
            )
        assert not (tmp_path / f"lungs{suffix}").exists()


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_a_skewed_grid_is_written_exactly_as_mha_and_nrrd(tmp_path, suffix):
    source = _sheared(tmp_path, suffix)
    volume = read_ct(source, intensity="hu")
    labels = (volume.hu > 0).astype(np.uint8)
    written = write_volume(tmp_path / f"lungs{suffix}", labels, volume.geometry, is_label=True)
    first, second = sitk.ReadImage(str(source)), sitk.ReadImage(str(written))
    assert _corners_mm(first, second) < 1e-6
    np.testing.assert_allclose(second.GetDirection(), first.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(read_mask(written, volume.geometry, volume.shape), labels)


def _moved_header(real):
    """A _stream_nifti that writes the header with its qform and sform 5 mm further along x."""

    def stream(temporary, header, source_zyx):
        raw = bytearray(header)
        for offset in (268, 292):  # qoffset_x, srow_x[3]
            struct.pack_into("<f", raw, offset, struct.unpack_from("<f", raw, offset)[0] + 5.0)
        real(temporary, bytes(raw), source_zyx)

    return stream


def _moved_itk_write(real):
    def write(image, name, *args, **kwargs):
        moved = sitk.Image(image)
        moved.SetOrigin(tuple(np.add(image.GetOrigin(), (5.0, 0.0, 0.0))))
        real(moved, name, *args, **kwargs)

    return write


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_a_file_read_back_on_another_grid_is_an_error(tmp_path, monkeypatch, suffix):
    """Only the size was checked: a file 5 mm (or 50 mm) off the CT was written without a word."""
    volume = read_ct(_ras_ct(tmp_path), intensity="hu")
    if suffix in (".nii.gz", ".nii"):
        monkeypatch.setattr(writers, "_stream_nifti", _moved_header(writers._stream_nifti))
    else:
        monkeypatch.setattr(writers.sitk, "WriteImage", _moved_itk_write(sitk.WriteImage))
    target = tmp_path / "out" / f"lungs{suffix}"
    with pytest.raises(OutputError, match=r"does not lie on the CT's voxel grid \(origin .* vs .* mm\)"):
        write_volume(target, np.zeros(volume.shape, np.uint8), volume.geometry, is_label=True)
    assert list(target.parent.iterdir()) == []


def _ras_ct(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_source_image(ORIENTATIONS["RAS"]), str(path))
    return path


# 2. The source NIfTI's transforms and units ---------------------------------------------------------


def _source_with(tmp_path, name, orientation="RAS", **fields):
    base = tmp_path / f"base-{name}"
    sitk.WriteImage(_source_image(ORIENTATIONS[orientation]), str(base))
    path = tmp_path / name
    _patched(base, path, **fields)
    return path


def _in_metres(path) -> dict:
    fields = _fields(path)
    pixdim = fields["pixdim"]
    return {
        "pixdim": (pixdim[0], *(v / 1000 for v in pixdim[1:4]), *pixdim[4:]),
        "xyzt_units": (1 | 8,),  # NIFTI_UNITS_METER | NIFTI_UNITS_SEC
        "quatern": (*fields["quatern"][:3], *(v / 1000 for v in fields["quatern"][3:])),
        "srow": tuple(v / 1000 for v in fields["srow"]),
    }


def _sources(tmp_path):
    """(name, path) of the NIfTI sources the reviewer's masks sat off the CT for."""
    shifted = _source_with(tmp_path, "shifted.nii.gz")
    srow = list(_fields(shifted)["srow"])
    srow[3] += 30.0  # the sform 30 mm along x from the qform; code 2 ("aligned"): ITK keeps the qform
    _patched(shifted, shifted, codes=(1, 2), srow=srow)
    base = tmp_path / "mm.nii.gz"
    sitk.WriteImage(_source_image(ORIENTATIONS["oblique"]), str(base))
    metres = tmp_path / "metres.nii.gz"
    _patched(base, metres, **_in_metres(base))
    none = _source_with(tmp_path, "no-transform.nii", orientation="LPS", codes=(0, 0))
    return {"qform and sform 30 mm apart": shifted, "spacing in metres": metres, "no transform": none}


@pytest.mark.parametrize("case", ["qform and sform 30 mm apart", "spacing in metres", "no transform"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_masks_keep_the_source_header_s_transforms_and_units(tmp_path, case, suffix):
    """The mask had the transform ITK used as qform and sform (code 1), in mm: tools that read the
    sform (nibabel, FSL) put it 30 mm (or 328 mm, or 191 mm) away from the CT."""
    source = _sources(tmp_path)[case]
    volume = read_ct(source, intensity="hu")
    labels = (volume.hu > -100).astype(np.uint8)
    written = write_volume(tmp_path / f"lungs{suffix}", labels, volume.geometry, is_label=True)
    assert _fields(written) == _fields(source)
    first, second = sitk.ReadImage(str(source)), sitk.ReadImage(str(written))
    assert _corners_mm(first, second) < 1e-3, "ITK reads the mask on the CT's grid"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(second), sitk.GetArrayFromImage(first) > -100)
    np.testing.assert_array_equal(read_mask(written, volume.geometry, volume.shape), labels)


def test_a_source_whose_axes_are_a_cyclic_permutation_keeps_its_header_too(tmp_path):
    """File axes i -> P, j -> S, k -> L (a cyclic permutation: the one kind whose display-to-file axis
    map is not its own inverse). Read the wrong way round, the map was no permutation and the mask
    went to ITK's writer, with ITK's qform and sform (code 1/1) in place of the source's 1/2 pair."""
    shifted = _source_with(tmp_path, "cyclic.nii.gz", orientation="permuted")
    srow = list(_fields(shifted)["srow"])
    srow[3] += 30.0  # an "aligned" sform 30 mm from the qform, which ITK reads
    _patched(shifted, shifted, codes=(1, 2), srow=srow)
    volume = read_ct(shifted, intensity="hu")
    assert volume.geometry.source_orientation == "PSL"
    labels = np.zeros(volume.shape, np.uint8)
    labels[1, 2, 3] = 1  # display (z, y, x) = (1, 2, 3): file (i, j, k) = (y, z, x) = (2, 1, 3)
    for suffix in (".nii.gz", ".nii"):
        written = write_volume(tmp_path / f"lungs{suffix}", labels, volume.geometry, is_label=True)
        assert _fields(written) == _fields(shifted)
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(written)))  # (k, j, i)
        assert [tuple(v) for v in np.argwhere(stored)] == [(3, 1, 2)]


def test_the_metres_source_is_read_in_mm(tmp_path):
    """What the header copy relies on: ITK converts the units, so the grid is the mm file's."""
    sources = _sources(tmp_path)
    metres, mm = (
        read_ct(p, intensity="hu").geometry for p in (sources["spacing in metres"], tmp_path / "mm.nii.gz")
    )
    np.testing.assert_allclose(metres.spacing_mm, mm.spacing_mm, rtol=1e-6)
    np.testing.assert_allclose(metres.origin_mm, mm.origin_mm, atol=1e-3)


def test_a_nifti_source_s_fields_are_not_copied_onto_another_grid(tmp_path):
    """A NIfTI written for a CT from a NIfTI, but on a changed grid, gets ITK's header for that grid."""
    import dataclasses

    volume = read_ct(_sources(tmp_path)["qform and sform 30 mm apart"], intensity="hu")
    moved = dataclasses.replace(volume.geometry, origin_mm=tuple(np.add(volume.geometry.origin_mm, 7.0)))
    written = write_volume(tmp_path / "other.nii.gz", np.zeros(volume.shape, np.uint8), moved, is_label=True)
    assert _fields(written)["codes"] == (1, 1)  # ITK's header: the source's fields place another grid
    read_mask(written, moved, volume.shape)


def test_the_napari_writer_keeps_the_source_header_too(tmp_path):
    from napari_chsnet.napari_hooks import read_ct_layers, write_labels

    source = _sources(tmp_path)["qform and sform 30 mm apart"]
    [(data, kwargs, _)] = read_ct_layers(str(source))
    [path] = write_labels(str(tmp_path / "drawn.nii.gz"), (data > -100).astype(np.uint8), kwargs)
    assert _fields(tmp_path / "drawn.nii.gz") == _fields(source), path


# 4. A 2-D NIfTI slice ---------------------------------------------------------------------------------


def _flat_nifti_as_a_2_mm_slice(tmp_path):
    """ITK's 2-D NIfTI of a 16 x 12 slice, with its pixdim, quatern, srow edited to 2 mm at z = -266.1."""
    image = sitk.GetImageFromArray(np.full((16, 12), -800, dtype=np.int16))
    image.SetSpacing((0.75, 0.8))
    image.SetOrigin((-10.0, 20.0))
    flat = tmp_path / "flat.nii"
    sitk.WriteImage(image, str(flat))
    fields = _fields(flat)
    pixdim, quatern, srow = list(fields["pixdim"]), list(fields["quatern"]), list(fields["srow"])
    pixdim[3], quatern[5], srow[10], srow[11] = 2.0, -266.1, 2.0, -266.1
    return flat, pixdim, quatern, srow


def test_a_two_dimensional_nifti_keeps_its_slice_position_and_thickness(tmp_path):
    """A dim-2 NIfTI with pixdim[3] = 2 mm at z = -266.1 became a 1 mm slice at z = 0 (volumes halved)."""
    flat, pixdim, quatern, srow = _flat_nifti_as_a_2_mm_slice(tmp_path)
    assert struct.unpack_from("<h", _nifti_bytes(flat), 40)[0] == 2, "ITK writes a 2-D header"
    path = tmp_path / "slice.nii.gz"
    _patched(flat, path, pixdim=pixdim, quatern=quatern, srow=srow)
    volume = read_ct(path, intensity="hu")
    assert volume.shape == (1, 16, 12)
    np.testing.assert_allclose(volume.geometry.spacing_mm, (0.75, 0.8, 2.0), rtol=1e-6)
    np.testing.assert_allclose(volume.geometry.origin_mm, (-10.0, 20.0, -266.1), atol=1e-4)
    assert volume.geometry.voxel_volume_ml == pytest.approx(0.75 * 0.8 * 2.0 / 1000, rel=1e-6)
    written = write_volume(
        tmp_path / "lungs.nii.gz", np.ones(volume.shape, np.uint8), volume.geometry, is_label=True
    )
    back = sitk.ReadImage(str(written))
    assert back.GetSize() == (12, 16, 1)
    np.testing.assert_allclose(back.GetOrigin(), (-10.0, 20.0, -266.1), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), (0.75, 0.8, 2.0), rtol=1e-6)
    read_mask(written, volume.geometry, volume.shape)


def test_a_two_dimensional_nifti_in_metres_keeps_its_thickness_in_mm(tmp_path):
    """The same 2 mm slice with every length of its header in metres (xyzt_units NIFTI_UNITS_METER):
    ITK converts the in-plane spacing to mm; the thickness must be converted alike (it was 0.002 mm,
    every volume 1000 times too small)."""
    flat, pixdim, quatern, srow = _flat_nifti_as_a_2_mm_slice(tmp_path)
    path = tmp_path / "slice_in_metres.nii.gz"
    _patched(
        flat,
        path,
        pixdim=(pixdim[0], *(v / 1000 for v in pixdim[1:4]), *pixdim[4:]),
        quatern=(*quatern[:3], *(v / 1000 for v in quatern[3:])),
        srow=tuple(v / 1000 for v in srow),
        xyzt_units=(1 | 8,),  # NIFTI_UNITS_METER | NIFTI_UNITS_SEC
    )
    volume = read_ct(path, intensity="hu")
    assert volume.shape == (1, 16, 12)
    np.testing.assert_allclose(volume.geometry.spacing_mm, (0.75, 0.8, 2.0), rtol=1e-5)
    np.testing.assert_allclose(volume.geometry.origin_mm, (-10.0, 20.0, -266.1), atol=1e-3)
    assert volume.geometry.voxel_volume_ml == pytest.approx(0.75 * 0.8 * 2.0 / 1000, rel=1e-5)


# 3. Upper-case suffixes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT.MHA", "CT.MHD", "CT.NRRD", "CT.NHDR", "CT.NII.GZ", "ct.Mha"])
def test_upper_case_suffixes_are_read(tmp_path, name):
    lower = tmp_path / name.lower()
    sitk.WriteImage(_source_image(ORIENTATIONS["RAS"]), str(lower))
    upper = tmp_path / name
    lower.rename(upper)  # a .mhd's data file keeps the name its header gives
    expected = read_ct(_ras_ct(tmp_path), intensity="hu")
    volume = read_ct(upper, intensity="hu")
    np.testing.assert_array_equal(volume.hu, expected.hu)
    np.testing.assert_allclose(volume.geometry.origin_mm, expected.geometry.origin_mm, atol=1e-4)


@pytest.mark.parametrize("name", ["LUNGS.MHA", "LUNGS.NRRD", "LUNGS.NII.GZ", "LUNGS.NII", "Lungs.Mha"])
def test_upper_case_suffixes_are_written_as_one_file(tmp_path, name):
    """ITK took LUNGS.MHA for a MetaImage header with a separate data file, wrote .part.LUNGS.mhd and
    .zraw, then failed to read it back ("check free disk space") and left both behind."""
    volume = read_ct(_ras_ct(tmp_path), intensity="hu")
    labels = (volume.hu > 0).astype(np.uint8)
    out = tmp_path / "out"
    written = write_volume(out / name, labels, volume.geometry, is_label=True)
    assert sorted(p.name for p in out.iterdir()) == [name]
    np.testing.assert_array_equal(read_mask(written, volume.geometry, volume.shape), labels)


def test_a_mixed_case_nifti_suffix_is_refused_by_name(tmp_path):
    """The NIfTI library refuses ".Nii" ("mixed case extension"): ITK could neither read such a file
    nor read back one written under that name."""
    volume = read_ct(_ras_ct(tmp_path), intensity="hu")
    with pytest.raises(InvalidVolumeError, match=r"mixed-case suffix .Nii.gz; name it .nii.gz or .NII.GZ"):
        write_volume(tmp_path / "out" / "lungs.Nii.gz", np.zeros(volume.shape, np.uint8), volume.geometry)
    assert not (tmp_path / "out").exists()
    (tmp_path / "ct.Nii").write_bytes(_nifti_bytes(tmp_path / "ct.nii.gz"))
    with pytest.raises(
        InvalidVolumeError, match=r"ct.Nii cannot be read: the NIfTI reader takes .nii or .NII, not .Nii"
    ):
        read_ct(tmp_path / "ct.Nii")


def test_mhd_is_not_a_write_suffix_in_any_case(tmp_path):
    volume = read_ct(_ras_ct(tmp_path), intensity="hu")
    for name in ("lungs.mhd", "LUNGS.Mhd"):
        with pytest.raises(InvalidVolumeError, match="cannot write .mhd"):
            write_volume(tmp_path / "out" / name, np.zeros(volume.shape, np.uint8), volume.geometry)
    assert not (tmp_path / "out").exists()


def test_a_failed_write_removes_what_the_writer_made_beside_its_file(tmp_path):
    """A MetaImage header's data file (.zraw) is made beside the temporary file: removed with it."""

    def write_then_fail(temporary):
        temporary.write_bytes(b"header")
        temporary.with_suffix(".zraw").write_bytes(b"data")
        raise OSError("disk full")

    (tmp_path / "other.zraw").write_bytes(b"not ours")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "LUNGS.mhd", write_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zraw"]


# 5. NIfTI files ITK cannot read, refused for their reason ---------------------------------------------


def test_gzip_data_named_nii_is_refused_as_such(tmp_path):
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(_source_image(ORIENTATIONS["LPS"]), str(plain))
    path = tmp_path / "packed.nii"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(
        InvalidVolumeError, match=r"packed.nii cannot be read: the file is gzip-compressed: name it .nii.gz"
    ):
        read_ct(path)


def _nifti2(shape_xyz=(4, 5, 6)) -> bytes:
    header = bytearray(544)
    struct.pack_into("<i8s", header, 0, 540, b"n+2\0\r\n\x1a\n")
    struct.pack_into("<2h", header, 12, 4, 16)  # int16
    struct.pack_into("<8q", header, 16, 3, *shape_xyz, 1, 1, 1, 1)
    struct.pack_into("<8d", header, 104, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)
    struct.pack_into("<q", header, 168, 544)
    struct.pack_into("<2i", header, 344, 0, 0)
    return bytes(header) + np.full(shape_xyz[::-1], -1000, "<i2").tobytes()


@pytest.mark.parametrize("name", ["v2.nii", "v2.nii.gz"])
def test_nifti2_is_refused_as_such(tmp_path, name):
    path = tmp_path / name
    data = _nifti2()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(
        InvalidVolumeError, match=r"NIfTI-2 is not supported by this reader; convert it to NIfTI-1"
    ):
        read_ct(path)
