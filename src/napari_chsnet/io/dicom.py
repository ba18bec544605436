"""Reading DICOM: choosing the CT series in a folder, ordering its slices, decoding its pixels.

pydicom reads the headers (without pixels) to group files by SeriesInstanceUID and choose the
series; it then decodes the chosen slices, including the compressed transfer syntaxes real
scanners write (JPEG Lossless Process 14, JPEG 2000, RLE) through the pylibjpeg plugins.
Slices are ordered by the projection of ImagePositionPatient on the slice normal, never by
file name. A gap in the positions (a missing slice) is refused unless the caller asks to fill
it by interpolation, so that no distance or volume is silently distorted (see docs/io.md).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.memory import check_fits_in_memory
from napari_chsnet.io.orientation import geometry_of, to_display
from napari_chsnet.io.volume import CTVolume

logger = logging.getLogger(__name__)

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
    """The header of a DICOM file without its pixels, or None if the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError):
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


def scan_folder(folder: Path) -> tuple[list[SliceHeader], int]:
    """Headers of the image files under ``folder`` (recursively) and the count of DICOM files seen."""
    headers: list[SliceHeader] = []
    n_dicom = 0
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            if name.upper() == "DICOMDIR":
                continue
            path = Path(root) / name
            ds = read_header(path)
            if ds is None:
                continue
            n_dicom += 1
            header = slice_header(path, ds)
            if header is not None:
                headers.append(header)
    return headers, n_dicom


def _rank(series: list[SliceHeader]) -> tuple[bool, bool, bool, int]:
    first = series[0]
    is_original_primary = first.image_type[:2] == ("ORIGINAL", "PRIMARY")
    is_axial = abs(float(first.normal @ _AXIAL)) >= max(abs(first.normal))
    return (first.modality == "CT", is_original_primary, is_axial, len(series))


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
            f"the folder holds {len(ranked)} image series; opened the {len(chosen)}-slice series {chosen[0].series_uid}"
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


def _decode(path: Path, source: str) -> tuple[np.ndarray, float, float]:
    """Stored pixels of one slice, with its rescale slope and intercept."""
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read as DICOM ({exc}); the file is damaged, export the series again."
        ) from exc
    if "PixelData" not in ds:
        raise InvalidVolumeError(
            f"{path} is a DICOM file without pixel data; choose the image files of a CT series."
        )
    try:
        pixels = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, EOFError, AttributeError) as exc:
        raise InvalidVolumeError(
            f"{path}: pixel data ({ds.file_meta.get('TransferSyntaxUID', 'unknown transfer syntax')}) cannot be decoded "
            f"({exc}); the file is truncated or needs a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle)."
        ) from exc
    if pixels.ndim != 2:
        raise InvalidVolumeError(
            f"{path} holds a {pixels.shape} colour or multi-frame image, not a greyscale CT slice; choose the CT series."
        )
    return pixels, float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


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
        pixels, slope, intercept = _decode(header.path, source)
        hu[index] = pixels * np.float32(slope) + np.float32(intercept)
        integral = integral and slope.is_integer() and intercept.is_integer() and pixels.dtype.kind in "iu"
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


def read_series(headers: list[SliceHeader], source: str, *, fill_missing_slices: bool = False) -> CTVolume:
    """Choose, order, decode and orient a series out of ``headers`` (files of one or more series)."""
    series, warnings = choose_series(headers, source)
    if series[0].n_frames > 1:
        return _read_multiframe(series[0].path, warnings)
    first = pydicom.dcmread(series[0].path, stop_before_pixels=True)
    thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    layout = order_slices(series, source, thickness)
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


def _read_multiframe(path: Path, warnings: list[str]) -> CTVolume:
    """An enhanced (multi-frame) DICOM file, read by SimpleITK/GDCM with its rescale applied."""
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
    metadata: dict[str, Any] = _report_fields(first_path)
    metadata["warnings"] = warnings
    if filled:
        metadata["interpolated_slices"] = filled
    for warning in warnings:
        logger.warning("%s: %s", source, warning)
    return CTVolume(
        sitk.GetArrayFromImage(display), geometry_of(display, source_orientation), source, metadata
    )


def read_dicom(path: Path | list[Path], *, fill_missing_slices: bool = False) -> CTVolume:
    """Read a DICOM series folder, a single DICOM file, or a list of DICOM files as one CT volume."""
    if isinstance(path, list):
        source = f"{len(path)} DICOM files in {path[0].parent}" if path else "an empty list of files"
        headers = [
            h for p in path if (ds := read_header(p)) is not None and (h := slice_header(p, ds)) is not None
        ]
        n_dicom = len(headers)
    elif path.is_dir():
        source = str(path)
        headers, n_dicom = scan_folder(path)
        if n_dicom == 0:
            raise InvalidVolumeError(
                f"{path} contains no DICOM files; choose the folder that holds the CT series' .dcm files."
            )
    else:
        source = str(path)
        ds = read_header(path)
        if ds is None:
            raise InvalidVolumeError(
                f"{path} is not a readable DICOM file; check that it is a complete .dcm file."
            )
        header = slice_header(path, ds)
        headers = [header] if header is not None else []
        n_dicom = 1
    if not headers:
        raise InvalidVolumeError(
            f"{source}: its {n_dicom} DICOM file(s) hold no image (no pixel data); choose the CT image series."
        )
    return read_series(headers, source, fill_missing_slices=fill_missing_slices)
