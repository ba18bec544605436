"""Writing volumes and masks back onto the source file's own voxel grid, and reading masks onto ours."""

from __future__ import annotations

import gzip
import zlib
from os import PathLike
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_chsnet.errors import InvalidVolumeError, OutputError, OutputExistsError
from napari_chsnet.io.atomic import atomic_write
from napari_chsnet.io.orientation import image_from_display, to_source
from napari_chsnet.io.readers import read_image_file, suffix_of
from napari_chsnet.io.volume import Geometry

WRITE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
# Grid agreement for masks: NIfTI stores its affine in float32, so allow that rounding.
_SPACING_RTOL = 1e-4
_POSITION_ATOL_MM = 1e-2
_DIRECTION_ATOL = 1e-4


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

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        InvalidVolumeError: unsupported suffix, or labels outside 0..255.
        OutputError: the file could not be written whole (disk full, no permission); an existing
            file at ``path`` is then left as it was.
    """
    path = Path(path)
    if suffix_of(path) not in WRITE_SUFFIXES:
        raise InvalidVolumeError(
            f"{path}: cannot write {suffix_of(path) or 'files without a suffix'}; use one of {', '.join(WRITE_SUFFIXES)}."
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or allow overwriting.")
    if array_zyx.ndim != 3:
        raise InvalidVolumeError(
            f"{path}: expected a 3-D (z, y, x) array to write, got shape {array_zyx.shape}."
        )
    if is_label:
        array_zyx = _as_labels(array_zyx, str(path))
    elif array_zyx.dtype == np.float64:
        array_zyx = array_zyx.astype(np.float32)
    elif array_zyx.dtype == np.bool_:
        array_zyx = array_zyx.astype(np.uint8)
    image = to_source(image_from_display(array_zyx, geometry), geometry.source_orientation)
    _write_image_atomically(image, path)
    return path


def _write_image_atomically(image: sitk.Image, path: Path) -> None:
    """Write ``image`` through a checked temporary file (``io.atomic``).

    ITK can ignore failed writes (a full disk leaves a truncated file and no error), so the
    final name only ever holds a file that was read back whole; an old file survives a failure.
    """

    def write_checked(temporary: Path) -> None:
        sitk.WriteImage(image, str(temporary), useCompression=True)
        _check_written(temporary, image)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write_checked)
    except (OSError, RuntimeError, EOFError, zlib.error) as error:  # EOFError: truncated gzip
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise OutputError(
            f"could not write {path} ({reason}); check free disk space and write permission"
        ) from error


def _check_written(temporary: Path, image: sitk.Image) -> None:
    """Raise OSError unless ``temporary`` holds a complete image of ``image``'s size."""
    expected = tuple(image.GetSize())
    if suffix_of(temporary) == ".nii.gz":
        # The header sits at the start, so a truncated file still reads its header: read the
        # whole gzip stream (cheap next to the write) to find a missing end.
        with gzip.open(temporary, "rb") as handle:
            while handle.read(1 << 22):
                pass
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(temporary))
        reader.ReadImageInformation()
        found = tuple(reader.GetSize())
    else:
        found = tuple(sitk.ReadImage(str(temporary)).GetSize())
    if found != expected:
        raise OSError(f"the written file holds size {found}, expected {expected}")


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
    mask = read_image_file(Path(path))
    source = str(path)
    found, expected = mask.geometry, geometry
    problems = []
    if shape_zyx is not None and tuple(mask.shape) != tuple(shape_zyx):
        problems.append(f"shape {mask.shape} vs {tuple(shape_zyx)}")
    if not np.allclose(found.spacing_mm, expected.spacing_mm, rtol=_SPACING_RTOL, atol=0):
        problems.append(f"spacing {_mm(found.spacing_mm)} vs {_mm(expected.spacing_mm)} mm")
    if not np.allclose(found.origin_mm, expected.origin_mm, rtol=0, atol=_POSITION_ATOL_MM):
        problems.append(f"origin {_mm(found.origin_mm)} vs {_mm(expected.origin_mm)} mm")
    if not np.allclose(found.direction, expected.direction, rtol=0, atol=_DIRECTION_ATOL):
        problems.append("direction cosines differ")
    if problems:
        raise InvalidVolumeError(
            f"{source} does not lie on the CT's voxel grid ({'; '.join(problems)}); resample the mask onto the CT first."
        )
    return _as_labels(mask.hu, source)


def _mm(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
