"""Writing volumes and masks back onto the source file's own voxel grid, and reading masks onto ours."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from napari_chsnet.errors import InvalidVolumeError, OutputError, OutputExistsError
from napari_chsnet.io.atomic import atomic_write
from napari_chsnet.io.orientation import (
    ORTHONORMAL_ATOL,
    ROUNDING_DEPARTURE,
    image_from_display,
    is_orthonormal,
    orthonormal_departure,
    straightened,
    to_source,
    unit_columns,
)
from napari_chsnet.io.readers import image_io_of, mixed_case_nifti_suffix, read_image_file, suffix_of
from napari_chsnet.io.volume import CTVolume, Geometry, NiftiTransform

WRITE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
# Grid agreement for masks: NIfTI stores its affine in float32, so allow that rounding. Directions are
# compared straightened (``orientation.straightened``: cosines rounded to a few decimals count as the nearest
# orthonormal ones).
_SPACING_RTOL = 1e-4
_POSITION_ATOL_MM = 1e-2
_DIRECTION_ATOL = 1e-4
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
# NIfTI voxels are written this many bytes at a time (the only copy a write makes, and only for a
# file stored in another orientation than LPS).
_SLAB_BYTES = 16 << 20
# zlib level of a .nii.gz. For float and int16 volumes Python's zlib at level 1 takes the time ITK's
# zlib-ng took at its default (2.2-2.7 s vs 2.1-2.4 s for a 148-slice float32 probability map) for a
# 1-3 % larger file; level 6 gives ITK's size but takes 30 % longer. Masks (uint8) compress fast at 6
# and are 2.5x larger at 1.
_GZIP_LEVEL = 1
_GZIP_LEVEL_MASKS = 6
# NIfTI-1 header fields that place the voxels (offset, struct format): copied from a NIfTI source.
_NIFTI1_TRANSFORM = {"pixdim": (76, "8f"), "xyzt_units": (123, "B"), "codes": (252, "2h"),
                     "quatern": (256, "6f"), "srow": (280, "12f")}  # fmt: skip


class _Grid(NamedTuple):
    """A voxel grid as ITK holds it, in the file's own axis order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


class _WrongGrid(Exception):
    """The file written does not lie on the grid it was written for."""


def write_volume(
    path: str | PathLike[str],
    array_zyx: np.ndarray,
    geometry: Geometry,
    *,
    overwrite: bool = False,
    is_label: bool = False,
) -> Path:
    """Write a display-oriented array in the source orientation recorded in ``geometry``.

    Args:
        path: output file ending in .nii.gz, .nii, .mha or .nrrd.
        array_zyx: ``(z, y, x)`` array in the LPS display orientation.
        geometry: the grid the array lies on (from the CTVolume it was computed on).
        overwrite: replace an existing file instead of refusing.
        is_label: store as uint8 labels (values must lie in 0..255) instead of the array's dtype.

    Returns:
        The path written.

    The direction is written as each format can hold it (:func:`written_direction`): an .mha keeps
    ``geometry``'s own (cosines rounded to a few decimals included, so ITK filters take the mask and the
    CT file as one grid); an .nrrd its columns at unit length (ITK's NRRD reader takes a column's length
    as spacing: a rounded direction reads back up to ~1e-3 from the CT file's, the angles kept); a NIfTI
    the nearest orthonormal direction of a rounding-size departure (``orientation.straightened``).
    A .nii/.nii.gz is written straight from ``array_zyx`` (no copy of the volume for an LPS file,
    16 MiB slabs otherwise); .mha/.nrrd through one SimpleITK copy (SimpleITK 2.5 has no zero-copy
    image of a numpy array).

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        InvalidVolumeError: unsupported suffix, a NIfTI for a skewed grid (``check_writable``), or
            labels outside 0..255.
        OutputError: the file could not be written whole (disk full, no permission) or was read back
            on another grid; an existing file at ``path`` is then left as it was.
    """
    path = Path(path)
    check_writable(path, geometry)
    geometry = replace(geometry, direction=written_direction(path, geometry.direction))
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or allow overwriting.")
    if array_zyx.ndim != 3:
        raise InvalidVolumeError(
            f"{path}: expected a 3-D (z, y, x) array to write, got shape {array_zyx.shape}."
        )
    if not array_zyx.dtype.isnative:  # ITK takes native byte order only
        array_zyx = array_zyx.astype(array_zyx.dtype.newbyteorder("="))
    if is_label:
        array_zyx = _as_labels(array_zyx, str(path))
    elif array_zyx.dtype in (np.float64, np.float16):  # float16: no ITK pixel type
        array_zyx = array_zyx.astype(np.float32)
    elif array_zyx.dtype == np.bool_:
        array_zyx = array_zyx.astype(np.uint8)
    if suffix_of(path) in _NIFTI_SUFFIXES:
        _write_atomically(path, lambda temporary: _write_nifti(temporary, array_zyx, geometry))
    else:
        # The one reference, popped by the writer so the image is freed before the read-back.
        images = [to_source(image_from_display(array_zyx, geometry), geometry.source_orientation)]
        _write_atomically(path, lambda temporary: _write_with_itk(temporary, images))
    return path


def check_writable(path: str | PathLike[str], geometry: Geometry) -> None:
    """Refuse, before anything is computed or written, a file ``write_volume`` cannot write on
    ``geometry``: an unsupported suffix, a NIfTI suffix in mixed case (``.Nii``: ITK could not read
    the file back), or a NIfTI for a grid whose axes are not perpendicular (a
    skewed grid, e.g. a gantry-tilted scan stored with its shear in an .mha/.nrrd). ITK's NIfTI writer
    turns such a grid into a rotation (masks up to 50 mm off the CT) and its reader refuses a skewed
    sform, so no NIfTI file could hold it as ITK reads it; .mha and .nrrd hold it exactly.

    Raises:
        InvalidVolumeError: saying what to write instead.
    """
    path = Path(path)
    suffix = suffix_of(path)
    if suffix not in WRITE_SUFFIXES:
        raise InvalidVolumeError(
            f"{path}: cannot write {suffix or 'files without a suffix'}; use one of {', '.join(WRITE_SUFFIXES)}."
        )
    mixed = mixed_case_nifti_suffix(path)
    if mixed:
        raise InvalidVolumeError(
            f"{path}: NIfTI readers (ITK's) refuse the mixed-case suffix {mixed}; name it {suffix} or {suffix.upper()}."
        )
    if suffix in _NIFTI_SUFFIXES:
        skew = grid_skew_deg(geometry)
        if skew is not None:
            raise InvalidVolumeError(
                f"{path}: the CT's voxel axes are {skew:.2f}° from perpendicular (a skewed grid, e.g. gantry "
                "tilt), which NIfTI cannot store as ITK reads it; write .mha or .nrrd instead."
            )


def written_direction(path: str | PathLike[str], direction: tuple[float, ...]) -> tuple[float, ...]:
    """The direction ``write_volume`` writes to ``path`` for a grid of ``direction`` (row-major 3x3):
    an .mha's is ``direction`` itself, an .nrrd's has unit columns (:func:`orientation.unit_columns`,
    what ITK reads back of it), a NIfTI's is straightened (``orientation.straightened``; a skewed one is
    refused by ``check_writable``)."""
    suffix = suffix_of(Path(path))
    if suffix == ".nrrd":
        return unit_columns(direction)
    if suffix in _NIFTI_SUFFIXES:
        return straightened(direction)
    return tuple(float(v) for v in direction)


def grid_skew_deg(geometry: Geometry) -> float | None:
    """How far the grid's axes are from perpendicular unit vectors (degrees: arcsin of max |MᵀM - I|, the
    angle from perpendicular for a sheared grid), or None when the direction is orthonormal once
    straightened (``orientation.straightened``: a departure up to ROUNDING_DEPARTURE, cosines rounded to
    a few decimals) and so NIfTI holds it. Any other direction (a shear, axes not of unit length) has no
    NIfTI file: ``chsnet segment`` refuses it before the networks run, not when writing."""
    departure = orthonormal_departure(np.reshape(np.asarray(straightened(geometry.direction)), (3, 3)))
    if departure <= ORTHONORMAL_ATOL:
        return None
    return float(np.degrees(np.arcsin(min(1.0, departure))))


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(temporary)`` through a checked temporary file (``io.atomic``).

    ITK can ignore failed writes (a full disk leaves a truncated file and no error), so every
    writer reads its file back (``_check_written``) and the final name only ever holds a file that
    was read back whole; an old file survives a failure.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except _WrongGrid as error:
        instead = "; write .mha or .nrrd instead" if suffix_of(path) in _NIFTI_SUFFIXES else ""
        raise OutputError(
            f"could not write {path}: the file written does not lie on the CT's voxel grid ({error}){instead}"
        ) from error
    except (OSError, RuntimeError, EOFError, zlib.error) as error:  # EOFError: truncated gzip
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise OutputError(
            f"could not write {path} ({reason}); check free disk space and write permission"
        ) from error


def _write_with_itk(temporary: Path, images: list[sitk.Image]) -> None:
    """Write the image in ``images`` (taken out of the list) with ITK and check the file."""
    image = images.pop()
    expected = _grid_of(image)
    sitk.WriteImage(image, str(temporary), useCompression=True, imageIO=image_io_of(temporary))
    del image  # the read-back of a .mha/.nrrd holds a whole copy: not next to this one
    _check_written(temporary, expected)


def _write_nifti(temporary: Path, array_zyx: np.ndarray, geometry: Geometry) -> None:
    """Write a NIfTI file without a SimpleITK copy of the volume (+592 MB for a 592-slice float32
    probability map): ITK writes the header of a one-voxel image on the file's own grid, and the
    voxels follow from numpy views of ``array_zyx``, a slab at a time, in the file's own order."""
    source_zyx, probe = _source_grid(array_zyx, geometry)
    header = (
        _nifti_header(temporary, probe, source_zyx.shape[::-1], geometry.nifti) if probe is not None else None
    )
    if header is None:  # a grid this cannot express (see _nifti_header): ITK writes it whole
        _write_with_itk(
            temporary, [to_source(image_from_display(array_zyx, geometry), geometry.source_orientation)]
        )
        return
    _stream_nifti(temporary, header, source_zyx)
    expected = _grid_of(probe)._replace(size=tuple(source_zyx.shape[::-1]))  # type: ignore[union-attr]
    _check_written(temporary, expected, len(header) + source_zyx.nbytes)


def _source_grid(array_zyx: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, sitk.Image | None]:
    """``array_zyx`` as the file's own grid holds it (a view: axes permuted and flipped as
    ``to_source`` would, no copy) and a one-voxel image with that grid's spacing, direction and
    origin (the position of the view's first voxel). The image is None when ``to_source`` is not
    a permutation with flips of the display axes (it always is; the check guards the arithmetic)."""
    display_probe = image_from_display(np.zeros((1, 1, 1), array_zyx.dtype), geometry)
    probe = to_source(display_probe, geometry.source_orientation)
    display_axes = np.reshape(np.asarray(geometry.direction, dtype=float), (3, 3))
    source_axes = np.reshape(np.asarray(probe.GetDirection(), dtype=float), (3, 3))
    overlap = display_axes.T @ source_axes  # column j: the file's axis j in display axes
    order = [int(i) for i in np.argmax(np.abs(overlap), axis=0)]
    signs = [float(np.sign(overlap[order[j], j])) for j in range(3)]
    if sorted(order) != [0, 1, 2] or not np.allclose(np.abs(overlap[order, range(3)]), 1.0, atol=1e-6):
        return array_zyx, None
    display_xyz = array_zyx.transpose(2, 1, 0)
    flips = tuple(slice(None, None, -1) if sign < 0 else slice(None) for sign in signs)
    source_xyz = display_xyz.transpose(order)[flips]
    # The file's first voxel is the display voxel at the far end of every flipped axis.
    first = [0, 0, 0]
    for j, axis in enumerate(order):
        if signs[j] < 0:
            first[axis] = display_xyz.shape[axis] - 1
    probe.SetOrigin(display_probe.TransformIndexToPhysicalPoint(first))
    return source_xyz.transpose(2, 1, 0), probe


def _nifti_header(
    temporary: Path, probe: sitk.Image, size_xyz: tuple[int, ...], source: NiftiTransform | None = None
) -> bytes | None:
    """The NIfTI-1 header (and empty extension) ITK writes for ``probe``'s grid and pixel type,
    with the volume's size in place of the probe's 1 x 1 x 1.

    ``source``: the transform fields of the NIfTI the grid was read from. When the grid is that file's
    (its size, and ITK reads the header with them as ``probe``'s grid) they replace ITK's, so the
    mask keeps the source's qform and sform (codes included), units and pixdim: ITK writes one
    transform as both, in mm, and tools reading the sform (nibabel, FSL) put the mask elsewhere than
    the CT when the source's sform differed, its units were not mm or it set no transform.

    Returns None where that is not the whole difference: a size above NIfTI-1's 32767, or a header
    ITK lays out otherwise (another ITK version); the caller then lets ITK write the volume.
    """
    if max(size_xyz) > 32767 or min(size_xyz) < 1:
        return None
    header_file = temporary.with_name(temporary.name + ".header.nii")
    try:
        sitk.WriteImage(probe, str(header_file), useCompression=False)
        data = header_file.read_bytes()
    finally:
        header_file.unlink(missing_ok=True)
    endian = "<" if data[:4] == struct.pack("<i", 348) else ">"
    if len(data) < 352:
        raise OSError(f"the NIfTI header written for {temporary.name} is cut off")
    vox_offset = struct.unpack(endian + "f", data[108:112])[0]
    dims = struct.unpack(endian + "8h", data[40:56])
    if (
        struct.unpack(endian + "i", data[:4])[0] != 348
        or data[344:348] != b"n+1\0"
        or vox_offset != int(vox_offset)
        or dims[:4] != (3, 1, 1, 1)
    ):
        return None
    if len(data) != int(vox_offset) + probe.GetSizeOfPixelComponent():
        raise OSError(f"the NIfTI header written for {temporary.name} is cut off")
    if source is not None and tuple(source.shape_ijk) == tuple(size_xyz):
        copied = _with_transform(data, endian, source)
        if _reads_as(header_file, copied, probe):
            data = copied
    return data[:40] + struct.pack(endian + "4h", 3, *size_xyz) + data[48 : int(vox_offset)]


def _with_transform(data: bytes, endian: str, source: NiftiTransform) -> bytes:
    """``data`` (a NIfTI-1 file) with ``source``'s placing fields in its header."""
    patched = bytearray(data)
    values = {"pixdim": source.pixdim, "xyzt_units": (source.xyzt_units,),
              "codes": (source.qform_code, source.sform_code), "quatern": source.quatern, "srow": source.srow}  # fmt: skip
    for name, (offset, fmt) in _NIFTI1_TRANSFORM.items():
        struct.pack_into(endian + fmt, patched, offset, *values[name])
    return bytes(patched)


def _reads_as(scratch: Path, data: bytes, probe: sitk.Image) -> bool:
    """Whether ITK reads the one-voxel NIfTI ``data`` on ``probe``'s grid (written to ``scratch``)."""
    try:
        scratch.write_bytes(data)
        found = _header_grid(scratch, "NiftiImageIO")
    except RuntimeError:  # e.g. a skewed sform, which ITK refuses
        return False
    finally:
        scratch.unlink(missing_ok=True)
    return not _grid_problems(found, _grid_of(probe), straighten=False)


def _stream_nifti(temporary: Path, header: bytes, source_zyx: np.ndarray) -> None:
    """Write ``header`` and then ``source_zyx``'s voxels (x fastest), gzip-compressed for .nii.gz,
    a slab of about ``_SLAB_BYTES`` at a time (a view's slab is copied only when it is not
    contiguous, i.e. for a file stored in another orientation)."""
    per_slice = max(1, source_zyx[:1].nbytes)
    step = max(1, _SLAB_BYTES // per_slice)
    with open(temporary, "wb") as raw:
        if suffix_of(temporary) == ".nii.gz":
            # No file name and a zero time stamp in the gzip header: the same voxels, the same bytes.
            level = _GZIP_LEVEL_MASKS if source_zyx.dtype == np.uint8 else _GZIP_LEVEL
            handle = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0)
        else:
            handle = raw
        with handle:
            handle.write(header)
            for start in range(0, source_zyx.shape[0], step):
                slab = np.ascontiguousarray(source_zyx[start : start + step])
                handle.write(memoryview(slab).cast("B"))


def _grid_of(image: sitk.Image) -> _Grid:
    return _Grid(tuple(image.GetSize()), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def _header_grid(path: Path, image_io: str) -> _Grid:
    """The grid ITK reads from ``path``'s header alone (no voxels); RuntimeError when it cannot."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(image_io)
    reader.ReadImageInformation()
    return _Grid(tuple(reader.GetSize()), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _grid_problems(
    found: _Grid, expected: _Grid, spacing_slack: float = 0.0, *, straighten: bool = True
) -> list[str]:
    """How ``found``'s placement differs from ``expected``'s beyond float32 rounding (spacing to
    1e-4 relative, plus ``spacing_slack``; origin to 0.01 mm; direction cosines to 1e-4, each direction
    straightened first unless ``straighten`` is False); empty when it does not."""
    problems = []
    if not np.allclose(found.spacing, expected.spacing, rtol=_SPACING_RTOL + spacing_slack, atol=0):
        problems.append(f"spacing {_mm(found.spacing)} vs {_mm(expected.spacing)} mm")
    if not np.allclose(found.origin, expected.origin, rtol=0, atol=_POSITION_ATOL_MM):
        problems.append(f"origin {_mm(found.origin)} vs {_mm(expected.origin)} mm")
    found_direction, expected_direction = (
        straightened(d) if straighten and len(d) == 9 else d for d in (found.direction, expected.direction)
    )
    if not np.allclose(found_direction, expected_direction, rtol=0, atol=_DIRECTION_ATOL):
        worst = float(np.abs(np.subtract(found_direction, expected_direction)).max())
        problems.append(f"direction cosines differ by up to {worst:.6g}")
    return problems


def _check_written(temporary: Path, expected: _Grid, file_bytes: int | None = None) -> None:
    """Raise OSError unless ``temporary`` holds a complete image of ``expected`` size (x, y, z), and
    _WrongGrid unless ITK reads it on ``expected``'s grid (spacing, origin, direction: the one written
    for that format, compared as it is, not straightened).

    ``file_bytes``: the length the (uncompressed) NIfTI stream must have, when the caller wrote it.
    No check keeps a copy of the voxels: a .nii.gz is decompressed 1 MiB at a time and a .nii this
    module streamed is measured; others (.mha, .nrrd, a .nii ITK wrote) are read back whole.
    """
    suffix = suffix_of(temporary)
    if suffix == ".nii.gz" or (suffix == ".nii" and file_bytes is not None):
        # The header sits at the start, so a truncated file still reads its header: read the
        # whole gzip stream (cheap next to the write) to find a missing end.
        if suffix == ".nii.gz":
            length = 0
            with gzip.open(temporary, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    length += len(chunk)
        else:
            length = temporary.stat().st_size
        if file_bytes is not None and length != file_bytes:
            raise OSError(f"the written file holds {length} bytes, expected {file_bytes}")
        found = _header_grid(temporary, image_io_of(temporary))
    else:
        found = _grid_of(sitk.ReadImage(str(temporary), imageIO=image_io_of(temporary)))
    if found.size != tuple(expected.size):
        raise OSError(f"the written file holds size {found.size}, expected {tuple(expected.size)}")
    problems = _grid_problems(found, expected, straighten=False)
    if problems:
        raise _WrongGrid("; ".join(problems))


def _as_labels(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(np.round(array), array)):
        raise InvalidVolumeError(
            f"{source}: labels must be whole numbers in 0..255, got values from {array.min()} to {array.max()}."
        )
    return array.astype(np.uint8)


def read_mask(
    path: str | PathLike[str], geometry: Geometry, shape_zyx: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Read a label mask and return it as uint8 in the display orientation of ``geometry``'s CT.

    Raises:
        InvalidVolumeError: the file cannot be read, holds non-label values, or lies on another grid.
    """
    mask = read_image_file(Path(path), mask=True)
    source = str(path)
    problems = []
    if shape_zyx is not None and tuple(mask.shape) != tuple(shape_zyx):
        problems.append(f"shape {mask.shape} vs {tuple(shape_zyx)}")
    found, expected = (_Grid((), g.spacing_mm, g.origin_mm, g.direction) for g in (mask.geometry, geometry))
    # Cosines rounded in the files (0.985\0.174) were used to measure the spacing: a mask saved on such a
    # grid before they were straightened when read (a DICOM series' slice spacing was measured along a
    # normal 1.0005 long), or as an .nrrd by an earlier version (which folded a cosine's length into the
    # spacing), has its spacing off by that rounding, up to ROUNDING_DEPARTURE. Only then: a grid of
    # orthonormal directions (an exact rotation included) keeps the normal tolerance.
    rounded = not (is_orthonormal(geometry.direction) and is_orthonormal(mask.geometry.direction))
    slack = ROUNDING_DEPARTURE if rounded else 0.0
    problems += _grid_problems(found, expected, slack)
    if problems:
        advice = "resample the mask onto the CT first"
        if _lost_its_header(mask, geometry, shape_zyx):
            advice = (
                "it has the CT's size but 1 mm voxels or its first voxel at 0 mm, as a mask saved without the "
                "CT's header has: if its voxels are in the CT's order, give it the CT's header (e.g. "
                "SimpleITK's CopyInformation); otherwise resample it onto the CT"
            )
        raise InvalidVolumeError(
            f"{source} does not lie on the CT's voxel grid ({'; '.join(problems)}); {advice}."
        )
    return _as_labels(mask.hu, source)


def _lost_its_header(mask: CTVolume, geometry: Geometry, shape_zyx: tuple[int, int, int] | None) -> bool:
    """A mask of the CT's size with 1 mm voxels, or with its first voxel at 0 mm, where the CT has
    neither: likely written from an array without the CT's header (a default affine, or a NIfTI whose
    qform and sform codes are both 0), not on another grid."""
    if shape_zyx is None or tuple(mask.shape) != tuple(shape_zyx):
        return False
    ones = (1.0, 1.0, 1.0)
    default_spacing = tuple(mask.geometry.spacing_mm) == ones and tuple(geometry.spacing_mm) != ones
    at_zero = not np.any(mask.geometry.origin_mm) and np.any(geometry.origin_mm)
    return default_spacing or bool(at_zero)


def _mm(values: tuple[float, ...]) -> str:
    """Enough digits to show a difference of the tolerances (1e-4 relative, 0.01 mm)."""
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
