"""Reading DICOM: choosing the CT series in a folder, ordering its slices, decoding its pixels.

pydicom reads the headers (without pixels) to group files by SeriesInstanceUID and choose the
series; it then decodes the chosen slices, including the compressed transfer syntaxes real
scanners write (JPEG Lossless Process 14, JPEG 2000, RLE) through the pylibjpeg plugins.
Slices are ordered by the projection of ImagePositionPatient on the slice normal, never by
file name. A gap in the positions (a missing slice) is refused unless the caller asks to fill
it by interpolation, so that no distance or volume is silently distorted (see docs/io.md).
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import BytesLengthException, InvalidDicomError

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.memory import check_fits_in_memory
from napari_chsnet.io.orientation import geometry_of, oblique_warning, to_display
from napari_chsnet.io.volume import CTVolume

# Study/series fields copied into CTVolume.metadata for reports.
REPORT_TAGS = (
    "PatientName", "PatientID", "PatientSex", "PatientAge", "PatientBirthDate",
    "StudyDate", "StudyTime", "StudyDescription", "StudyInstanceUID", "AccessionNumber",
    "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "Modality", "BodyPartExamined",
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "ConvolutionKernel",
    "SliceThickness", "KVP",
)  # fmt: skip

# A gap larger than this many median spacings counts as missing slices.
_GAP_FACTOR = 1.5
# Spacings differing from the median by more than this fraction are reported as uneven.
_UNEVEN_TOLERANCE = 0.01
_AXIAL = np.array([0.0, 0.0, 1.0])
# CT Image Storage and Enhanced CT Image Storage: a CT even when the Modality tag is missing.
_CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")
# What pydicom raises on a damaged or cut-off file: a truncated element surfaces as a bare
# struct.error or BytesLengthException, not as InvalidDicomError.
_UNREADABLE = (
    InvalidDicomError, BytesLengthException, struct.error, EOFError, OSError, ValueError, KeyError, IndexError
)  # fmt: skip
# HU given to voxels marked by PixelPaddingValue (outside the reconstructed field of view): air.
_PADDING_HU = -1024.0
# Damaged files named in a warning or error before the rest are counted.
_NAMES_SHOWN = 5


@dataclass(frozen=True)
class SliceHeader:
    """What the series choice needs from one file's header."""

    path: Path
    series_uid: str
    modality: str
    image_type: tuple[str, ...]
    row_cosines: tuple[float, float, float]
    column_cosines: tuple[float, float, float]
    position_mm: tuple[float, float, float] | None
    rows: int
    columns: int
    instance_number: int
    n_frames: int

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosines, self.column_cosines)

    @property
    def orientation_key(self) -> tuple[float, ...]:
        return tuple(np.round(np.r_[self.row_cosines, self.column_cosines], 3))

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type


def looks_like_dicom(path: Path) -> bool:
    """True if the file carries the DICOM preamble marker (or a .dcm suffix)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM file without its pixels, or None if the file is not DICOM or is damaged."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except _UNREADABLE:
        return None


def slice_header(path: Path, ds: pydicom.Dataset) -> SliceHeader | None:
    """A SliceHeader for an image dataset, or None for non-image DICOM (reports, presentation states)."""
    if "Rows" not in ds or "Columns" not in ds:
        return None
    orientation = [float(v) for v in ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    position = ds.get("ImagePositionPatient")
    return SliceHeader(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "unknown series")),
        modality=str(
            ds.get("Modality") or ("CT" if str(ds.get("SOPClassUID", "")) in _CT_SOP_CLASSES else "")
        ).upper(),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        row_cosines=tuple(orientation[:3]),  # type: ignore[arg-type]
        column_cosines=tuple(orientation[3:6]),  # type: ignore[arg-type]
        position_mm=tuple(float(v) for v in position) if position is not None else None,  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        instance_number=int(ds.get("InstanceNumber") or 0),
        n_frames=int(ds.get("NumberOfFrames") or 1),
    )


@dataclass(frozen=True)
class HeaderScan:
    """Image headers of some files, the count of DICOM files among them and the damaged ones."""

    headers: list[SliceHeader]
    n_dicom: int
    damaged: list[Path]


def read_headers(paths: list[Path]) -> HeaderScan:
    """Headers of the image files in ``paths``; files that look like DICOM but cannot be parsed
    (cut off, damaged) are set aside so that one bad file does not stop the rest."""
    headers: list[SliceHeader] = []
    damaged: list[Path] = []
    n_dicom = 0
    for path in paths:
        ds = read_header(path)
        if ds is None:
            if looks_like_dicom(path):
                damaged.append(path)
            continue
        n_dicom += 1
        try:
            header = slice_header(path, ds)
        except (*_UNREADABLE, TypeError):  # a value cut off midway: Rows read as '', one byte of a US
            damaged.append(path)
            continue
        if header is not None:
            headers.append(header)
    return HeaderScan(headers, n_dicom, damaged)


def scan_folder(folder: Path) -> HeaderScan:
    """Headers of the image files under ``folder`` (recursively); see ``read_headers``."""
    paths = [
        Path(root) / name
        for root, _dirs, files in os.walk(folder)
        for name in sorted(files)
        if name.upper() != "DICOMDIR"
    ]
    return read_headers(paths)


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_NAMES_SHOWN])
    return shown + (f" and {len(paths) - _NAMES_SHOWN} more" if len(paths) > _NAMES_SHOWN else "")


def _damaged_warnings(damaged: list[Path]) -> list[str]:
    if not damaged:
        return []
    return [
        f"skipped {len(damaged)} damaged or truncated DICOM file(s) that cannot be read ({_names(damaged)}); "
        "if they belong to the opened series, export it again"
    ]


def n_slices(series: list[SliceHeader]) -> int:
    """Slices of a series: frames, so that one enhanced (multi-frame) file counts as its slices."""
    return sum(h.n_frames for h in series)


def _rank(series: list[SliceHeader]) -> tuple[bool, bool, bool, int]:
    first = series[0]
    is_original_primary = first.image_type[:2] == ("ORIGINAL", "PRIMARY")
    is_axial = abs(float(first.normal @ _AXIAL)) >= max(abs(first.normal))
    return (first.modality == "CT", is_original_primary, is_axial, n_slices(series))


def choose_series(headers: list[SliceHeader], source: str) -> tuple[list[SliceHeader], list[str]]:
    """The largest axial ORIGINAL/PRIMARY CT series, cleaned of localizers and odd orientations."""
    warnings: list[str] = []
    by_series: dict[str, list[SliceHeader]] = {}
    for header in headers:
        if not header.is_localizer:
            by_series.setdefault(header.series_uid, []).append(header)
    if not by_series:
        raise InvalidVolumeError(
            f"{source} holds only localizer/scout images, no CT series; select the folder of the axial CT series."
        )
    for uid, series in by_series.items():
        majority, _count = Counter(h.orientation_key for h in series).most_common(1)[0]
        kept = [h for h in series if h.orientation_key == majority]
        if len(kept) < len(series):
            warnings.append(
                f"dropped {len(series) - len(kept)} slice(s) of series {uid} whose orientation differs from the rest (localizer-like)"
            )
        by_series[uid] = kept
    ranked = sorted(by_series.values(), key=_rank, reverse=True)
    chosen = ranked[0]
    if len(ranked) > 1:
        warnings.append(
            f"the folder holds {len(ranked)} image series; opened the {n_slices(chosen)}-slice series {chosen[0].series_uid}"
        )
    modality, primary, axial, _n = _rank(chosen)
    if not modality:
        warnings.append(
            f"modality is {chosen[0].modality or 'missing'}, not CT: values may not be Hounsfield units"
        )
    if not primary:
        image_type = "\\".join(chosen[0].image_type) or "missing"
        warnings.append(f"series is not ORIGINAL/PRIMARY (ImageType {image_type})")
    if not axial:
        warnings.append("series is not axial; it is shown reoriented to axial slices")
    return chosen, warnings


@dataclass(frozen=True)
class SliceLayout:
    """Ordered slices, their positions along the normal and the grid's slice spacing."""

    slices: list[SliceHeader]
    offsets_mm: np.ndarray
    spacing_mm: float
    missing_after: dict[int, int]
    warnings: list[str]


def order_slices(series: list[SliceHeader], source: str, default_spacing_mm: float) -> SliceLayout:
    """Sort slices by position on the normal; find duplicates, gaps and uneven spacing."""
    warnings: list[str] = []
    normal = series[0].normal
    if any(h.position_mm is None for h in series):
        warnings.append(
            "slices carry no ImagePositionPatient; ordered by InstanceNumber with the slice thickness as spacing"
        )
        ordered = sorted(series, key=lambda h: h.instance_number)
        return SliceLayout(
            ordered, np.arange(len(ordered)) * default_spacing_mm, default_spacing_mm, {}, warnings
        )
    ordered = sorted(series, key=lambda h: (float(np.dot(h.position_mm, normal)), h.instance_number))
    offsets = np.array([float(np.dot(h.position_mm, normal)) for h in ordered])
    keep = np.r_[True, np.diff(offsets) > 1e-3]
    if not keep.all():
        warnings.append(f"dropped {int((~keep).sum())} slice(s) repeating a position already present")
        ordered = [h for h, k in zip(ordered, keep, strict=True) if k]
        offsets = offsets[keep]
    if len(ordered) == 1:
        return SliceLayout(ordered, offsets, default_spacing_mm, {}, warnings)
    steps = np.diff(offsets)
    spacing = float(np.median(steps))
    is_gap = steps > _GAP_FACTOR * spacing
    missing_after = {int(i): int(round(steps[i] / spacing)) - 1 for i in np.flatnonzero(is_gap)}
    regular = steps[~is_gap]
    if regular.size and np.abs(regular - spacing).max() > _UNEVEN_TOLERANCE * spacing:
        warnings.append(
            f"uneven slice spacing from {regular.min():.3f} to {regular.max():.3f} mm; "
            f"shown on a regular {spacing:.3f} mm grid, so positions along z may be off by up to {np.abs(regular - spacing).max():.3f} mm"
        )
    in_plane = np.array([h.position_mm for h in ordered]) - np.outer(offsets - offsets[0], normal)
    if np.abs(in_plane - in_plane[0]).max() > 0.01 * spacing + 1e-3:
        warnings.append(
            "slice positions drift within the slice plane (gantry tilt); shown without shear correction"
        )
    return SliceLayout(ordered, offsets, spacing, missing_after, warnings)


@dataclass(frozen=True)
class DecodedSlice:
    """Stored pixels of one slice, its rescale and the voxels its padding value marks (or None)."""

    pixels: np.ndarray
    slope: float
    intercept: float
    padding: np.ndarray | None


def _decode(path: Path, source: str) -> DecodedSlice:
    """Stored pixels of one slice, with its rescale slope and intercept and its padded voxels."""
    try:
        ds = pydicom.dcmread(path)
    except _UNREADABLE as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read as DICOM ({exc}); the file is damaged, export the series again."
        ) from exc
    if "PixelData" not in ds:
        raise InvalidVolumeError(
            f"{path} is a DICOM file without pixel data; choose the image files of a CT series."
        )
    try:
        pixels = ds.pixel_array
    except (*_UNREADABLE, RuntimeError, NotImplementedError, AttributeError) as exc:
        raise InvalidVolumeError(
            f"{path}: pixel data ({ds.file_meta.get('TransferSyntaxUID', 'unknown transfer syntax')}) cannot be decoded "
            f"({exc}); the file is truncated or needs a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle)."
        ) from exc
    if pixels.ndim != 2:
        raise InvalidVolumeError(
            f"{path} holds a {pixels.shape} colour or multi-frame image, not a greyscale CT slice; choose the CT series."
        )
    return DecodedSlice(
        pixels,
        float(ds.get("RescaleSlope", 1) or 1),
        float(ds.get("RescaleIntercept", 0) or 0),
        _padding_mask(ds, pixels),
    )


def _padding_mask(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray | None:
    """Voxels whose stored value is PixelPaddingValue (or lies between it and PixelPaddingRangeLimit).

    Scanners pad outside the reconstructed circle with a value no measurement takes (GE: 63536
    unsigned); rescaled like a measurement it would read as metal (+62512 HU) or below air.
    """
    if ds.get("PixelPaddingValue") is None:
        return None
    bits = int(ds.get("BitsStored") or pixels.dtype.itemsize * 8)
    try:
        value = _as_stored(int(ds.PixelPaddingValue), pixels.dtype, bits)
        limit = _as_stored(int(ds.get("PixelPaddingRangeLimit", value)), pixels.dtype, bits)
    except (TypeError, ValueError):
        return None  # malformed tag (e.g. multi-valued): the pixels are used as stored
    low, high = min(value, limit), max(value, limit)
    mask = (pixels >= low) & (pixels <= high)
    return mask if mask.any() else None


def _as_stored(value: int, dtype: np.dtype, bits: int) -> int:
    """A padding value in the pixels' signedness: files write it as US or SS regardless of it."""
    if dtype.kind == "i" and value >= 2 ** (bits - 1):
        return value - 2**bits
    if dtype.kind == "u" and value < 0:
        return value + 2**bits
    return value


def _fill_gaps(hu: np.ndarray, known_index: np.ndarray) -> np.ndarray:
    """Linear interpolation along z for the slices not in ``known_index``."""
    filled = hu.astype(np.float32, copy=False)
    missing = np.setdiff1d(np.arange(hu.shape[0]), known_index)
    for index in missing:
        below = known_index[known_index < index].max()
        above = known_index[known_index > index].min()
        weight = (index - below) / (above - below)
        filled[index] = (1 - weight) * filled[below] + weight * filled[above]
    return filled


def _hu_volume(layout: SliceLayout, source: str, fill_missing_slices: bool) -> tuple[np.ndarray, list[int]]:
    """Decode the ordered slices into a (z, rows, columns) HU array, with missing slices filled."""
    first = layout.slices[0]
    for header in layout.slices:
        if (header.rows, header.columns) != (first.rows, first.columns):
            raise InvalidVolumeError(
                f"{source}: slices of one series differ in size ({first.rows}x{first.columns} vs "
                f"{header.rows}x{header.columns} in {header.path.name}); export the series again."
            )
    shift = np.zeros(len(layout.slices), dtype=int)
    for after, count in layout.missing_after.items():
        shift[after + 1 :] += count
    known_index = np.arange(len(layout.slices)) + shift
    n_total = int(known_index[-1]) + 1
    check_fits_in_memory(source, n_total * first.rows * first.columns, 4)
    hu = np.empty((n_total, first.rows, first.columns), dtype=np.float32)
    integral = True
    for header, index in zip(layout.slices, known_index, strict=True):
        decoded = _decode(header.path, source)
        hu[index] = decoded.pixels * np.float32(decoded.slope) + np.float32(decoded.intercept)
        if decoded.padding is not None:
            hu[index][decoded.padding] = _PADDING_HU
        integral = (
            integral
            and decoded.slope.is_integer()
            and decoded.intercept.is_integer()
            and decoded.pixels.dtype.kind in "iu"
        )
    filled = [int(i) for i in np.setdiff1d(np.arange(n_total), known_index)]
    if filled:
        hu = _fill_gaps(hu, known_index)
        integral = False
    if integral and hu.min() >= np.iinfo(np.int16).min and hu.max() <= np.iinfo(np.int16).max:
        hu = hu.astype(np.int16)
    return hu, filled


def _report_fields(path: Path) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {tag: str(ds.get(tag)) for tag in REPORT_TAGS if ds.get(tag) not in (None, "")}


def _number(value: Any) -> float:
    """A header number, or 0.0 when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def nominal_spacing(ds: pydicom.Dataset) -> float:
    """The slice spacing a header states, for a single slice or slices without positions.

    SpacingBetweenSlices is written negative by some scanners (the stacking direction), which
    SimpleITK refuses as a spacing; its size is the spacing. When it is 0 or missing, the slice
    thickness stands in, and 1 mm when that is missing too.
    """
    spacing = abs(_number(ds.get("SpacingBetweenSlices")))
    if spacing > 0:
        return spacing
    thickness = _number(ds.get("SliceThickness"))
    return thickness if thickness > 0 else 1.0


def read_series(
    headers: list[SliceHeader],
    source: str,
    *,
    fill_missing_slices: bool = False,
    warnings: list[str] | None = None,
) -> CTVolume:
    """Choose, order, decode and orient a series out of ``headers`` (files of one or more series);
    ``warnings`` are notes from before the choice (e.g. skipped damaged files)."""
    series, choice_warnings = choose_series(headers, source)
    warnings = [*(warnings or []), *choice_warnings]
    if any(h.n_frames > 1 for h in series):
        return _read_multiframe(series, source, warnings)
    first = pydicom.dcmread(series[0].path, stop_before_pixels=True)
    layout = order_slices(series, source, nominal_spacing(first))
    warnings += layout.warnings
    if layout.missing_after and not fill_missing_slices:
        gaps = ", ".join(
            f"{count} after slice {after + 1} of {len(layout.slices)}"
            for after, count in layout.missing_after.items()
        )
        raise InvalidVolumeError(
            f"{source}: the series misses slices ({gaps}, {layout.spacing_mm:.3f} mm spacing); export the complete series, "
            "or read it with read_ct(path, fill_missing_slices=True) to interpolate the gap (recorded in the metadata)."
        )
    hu, filled = _hu_volume(layout, source, fill_missing_slices)
    if filled:
        warnings.append(
            f"slices {filled} (0 = most inferior in the file's order) were missing and are interpolated, not measured"
        )
    row_spacing, column_spacing = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((column_spacing, row_spacing, layout.spacing_mm))
    image.SetOrigin(layout.slices[0].position_mm or (0.0, 0.0, 0.0))
    image.SetDirection(
        tuple(np.column_stack([series[0].row_cosines, series[0].column_cosines, series[0].normal]).ravel())
    )
    return _volume(image, source, layout.slices[0].path, warnings, filled)


def _read_multiframe(series: list[SliceHeader], source: str, warnings: list[str]) -> CTVolume:
    """An enhanced (multi-frame) DICOM file, read by SimpleITK/GDCM with its rescale applied.

    A series split over several files is refused: GDCM reads one file, and opening it alone
    would silently drop the slices of the others.
    """
    if len(series) > 1:
        raise InvalidVolumeError(
            f"{source}: series {series[0].series_uid} is stored in {len(series)} files, at least one of them "
            f"multi-frame ({_names([h.path for h in series])}: {n_slices(series)} slices in all); a multi-frame "
            "series can be read only from a single file, and one part alone would lack the others' slices. "
            "Convert the series to one NIfTI file (e.g. with dcm2niix) or export it as one file per slice."
        )
    path = series[0].path
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise InvalidVolumeError(
            f"{path}: the multi-frame DICOM cannot be read ({str(exc).strip().splitlines()[-1]}); export it as one file per slice."
        ) from exc
    return _volume(image, str(path), path, warnings, [])


def _volume(
    image: sitk.Image, source: str, first_path: Path, warnings: list[str], filled: list[int]
) -> CTVolume:
    display, source_orientation = to_display(image)
    oblique = oblique_warning(display)
    if oblique:
        warnings = [*warnings, oblique]
    metadata: dict[str, Any] = _report_fields(first_path)
    metadata["warnings"] = warnings
    if filled:
        metadata["interpolated_slices"] = filled
    return CTVolume(
        sitk.GetArrayFromImage(display), geometry_of(display, source_orientation), source, metadata
    )


def read_dicom(path: Path | list[Path], *, fill_missing_slices: bool = False) -> CTVolume:
    """Read a DICOM series folder, a single DICOM file, or a list of DICOM files as one CT volume.

    Damaged files among several are skipped with a warning naming them; a damaged single file,
    or a folder of nothing but damaged files, is refused.
    """
    if isinstance(path, list):
        source = f"{len(path)} DICOM files in {path[0].parent}" if path else "an empty list of files"
        scan = read_headers(path)
    elif path.is_dir():
        source = str(path)
        scan = scan_folder(path)
        if scan.n_dicom == 0 and not scan.damaged:
            raise InvalidVolumeError(
                f"{path} contains no DICOM files; choose the folder that holds the CT series' .dcm files."
            )
    else:
        source = str(path)
        scan = read_headers([path])
        if scan.n_dicom == 0:
            raise InvalidVolumeError(
                f"{path} is not a readable DICOM file (it is truncated, damaged or not DICOM); "
                "export it again or open the folder of the whole series."
            )
    if not scan.headers:
        if scan.damaged:
            raise InvalidVolumeError(
                f"{source}: no image could be read; {len(scan.damaged)} DICOM file(s) are damaged or truncated "
                f"({_names(scan.damaged)}); export the series again."
            )
        raise InvalidVolumeError(
            f"{source}: its {scan.n_dicom} DICOM file(s) hold no image (no image size or pixel data: reports, or "
            "files cut off in their header); choose the CT image series or export it again."
        )
    return read_series(
        scan.headers,
        source,
        fill_missing_slices=fill_missing_slices,
        warnings=_damaged_warnings(scan.damaged),
    )
