"""``read_ct``: one entry point that opens any supported CT file or folder as a CTVolume."""

from __future__ import annotations

import gzip
import struct
import zlib
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.io.dicom import looks_like_dicom, read_dicom
from napari_chsnet.io.hounsfield import (
    INTENSITY_CHOICES,
    INTENSITY_KEY,
    IntensityAssessment,
    assess_intensity,
    intensity_warning,
    to_hounsfield,
)
from napari_chsnet.io.memory import check_fits_in_memory
from napari_chsnet.io.orientation import geometry_of, to_display
from napari_chsnet.io.volume import CTVolume

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".ima")
SUPPORTED = "a DICOM series folder, a .dcm file, .nii/.nii.gz, .mha/.mhd or .nrrd"
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def suffix_of(path: Path) -> str:
    """The lower-case suffix, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_supported_path(path: Path) -> bool:
    """Cheap check (no pixels read) of whether ``read_ct`` may open ``path``."""
    if path.is_dir():
        return True
    return suffix_of(path) in IMAGE_SUFFIXES + DICOM_SUFFIXES or (path.is_file() and looks_like_dicom(path))


def read_ct(
    path: str | PathLike[str] | list[str | PathLike[str]],
    *,
    fill_missing_slices: bool = False,
    intensity: str = "auto",
) -> CTVolume:
    """Read a CT volume in HU, reoriented to the LPS display orientation.

    Args:
        path: a DICOM series folder, a single DICOM file, a list of DICOM files of one series,
            or a .nii/.nii.gz/.mha/.mhd/.nrrd/.nhdr file.
        fill_missing_slices: DICOM only. By default a series with a gap in its slice positions
            is refused; with True the missing slices are linearly interpolated and listed in
            ``metadata["interpolated_slices"]`` and ``metadata["warnings"]``.
        intensity: what the stored values are (after any DICOM rescale): ``"auto"`` tells HU,
            8-bit display values and HU + 1024 apart from their distribution
            (``io.hounsfield.assess_intensity``); ``"hu"``, ``"display8"`` or ``"offset1024"`` say so.
            Values not in HU are converted, recorded in ``metadata["intensity"]`` and warned about.

    Returns:
        The CTVolume; ``geometry.source_orientation`` records the file's own orientation.

    Raises:
        InvalidVolumeError: the path is missing, not a CT volume, damaged or too large for memory.
    """
    if intensity not in INTENSITY_CHOICES:
        raise ConfigError(f"intensity must be one of {', '.join(INTENSITY_CHOICES)}; got {intensity!r}.")
    return in_hounsfield_units(_read_stored_values(path, fill_missing_slices), intensity)


def in_hounsfield_units(volume: CTVolume, intensity: str = "auto") -> CTVolume:
    """Convert ``volume``'s values to HU in place where they are stored otherwise (see ``read_ct``);
    its metadata gets ``"intensity"`` and, for a conversion or doubt, a warning. Returns ``volume``."""
    assessment = (
        assess_intensity(volume.hu)
        if intensity == "auto"
        else IntensityAssessment(intensity, "given by the caller")
    )
    volume.metadata[INTENSITY_KEY] = assessment.kind
    message = intensity_warning(assessment, intensity)
    if message:
        volume.metadata.setdefault("warnings", []).append(message)
    volume.hu = to_hounsfield(volume.hu, assessment.kind)
    return volume


def _read_stored_values(
    path: str | PathLike[str] | list[str | PathLike[str]], fill_missing_slices: bool
) -> CTVolume:
    if isinstance(path, list):
        return read_dicom([Path(p) for p in path], fill_missing_slices=fill_missing_slices)
    path = Path(path)
    if not path.exists():
        raise InvalidVolumeError(f"{path} does not exist; check the path.")
    if path.is_dir():
        return read_dicom(path, fill_missing_slices=fill_missing_slices)
    suffix = suffix_of(path)
    if suffix in IMAGE_SUFFIXES:
        return read_image_file(path)
    if suffix in DICOM_SUFFIXES or looks_like_dicom(path):
        return read_dicom(path, fill_missing_slices=fill_missing_slices)
    if suffix in _PICTURE_SUFFIXES:
        raise InvalidVolumeError(
            f"{path} is a 2-D picture ({suffix}) without Hounsfield units or geometry, not a CT; open the DICOM series or a NIfTI volume."
        )
    raise InvalidVolumeError(f"{path} is not a supported CT file; open {SUPPORTED}.")


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read as an image ({_itk_reason(exc)}); the file is damaged or not a {suffix_of(path)} volume."
        ) from exc
    return reader


def _itk_reason(exc: RuntimeError) -> str:
    """The last meaningful line of an ITK exception, without its C++ source location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def read_image_file(path: Path) -> CTVolume:
    """Read a NIfTI/MetaImage/NRRD CT volume with SimpleITK, checking its size before its pixels."""
    reader = _header(path)
    size = reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        raise InvalidVolumeError(
            f"{path} holds {reader.GetNumberOfComponents()} values per voxel (colour or vector image), not a CT; open a greyscale CT volume."
        )
    if len(size) not in (2, 3) or (len(size) == 3 and min(size) == 0):
        raise InvalidVolumeError(
            f"{path} has {len(size)} dimensions of size {size}, not a 3-D CT; export one CT volume per file."
        )
    n_voxels = int(np.prod(size, dtype=np.int64))
    check_fits_in_memory(str(path), n_voxels, max(4, _bytes_per_voxel(reader)))
    if suffix_of(path) == ".nii.gz":
        _check_gzip_complete(path, n_voxels * _bytes_per_voxel(reader))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read ({_itk_reason(exc)}); the file is truncated or damaged, export it again."
        ) from exc
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    display, source_orientation = to_display(image)
    metadata: dict[str, Any] = {"warnings": [], "format": suffix_of(path)}
    return CTVolume(
        hu_array(sitk.GetArrayFromImage(display)),
        geometry_of(display, source_orientation),
        str(path),
        metadata,
    )


def hu_array(values: np.ndarray) -> np.ndarray:
    """HU as int16 when every value is an integer in int16 range, else float32."""
    if values.dtype == np.int16:
        return values
    int16 = np.iinfo(np.int16)
    if values.size and (values.min() < int16.min or values.max() > int16.max):
        return values.astype(np.float32, copy=False)
    if values.dtype.kind in "iub":
        return values.astype(np.int16)
    as_int16 = values.astype(np.int16)
    if np.array_equal(as_int16, values):
        return as_int16
    return values.astype(np.float32, copy=False)


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    return int(np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).dtype).itemsize)


def _check_gzip_complete(path: Path, data_bytes: int) -> None:
    """Refuse a truncated .nii.gz, which ITK would read silently with its tail missing.

    The gzip trailer holds the uncompressed size; when it matches the NIfTI header's promise the
    file is whole, otherwise the stream is decompressed once (without keeping it) to make sure.
    """
    with gzip.open(path, "rb") as stream:
        header = stream.read(540)
    header_size = struct.unpack("<i", header[:4])[0]
    vox_offset = (
        struct.unpack("<f", header[108:112])[0]
        if header_size == 348
        else struct.unpack("<q", header[168:176])[0]
    )
    with open(path, "rb") as raw:
        raw.seek(-4, 2)
        stored_size = struct.unpack("<I", raw.read(4))[0]
    if stored_size == (int(vox_offset) + data_bytes) % 2**32:
        return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read ({exc}); the file is truncated or damaged, export it again."
        ) from exc
