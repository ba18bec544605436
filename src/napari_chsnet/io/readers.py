"""``read_ct``: one entry point that opens any supported CT file or folder as a CTVolume."""

from __future__ import annotations

import gzip
import itertools
import struct
import zlib
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.io.dicom import looks_like_dicom, read_dicom
from napari_chsnet.io.hounsfield import (
    DISPLAY8,
    HU,
    INTENSITY_CHOICES,
    INTENSITY_KEY,
    OFFSET1024,
    UNKNOWN,
    IntensityAssessment,
    assess_intensity,
    given_intensity_conflict,
    intensity_warning,
    to_hounsfield,
)
from napari_chsnet.io.memory import check_fits_in_memory
from napari_chsnet.io.orientation import geometry_of, nearest_orthonormal, oblique_warning, to_display
from napari_chsnet.io.volume import CTVolume, NiftiTransform

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".ima")
SUPPORTED = "a DICOM series folder, a .dcm file, .nii/.nii.gz, .mha/.mhd or .nrrd"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
# The ITK ImageIO of each suffix, named rather than left to ITK, which picks by the case-sensitive
# extension: "CT.MHA" was "Unable to determine ImageIO reader", and written as .mhd + .zraw.
IMAGE_IOS = {".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO",
             ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO"}  # fmt: skip
_GZIP_MAGIC = b"\x1f\x8b"
# NIfTI-1 and NIfTI-2 header fields: byte offset and struct format (without byte order).
_NIFTI_LAYOUTS = {
    348: {"datatype": (70, "h"), "dim": (40, "8h"), "pixdim": (76, "8f"), "vox_offset": (108, "f"),
          "codes": (252, "2h"), "quatern": (256, "6f"), "srow": (280, "12f"), "xyzt_units": (123, "B")},
    540: {"datatype": (12, "h"), "dim": (16, "8q"), "pixdim": (104, "8d"), "vox_offset": (168, "q"),
          "codes": (344, "2i"), "quatern": (352, "6d"), "srow": (400, "12d"), "xyzt_units": (500, "i")},
}  # fmt: skip
# NIfTI datatype codes of float voxels (FLOAT32, FLOAT64): ITK reads their NaN and Inf as 0, so the
# stored voxels are checked before ITK sees them.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
_CHUNK_BYTES = 1 << 24  # stored voxels checked 16 MiB at a time
# qform and sform placing a corner voxel further apart than this disagree; the float32 rounding
# of a quaternion written from the same matrix stays far below it.
_QSFORM_TOLERANCE_MM = 0.1
# NIfTI stores patient coordinates in RAS, ITK in LPS.
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def suffix_of(path: Path) -> str:
    """The lower-case suffix, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def mixed_case_nifti_suffix(path: Path) -> str | None:
    """A NIfTI suffix as written when it mixes upper and lower case (``.Nii``, ``.nii.GZ``), which the
    NIfTI library refuses ("mixed case extension"); None otherwise."""
    suffix = suffix_of(path)
    if suffix not in (".nii", ".nii.gz"):
        return None
    written = path.name[-len(suffix) :]
    return None if written in (written.lower(), written.upper()) else written


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
            Values not in HU are converted, recorded in ``metadata["intensity"]`` and warned about;
            values that fit none of the kinds are kept as stored, recorded as ``"unknown"`` (which the
            segmentation refuses, ``refuse_unknown_intensity``) and warned about.

    Returns:
        The CTVolume; ``geometry.source_orientation`` records the file's own orientation.

    Raises:
        InvalidVolumeError: the path is missing, not a CT volume, damaged or too large for memory.
    """
    if intensity not in INTENSITY_CHOICES:
        raise ConfigError(f"intensity must be one of {', '.join(INTENSITY_CHOICES)}; got {intensity!r}.")
    return in_hounsfield_units(read_stored_values(path, fill_missing_slices=fill_missing_slices), intensity)


def in_hounsfield_units(volume: CTVolume, intensity: str = "auto") -> CTVolume:
    """Convert ``volume``'s values to HU in place where they are stored otherwise (see ``read_ct``);
    its metadata gets ``"intensity"`` and, for a conversion or doubt, a warning. Returns ``volume``.

    Raises:
        InvalidVolumeError: a DICOM series of another modality (MR, PET…) whose values do not look
            like HU, with ``intensity="auto"``: graded as CT it would get a severity report of noise.
    """
    if intensity == "auto":
        assessment = assess_intensity(volume.hu)
    else:
        _check_given_intensity(volume, intensity)
        assessment = IntensityAssessment(intensity, "given by the caller")
    _check_modality(volume, assessment)
    volume.metadata[INTENSITY_KEY] = assessment.kind
    message = intensity_warning(assessment, intensity)
    if message:
        volume.metadata.setdefault("warnings", []).append(message)
    volume.hu = to_hounsfield(volume.hu, assessment.kind)
    return volume


def _check_given_intensity(volume: CTVolume, intensity: str) -> None:
    """Refuse an intensity the values rule out (HU read as HU + 1024 gave P001 three times its lung
    volume, exit 0); HU given for values that look stored otherwise is the caller's call, warned."""
    conflict = given_intensity_conflict(volume.hu, intensity)
    if conflict:
        raise InvalidVolumeError(
            f"{volume.source}: the intensity given, {intensity}, cannot be right: {conflict}; "
            "leave it to auto or give the kind that fits (docs/io.md)."
        )
    if intensity == HU:
        looks = assess_intensity(volume.hu)
        if looks.kind in (DISPLAY8, OFFSET1024):
            volume.metadata.setdefault("warnings", []).append(
                f"intensity given as hu although the values look like {looks.kind} ({looks.reason}); read as HU as asked"
            )
        elif looks.kind == UNKNOWN:  # segmented as asked: the report must still say the values are odd
            volume.metadata.setdefault("warnings", []).append(
                f"intensity given as hu although the values do not look like Hounsfield units ({looks.reason}); "
                "read as HU as asked, so lungs and infection found in them may be wrong"
            )


def _check_modality(volume: CTVolume, assessment: IntensityAssessment) -> None:
    """Refuse a non-CT series whose values are not recognised as HU (an MR series read as HU got a full
    CT-3 report); a non-CT series with HU-like values opens with the DICOM reader's warning."""
    modality = str(volume.metadata.get("Modality") or "").upper()
    if assessment.kind != UNKNOWN or modality in ("", "CT"):
        return
    raise InvalidVolumeError(
        f"{volume.source}: the series' modality is {modality}, not CT, and its values are not Hounsfield units "
        f"({assessment.reason}); open a CT series, or if the values are HU (or 8-bit display / HU + 1024 "
        "values) say so with chsnet segment --intensity hu|display8|offset1024."
    )


def refuse_unknown_intensity(volume: CTVolume) -> None:
    """Refuse to segment values the reader found not to be HU (``metadata["intensity"]`` unknown, read
    with ``intensity="auto"``): an MR-like volume read as HU got a CT-4 report. Values said to be HU,
    and volumes made without the key (tests, the API), are segmented as HU."""
    if volume.metadata.get(INTENSITY_KEY) != UNKNOWN:
        return
    reason = assess_intensity(volume.hu).reason  # unknown values are kept as stored: the reader's reason
    raise InvalidVolumeError(
        f"{volume.source or 'the CT'}: the values do not look like Hounsfield units ({reason}), so a "
        "segmentation would grade noise; open the original CT scan, or if the values really are HU, "
        'segment the file with `chsnet segment --intensity hu` (`read_ct(path, intensity="hu")` in Python).'
    )


def read_stored_values(
    path: str | PathLike[str] | list[str | PathLike[str]], *, fill_missing_slices: bool = False
) -> CTVolume:
    """Read ``path`` as ``read_ct`` does but keep the values as stored (after any DICOM rescale), without
    the intensity check and conversion (``in_hounsfield_units``): for files that may be masks."""
    if isinstance(path, list) and len(path) == 1:
        path = path[0]  # napari's "Open as stack" passes a single file or folder as a list
    if isinstance(path, list):
        paths = [Path(p) for p in path]
        _check_dicom_files(paths)
        return read_dicom(paths, fill_missing_slices=fill_missing_slices)
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
    if suffix in PICTURE_SUFFIXES:
        raise InvalidVolumeError(
            f"{path} is a 2-D picture ({suffix}) without Hounsfield units or geometry, not a CT; open the DICOM series or a NIfTI volume."
        )
    raise InvalidVolumeError(f"{path} is not a supported CT file; open {SUPPORTED}.")


def _check_dicom_files(paths: list[Path]) -> None:
    """Several paths are read as the DICOM files of one series; anything else is refused by name."""
    others = [p for p in paths if p.is_dir() or not (suffix_of(p) in DICOM_SUFFIXES or looks_like_dicom(p))]
    if others:
        shown = ", ".join(p.name for p in others[:3]) + (" …" if len(others) > 3 else "")
        raise InvalidVolumeError(
            f"{len(paths)} paths were given together, which is only possible for the DICOM files of one series, "
            f"but {len(others)} of them are not DICOM files ({shown}); open one CT file or folder at a time."
        )


def image_io_of(path: Path) -> str:
    """The ITK ImageIO that reads and writes ``path``'s format ("" for a suffix without one)."""
    return IMAGE_IOS.get(suffix_of(path), "")


def _check_permission(path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:  # ITK says "does not exist" for a file it may not open
        raise InvalidVolumeError(
            f"{path} cannot be read (permission denied); check its access rights."
        ) from exc
    # read_ct checks existence first; a mask named by the user (read_mask) may not exist
    except FileNotFoundError as exc:
        raise InvalidVolumeError(f"{path} not found; check the path.") from exc


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io_of(path):
        reader.SetImageIO(image_io_of(path))
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


def read_image_file(path: Path, mask: bool = False) -> CTVolume:
    """Read a NIfTI/MetaImage/NRRD CT volume with SimpleITK, checking its size before its pixels;
    ``mask``: a label mask is read, and the refusals say what a mask should be."""
    _check_permission(path)
    is_nifti = suffix_of(path) in (".nii", ".nii.gz")
    nifti = _readable_nifti_header(path) if is_nifti else None
    reader = _header(path)
    size = reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        wanted = "a label mask; save one label per voxel" if mask else "a CT; open a greyscale CT volume"
        raise InvalidVolumeError(
            f"{path} holds {reader.GetNumberOfComponents()} values per voxel (colour or vector image), not {wanted}."
        )
    if len(size) not in (2, 3) or (len(size) == 3 and min(size) == 0):
        wanted = "3-D mask; save the mask as one volume" if mask else "3-D CT; export one CT volume per file"
        raise InvalidVolumeError(f"{path} has {len(size)} dimensions of size {size}, not a {wanted}.")
    n_voxels = int(np.prod(size, dtype=np.int64))
    check_fits_in_memory(str(path), n_voxels, max(4, _bytes_per_voxel(reader)))
    if is_nifti:
        _check_nifti_voxels(path, nifti, n_voxels, n_voxels * _bytes_per_voxel(reader), mask)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read ({_itk_reason(exc)}); the file is truncated or damaged, export it again."
        ) from exc
    warnings = [qform_sform_warning(nifti, image) if nifti is not None else None]
    if image.GetDimension() == 2:
        affine = _affine_itk_used(nifti, image) if nifti is not None else None
        image = sitk.JoinSeries(image)  # one slice at z = 0 mm, 1 mm thick, along z
        if affine is not None:
            _place_nifti_slice(image, affine)
    display, source_orientation = to_display(image)
    warnings.append(oblique_warning(display))
    values = sitk.GetArrayFromImage(display)
    if not is_nifti:  # a NIfTI's stored voxels were checked above (ITK has made its NaN 0 by now)
        _refuse_non_finite(path, count_non_finite(values), values.size, mask)
    metadata: dict[str, Any] = {"warnings": [w for w in warnings if w], "format": suffix_of(path)}
    geometry = geometry_of(display, source_orientation)
    if nifti is not None:  # NIfTI masks written on this grid copy the header's transforms and units
        geometry = replace(geometry, nifti=nifti.transform)
    return CTVolume(hu_array(values), geometry, str(path), metadata)


def _readable_nifti_header(path: Path) -> NiftiHeader | None:
    """The NIfTI header, after refusing by name what ITK can only call "not recognized": a mixed-case
    suffix, gzip data named .nii and NIfTI-2."""
    mixed = mixed_case_nifti_suffix(path)
    if mixed:
        raise InvalidVolumeError(
            f"{path} cannot be read: the NIfTI reader takes {suffix_of(path)} or {suffix_of(path).upper()}, not {mixed}; rename it."
        )
    if suffix_of(path) == ".nii" and _is_gzip(path):
        raise InvalidVolumeError(f"{path} cannot be read: the file is gzip-compressed: name it .nii.gz.")
    header = read_nifti_header(path)
    if header is not None and header.version == 2:
        raise InvalidVolumeError(
            f"{path} cannot be read: NIfTI-2 is not supported by this reader; convert it to NIfTI-1 "
            "(e.g. with nibabel's Nifti1Image.from_image)."
        )
    return header


def _affine_itk_used(header: NiftiHeader, image: sitk.Image) -> np.ndarray:
    """The RAS affine ITK placed ``image`` by: the transform whose code is set (the one nearer ITK's
    in-plane positions when both are), or, with neither set, NIfTI's fallback of pixdim alone."""
    candidates = [
        a for a, code in ((header.qform, header.qform_code), (header.sform, header.sform_code)) if code > 0
    ]
    if not candidates:
        pixdim = header.transform.pixdim if header.transform is not None else (1.0,) * 8
        return np.diag([*(v if v > 0 else 1.0 for v in pixdim[1:4]), 1.0])
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in header.shape_ijk])), dtype=float)
    itk = _itk_corner_points(image, corners)
    n = image.GetDimension()
    return min(candidates, key=lambda a: float(np.abs(_corner_points(a, corners)[:, :n] - itk).max()))


def _place_nifti_slice(image: sitk.Image, affine: np.ndarray) -> None:
    """Give a one-slice image joined from a 2-D NIfTI the slice's position, thickness and normal from
    its header's ``affine`` (RAS), as ITK places the slice of a 3-D file; the in-plane grid stays ITK's
    (and so its unit conversion). Left as joined when the affine does not match ITK's plane."""
    lps = affine[:3, :3] * _RAS_TO_LPS[:, None]
    norms = np.linalg.norm(lps, axis=0)
    if norms[0] <= 0 or norms[1] <= 0:
        return
    scale = image.GetSpacing()[0] / norms[0]  # ITK's unit conversion (m, µm → mm)
    columns = lps / np.where(norms > 0, norms, 1.0)
    joined = np.reshape(image.GetDirection(), (3, 3))
    if not np.allclose(columns[:2, :2], joined[:2, :2], atol=1e-3):
        return
    normal = columns[:, 2] if norms[2] > 0 else np.cross(columns[:, 0], columns[:, 1])
    nearest = nearest_orthonormal(np.column_stack([columns[:, 0], columns[:, 1], normal]))
    image.SetDirection(tuple(float(v) for v in nearest.ravel()))  # orthonormal, as ITK requires
    image.SetSpacing((*image.GetSpacing()[:2], float(norms[2] * scale) if norms[2] > 0 else 1.0))
    origin = affine[:3, 3] * _RAS_TO_LPS * scale
    image.SetOrigin((*image.GetOrigin()[:2], float(origin[2])))


def count_non_finite(values: np.ndarray) -> int:
    """NaN and Inf voxels, counted a slice at a time (no volume-sized mask)."""
    if values.dtype.kind != "f":
        return 0
    return sum(int(plane.size - np.count_nonzero(np.isfinite(plane))) for plane in values)


def _refuse_non_finite(path: Path, count: int, n_voxels: int, mask: bool = False) -> None:
    """NaN or Inf is no density (nor label): refused as the segmentation refuses it, before any cast to int16."""
    if count:
        fix = (
            "save the mask again with a label in every voxel (0 outside)"
            if mask
            else "fix or re-export the scan with a number in every voxel (e.g. -1024 HU outside the field of view)"
        )
        raise InvalidVolumeError(
            f"{path} holds NaN or infinite values ({count} of {n_voxels} voxels); {fix}."
        )


def hu_array(values: np.ndarray) -> np.ndarray:
    """HU as int16 when every value is an integer in int16 range, else float32 (``values`` are finite:
    NaN cast to int16 warns and gives garbage)."""
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


def _is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes: a .nii.gz may in fact be uncompressed."""
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


@dataclass(frozen=True)
class NiftiHeader:
    """What the I/O checks need from a NIfTI-1/2 header: the data offset and both transforms (RAS),
    and the stored transform fields (``transform``) that masks written on its grid copy."""

    shape_ijk: tuple[int, int, int]
    vox_offset: int
    datatype: int
    byte_order: str  # "<" or ">", as struct and numpy write it
    qform_code: int
    sform_code: int
    qform: np.ndarray
    sform: np.ndarray
    version: int = 1  # NIfTI-1 or NIfTI-2
    ndim: int = 3  # dim[0]
    transform: NiftiTransform | None = None


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """The NIfTI header of ``path`` (gzip or not), or None when it is not a NIfTI-1/2 header."""
    try:
        with (gzip.open if _is_gzip(path) else open)(path, "rb") as stream:
            raw = stream.read(540)
    except (EOFError, OSError, zlib.error) as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read ({exc}); the file is truncated or damaged, export it again."
        ) from exc
    for order in "<>":  # sizeof_hdr tells the byte order as well as the version
        size = struct.unpack(order + "i", raw[:4])[0] if len(raw) >= 4 else 0
        if size in _NIFTI_LAYOUTS and len(raw) >= size:
            return _parse_nifti(raw, order, _NIFTI_LAYOUTS[size])
    return None


def _parse_nifti(raw: bytes, order: str, layout: dict[str, tuple[int, str]]) -> NiftiHeader:
    field = {name: struct.unpack_from(order + fmt, raw, offset) for name, (offset, fmt) in layout.items()}
    dim, pixdim = field["dim"], field["pixdim"]
    sform = np.eye(4)
    sform[:3] = np.reshape(field["srow"], (3, 4))
    shape_ijk = tuple(max(int(n), 1) for n in dim[1:4])
    codes = tuple(int(code) for code in field["codes"])
    return NiftiHeader(
        shape_ijk=shape_ijk,  # type: ignore[arg-type]
        vox_offset=int(field["vox_offset"][0]),
        datatype=int(field["datatype"][0]),
        byte_order=order,
        qform_code=codes[0],
        sform_code=codes[1],
        qform=_quaternion_affine(field["quatern"], pixdim),
        sform=sform,
        version=1 if layout is _NIFTI_LAYOUTS[348] else 2,
        ndim=int(dim[0]),
        transform=NiftiTransform(
            shape_ijk=shape_ijk,  # type: ignore[arg-type]
            qform_code=codes[0],
            sform_code=codes[1],
            quatern=tuple(float(v) for v in field["quatern"]),
            srow=tuple(float(v) for v in field["srow"]),
            pixdim=tuple(float(v) for v in pixdim),
            xyzt_units=int(field["xyzt_units"][0]),
        ),
    )


def _quaternion_affine(quatern: tuple[float, ...], pixdim: tuple[float, ...]) -> np.ndarray:
    """The qform as a 4x4 matrix, as nifti1_io's ``nifti_quatern_to_mat44`` computes it."""
    b, c, d = quatern[:3]
    a_squared = 1.0 - (b * b + c * c + d * d)
    if a_squared < 1e-7:  # a 180-degree rotation: renormalise (b, c, d), a = 0
        norm = np.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b / norm, c / norm, d / norm
    else:
        a = np.sqrt(a_squared)
    rotation = np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ])  # fmt: skip
    spacing = np.array([v if v > 0 else 1.0 for v in pixdim[1:4]])
    spacing[2] *= -1.0 if pixdim[0] < 0 else 1.0  # qfac
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing
    affine[:3, 3] = quatern[3:6]
    return affine


def qform_sform_warning(header: NiftiHeader, image: sitk.Image) -> str | None:
    """A warning when the header's qform and sform place the voxels differently.

    ITK silently picks one of the two, so which one it used is told by comparing both with the
    image ITK returned; a file whose producer meant the other would have its positions shifted.
    """
    if header.qform_code <= 0 or header.sform_code <= 0:
        return None  # only one transform is declared valid: nothing to choose between
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in header.shape_ijk])), dtype=float)
    qform, sform = (_corner_points(affine, corners) for affine in (header.qform, header.sform))
    apart_mm = float(np.linalg.norm(qform - sform, axis=1).max())
    if apart_mm <= _QSFORM_TOLERANCE_MM:
        return None
    itk = _itk_corner_points(image, corners)
    n = image.GetDimension()
    q_off, s_off = (float(np.abs(points[:, :n] - itk).max()) for points in (qform, sform))
    used, ignored = ("qform", "sform") if q_off <= s_off else ("sform", "qform")
    return (
        f"the NIfTI header's qform (code {header.qform_code}) and sform (code {header.sform_code}) should "
        f"place the voxels alike but lie up to {apart_mm:.1f} mm apart; the {used} was used and the {ignored} "
        f"ignored (NIfTI masks are written with this header's qform and sform, others with the {used}); if the "
        f"{ignored} is the intended position, fix the header"
    )


def _corner_points(affine: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """LPS positions of voxel indices (i, j, k) under a RAS NIfTI affine."""
    return (corners @ affine[:3, :3].T + affine[:3, 3]) * _RAS_TO_LPS


def _itk_corner_points(image: sitk.Image, corners: np.ndarray) -> np.ndarray:
    """LPS positions of the same voxel indices in ITK's image (2-D images: in-plane only)."""
    n = image.GetDimension()
    direction = np.reshape(image.GetDirection(), (n, n))
    return np.asarray(image.GetOrigin()) + (corners[:, :n] * image.GetSpacing()) @ direction.T


def _check_nifti_voxels(
    path: Path, header: NiftiHeader | None, n_voxels: int, data_bytes: int, mask: bool = False
) -> None:
    """Refuse a truncated .nii.gz (ITK reads it silently with its tail missing) and float voxels that
    are NaN or Inf (ITK reads them as 0 HU: a NaN field-of-view ring would pass for water)."""
    float_type = _NIFTI_FLOAT_TYPES.get(header.datatype) if header is not None else None
    if float_type is not None:
        dtype = np.dtype(float_type).newbyteorder(header.byte_order)  # type: ignore[union-attr]
        count = _count_stored_non_finite(path, header.vox_offset, n_voxels, dtype)  # type: ignore[union-attr]
        _refuse_non_finite(path, count, n_voxels, mask)
    elif _is_gzip(path):
        _check_gzip_complete(path, header, data_bytes)


def _count_stored_non_finite(path: Path, vox_offset: int, n_voxels: int, dtype: np.dtype) -> int:
    """NaN and Inf among the stored voxels, read in chunks; reading a gzip stream to its end also
    verifies it is whole (what ``_check_gzip_complete`` does for other files)."""
    remaining, count = n_voxels * dtype.itemsize, 0
    try:
        with (gzip.open if _is_gzip(path) else open)(path, "rb") as stream:
            stream.seek(vox_offset)
            while block := stream.read(_CHUNK_BYTES):  # to the end: a gzip stream checks its trailer there
                data = block[: min(len(block), remaining) // dtype.itemsize * dtype.itemsize]
                values = np.frombuffer(data, dtype=dtype)
                count += int(values.size - np.count_nonzero(np.isfinite(values)))
                remaining -= len(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read ({exc}); the file is truncated or damaged, export it again."
        ) from exc
    if remaining > 0:
        raise InvalidVolumeError(
            f"{path} cannot be read (its voxel data ends {remaining} bytes early); the file is truncated or "
            "damaged, export it again."
        )
    return count


def _check_gzip_complete(path: Path, header: NiftiHeader | None, data_bytes: int) -> None:
    """Refuse a truncated .nii.gz, which ITK would read silently with its tail missing.

    The gzip trailer holds the uncompressed size; when it matches the NIfTI header's promise the
    file is whole, otherwise the stream is decompressed once (without keeping it) to make sure.
    """
    with open(path, "rb") as raw:
        raw.seek(-4, 2)
        stored_size = struct.unpack("<I", raw.read(4))[0]
    if header is not None and stored_size == (header.vox_offset + data_bytes) % 2**32:
        return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read ({exc}); the file is truncated or damaged, export it again."
        ) from exc
