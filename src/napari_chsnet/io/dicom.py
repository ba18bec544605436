"""Reading DICOM: ordering the chosen series' slices, checking their spacing, decoding their pixels.

pydicom reads the headers (without pixels) of every file, a multi-frame (enhanced) file giving
one slice per frame (io/dicom_headers.py); the series is chosen among them (io/dicom_series.py).
Its slices, from single-frame files, multi-frame files or both, are ordered by the projection of
their ImagePositionPatient on the slice normal, never by file name. A gap in the positions (a
missing slice) is refused unless the caller asks to fill it by interpolation, and slices too far
from a regular grid are resampled onto one at their measured positions, so that no distance or
volume is silently distorted (see docs/io.md). Pixels are decoded by pydicom, including the
compressed transfer syntaxes real scanners write (JPEG Lossless Process 14, JPEG 2000, RLE)
through the pylibjpeg plugins, each file once however many frames it holds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.dicom_headers import (
    UNREADABLE,
    HeaderScan,
    SliceHeader,
    is_appledouble,
    looks_like_dicom,
    read_dataset,
    read_headers,
    scan_folder,
    slices_beside,
)
from napari_chsnet.io.dicom_series import choose_series
from napari_chsnet.io.memory import check_fits_in_memory
from napari_chsnet.io.orientation import geometry_of, oblique_warning, to_display
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.listing import first_and_more

__all__ = ["REPORT_TAGS", "looks_like_dicom", "order_slices", "read_dicom", "read_series"]

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
# Slices further than this fraction of the spacing from their place on the regular grid are
# reported (uneven spacing); further than the second, the slices are resampled onto a regular grid.
_UNEVEN_TOLERANCE = 0.01
_RESAMPLE_TOLERANCE = 0.1
# Positions written to 0.01-0.1 mm (DICOM decimal strings) are off their grid by up to this much with no
# uneven spacing at all: not worth a warning.
_POSITION_ROUNDING_MM = 0.05
# Slices closer than this along the normal repeat a position.
_SAME_POSITION_MM = 1e-3
# What pydicom's pixel decoding raises (beyond a damaged file): pixel data shorter than the header says
# (ValueError), a missing decoder (RuntimeError, NotImplementedError), a missing pixel tag (AttributeError).
# Only ``ds.pixel_array`` is tried under it.
_UNDECODABLE = (*UNREADABLE, ValueError, RuntimeError, AttributeError)
# HU given to voxels marked by PixelPaddingValue (outside the reconstructed field of view): air.
_PADDING_HU = -1024.0
# Damaged files (or acquisitions) named in a warning or error before the rest are counted.
_NAMES_SHOWN = 5


def _names(paths: Sequence[Path]) -> str:
    return first_and_more([p.name for p in paths], _NAMES_SHOWN)


def _malformed(malformed: dict[Path, str]) -> str:
    """What is wrong with each file, files with the same fault named together."""
    by_fault: dict[str, list[Path]] = {}
    for path, fault in malformed.items():
        by_fault.setdefault(fault, []).append(path)
    return first_and_more(
        [f"{fault} in {_names(paths)}" for fault, paths in by_fault.items()], _NAMES_SHOWN, "; "
    )


def _skipped_warnings(scan: HeaderScan) -> list[str]:
    warnings = []
    if scan.damaged:
        warnings.append(
            f"skipped {len(scan.damaged)} damaged or truncated DICOM file(s) that cannot be read "
            f"({_names(scan.damaged)}); if they belong to the opened series, export it again"
        )
    if scan.malformed:
        warnings.append(
            f"skipped {len(scan.malformed)} DICOM file(s) with a malformed header value ({_malformed(scan.malformed)}); "
            "if they belong to the opened series, export it again"
        )
    return warnings


def _nothing_readable_error(scan: HeaderScan, source: str) -> InvalidVolumeError:
    faults = []
    if scan.damaged:
        faults.append(f"{len(scan.damaged)} DICOM file(s) are damaged or truncated ({_names(scan.damaged)})")
    if scan.malformed:
        faults.append(
            f"{len(scan.malformed)} DICOM file(s) have a malformed header value ({_malformed(scan.malformed)})"
        )
    if faults:
        return InvalidVolumeError(
            f"{source}: no image could be read; {' and '.join(faults)}; export the series again."
        )
    return InvalidVolumeError(
        f"{source}: its {scan.n_dicom} DICOM file(s) hold no image (no image size or pixel data: reports, or "
        "files cut off in their header); choose the CT image series or export it again."
    )


@dataclass(frozen=True)
class SliceLayout:
    """Ordered slices, their measured positions along the normal and the grid they are placed on.

    Without resampling, slice i lies at grid index ``known_index[i]`` (indices skipped are missing
    slices); with resampling, the grid runs from the first to the last measured position at
    ``spacing_mm`` and every grid slice is interpolated from the measured slices around it.
    """

    slices: list[SliceHeader]
    offsets_mm: np.ndarray
    spacing_mm: float
    missing_after: dict[int, int]
    resampled: bool
    warnings: tuple[str, ...]

    @property
    def known_index(self) -> np.ndarray:
        return _known_index(len(self.slices), self.missing_after)

    @property
    def n_grid(self) -> int:
        if self.resampled:
            return _n_steps(self.offsets_mm[-1] - self.offsets_mm[0], self.spacing_mm) + 1
        return int(self.known_index[-1]) + 1

    @property
    def grid_offsets_mm(self) -> np.ndarray:
        return self.offsets_mm[0] + np.arange(self.n_grid) * self.spacing_mm


def _known_index(n_slices: int, missing_after: dict[int, int]) -> np.ndarray:
    """Grid index of each measured slice: its rank, shifted past the missing slices before it."""
    shift = np.zeros(n_slices, dtype=int)
    for after, count in missing_after.items():
        shift[after + 1 :] += count
    return np.arange(n_slices) + shift


def _n_steps(extent_mm: float, step_mm: float) -> int:
    """Whole steps of about ``step_mm`` from the first to the last slice (at least one)."""
    return max(1, round(float(extent_mm) / step_mm))


def _offset(header: SliceHeader, normal: np.ndarray) -> float:
    return float(np.dot(header.position_mm, normal))  # type: ignore[arg-type]


def order_slices(series: list[SliceHeader], default_spacing_mm: float) -> SliceLayout:
    """Sort slices by position on the normal; find repeated acquisitions, duplicates, gaps and
    uneven spacing."""
    if any(h.position_mm is None for h in series):
        ordered = sorted(series, key=lambda h: h.stack_order)
        warning = "slices carry no ImagePositionPatient; ordered by InstanceNumber with the slice thickness as spacing"
        offsets = np.arange(len(ordered)) * default_spacing_mm
        return SliceLayout(ordered, offsets, default_spacing_mm, {}, False, (warning,))
    normal = series[0].normal
    ordered = sorted(series, key=lambda h: (_offset(h, normal), *h.stack_order))
    offsets = np.array([_offset(h, normal) for h in ordered])
    warnings: list[str] = []
    kept, notes = _without_repeated_acquisitions(ordered, offsets)
    if notes:
        warnings += notes
        ordered, offsets = [h for h, k in zip(ordered, kept, strict=True) if k], offsets[kept]
    keep = np.r_[True, np.diff(offsets) > _SAME_POSITION_MM]
    if not keep.all():
        warnings.append(f"dropped {int((~keep).sum())} slice(s) repeating a position already present")
        ordered = [h for h, k in zip(ordered, keep, strict=True) if k]
        offsets = offsets[keep]
    if len(ordered) == 1:
        return SliceLayout(ordered, offsets, default_spacing_mm, {}, False, tuple(warnings))
    spacing, missing_after, resampled, grid_warnings = _grid(offsets)
    warnings += grid_warnings
    in_plane = np.array([h.position_mm for h in ordered]) - np.outer(offsets - offsets[0], normal)
    if np.abs(in_plane - in_plane[0]).max() > 0.01 * spacing + 1e-3:
        warnings.append(
            "slice positions drift within the slice plane (gantry tilt); shown without shear correction"
        )
    return SliceLayout(ordered, offsets, spacing, missing_after, resampled, tuple(warnings))


def _without_repeated_acquisitions(
    ordered: list[SliceHeader], offsets: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Which slices to keep when the series repeats part of its scan in another acquisition.

    Acquisitions are taken from the largest (tie: the lowest number) down; one is a repeat, dropped
    whole, when more than half of its slices lie within the extent (first to last position, widened by
    half a slice spacing) of an acquisition already kept: spliced slice by slice, the two would make a
    volume that is neither, and a repeat shifted by part of a slice would be interleaved with its
    original. Every other acquisition is kept: the table positions of a scan numbered as acquisitions,
    a step-and-shoot scan whose neighbours share their border slices (half of a short acquisition), and
    positions shared at the borders are left to the duplicate rule. A kept acquisition's slices that
    still lie within the widened extent of a larger one kept before it, at positions that one does not
    share, are dropped (a partial repeat off the other's grid): two acquisitions are never interleaved.
    The notes say what was dropped; ``ordered`` is sorted by ``offsets``."""
    groups: dict[int | None, list[int]] = {}
    for index, header in enumerate(ordered):
        groups.setdefault(header.acquisition_number, []).append(index)
    keep = np.ones(len(ordered), dtype=bool)
    if len(groups) == 1:
        return keep, []
    at = {n: offsets[indices] for n, indices in groups.items()}  # each sorted, as ``offsets`` is
    tolerance = 0.5 * _slice_spacing(at.values(), offsets)
    starts: list[float] = []  # the union of the kept acquisitions' widened extents, disjoint and sorted
    ends: list[float] = []
    kept: list[int | None] = []  # in the order taken
    extent: dict[int | None, tuple[float, float]] = {}  # of each kept acquisition's kept slices
    dropped: list[int | None] = []
    trimmed: list[tuple[int | None, int | None, int]] = []  # (larger, smaller, slices dropped)
    for number in sorted(at, key=lambda n: (-len(at[n]), _by_number(n))):
        z = at[number]
        inside = 0
        for value in z.tolist():
            i = bisect.bisect_right(starts, value) - 1
            inside += i >= 0 and value <= ends[i]
        if inside > 0.5 * len(z):
            dropped.append(number)
            keep[groups[number]] = False
            continue
        mine = np.ones(len(z), dtype=bool)
        if inside and len(z) > 1:  # a one-slice acquisition inside another's extent was dropped above
            for other in kept:
                low, high = extent[other]
                if low - tolerance > z[-1] or high + tolerance < z[0]:
                    continue
                theirs = at[other][keep[groups[other]]]
                near = np.searchsorted(theirs, z).clip(1, len(theirs) - 1)
                shared = (
                    np.minimum(np.abs(z - theirs[near - 1]), np.abs(z - theirs[near])) <= _SAME_POSITION_MM
                )
                overlap = mine & (z >= low - tolerance) & (z <= high + tolerance) & ~shared
                if overlap.any():
                    mine &= ~overlap
                    trimmed.append((other, number, int(overlap.sum())))
            keep[np.asarray(groups[number])[~mine]] = False
        kept.append(number)
        extent[number] = (float(z[mine][0]), float(z[mine][-1]))
        low, high = extent[number][0] - tolerance, extent[number][1] + tolerance
        first, last = bisect.bisect_left(ends, low), bisect.bisect_right(starts, high)
        if first < last:
            low, high = min(low, starts[first]), max(high, ends[last - 1])
        starts[first:last], ends[first:last] = [low], [high]
    notes = []
    if dropped:
        kept_text = _acquisitions(sorted(kept, key=_by_number), at)
        dropped_text = _acquisitions(sorted(dropped, key=_by_number), at)
        notes.append(
            f"the series holds {len(at)} acquisitions, {len(dropped)} of them repeating positions another "
            f"already covers (a scan repeated inside one series): kept {kept_text}; dropped {dropped_text} whole"
        )
    for larger, smaller, count in trimmed:
        notes.append(
            f"{_acquisition(smaller)} ({len(at[smaller])} slices) overlaps {_acquisition(larger)} "
            f"({len(at[larger])} slices) off its slice positions: dropped the {count} slice(s) of "
            f"{_acquisition(smaller)} within {_acquisition(larger)}'s extent, so that the two are not interleaved"
        )
    return keep, notes


def _acquisitions(numbers: list[int | None], at: dict[int | None, np.ndarray]) -> str:
    return first_and_more([f"{_acquisition(n)} ({len(at[n])} slices)" for n in numbers], _NAMES_SHOWN)


def _slice_spacing(acquisitions: Iterable[np.ndarray], offsets: np.ndarray) -> float:
    """The median step between an acquisition's own distinct positions; where every acquisition is one
    slice, the median step between the series' distinct positions."""
    steps = [step for z in acquisitions for step in np.diff(np.unique(z)) if step > _SAME_POSITION_MM]
    if not steps:
        steps = [step for step in np.diff(offsets) if step > _SAME_POSITION_MM]
    return float(np.median(steps)) if steps else 0.0


def _by_number(number: int | None) -> float:
    return number if number is not None else math.inf


def _acquisition(number: int | None) -> str:
    return f"acquisition {number}" if number is not None else "the slices without AcquisitionNumber"


def _grid(offsets: np.ndarray) -> tuple[float, dict[int, int], bool, list[str]]:
    """Place slices at ``offsets`` (sorted, distinct) on a regular grid: its spacing, the missing slices
    after each gap, whether the slices are resampled, and the warnings.

    Steps over 1.5 median steps are missing slices; the grid spacing runs from the first to the last
    slice, and slices further than 10 % of it from their grid place (accumulated, not step by step)
    are resampled onto a grid of the median step."""
    steps = np.diff(offsets)
    median = float(np.median(steps))
    is_gap = steps > _GAP_FACTOR * median
    missing_after = {int(i): int(round(steps[i] / median)) - 1 for i in np.flatnonzero(is_gap)}
    regular = steps[~is_gap]  # never empty: the smallest step is at most the median
    known_index = _known_index(len(offsets), missing_after)
    extent = float(offsets[-1] - offsets[0])
    spacing = extent / int(known_index[-1])
    off_grid = float(np.abs(offsets - offsets[0] - known_index * spacing).max())
    if off_grid > _RESAMPLE_TOLERANCE * spacing:
        n_steps = _n_steps(extent, median)
        grid_spacing = extent / n_steps
        warning = (
            f"uneven slice spacing from {regular.min():.3f} to {regular.max():.3f} mm, which on a regular grid "
            f"would place slices up to {off_grid:.2f} mm from their measured positions; the {len(offsets)} "
            f"measured slices are resampled by linear interpolation onto a regular {grid_spacing:.3f} mm grid "
            f"of {n_steps + 1} slices, so that every voxel lies at its true position"
        )
        return grid_spacing, missing_after, True, [warning]
    if off_grid > max(_UNEVEN_TOLERANCE * spacing, _POSITION_ROUNDING_MM):
        warning = (
            f"uneven slice spacing from {regular.min():.3f} to {regular.max():.3f} mm; shown on a regular "
            f"{spacing:.3f} mm grid, so slices lie up to {off_grid:.3f} mm from their measured positions"
        )
        return spacing, missing_after, False, [warning]
    return spacing, missing_after, False, []


def _dataset(path: Path) -> pydicom.Dataset:
    """A file's whole dataset, a bare one without the preamble included."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = read_dataset(path)
    except UNREADABLE as exc:
        raise InvalidVolumeError(
            f"{path} cannot be read as DICOM ({exc}); the file is damaged, export the series again."
        ) from exc
    if ds is None:
        raise InvalidVolumeError(
            f"{path} cannot be read as DICOM; the file is damaged, export the series again."
        )
    return ds


def _stored_frames(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """A file's dataset and its stored pixels as (frames, rows, columns), decoded once."""
    ds = _dataset(path)
    if "PixelData" not in ds:
        raise InvalidVolumeError(
            f"{path} is a DICOM file without pixel data; choose the image files of a CT series."
        )
    try:
        pixels = ds.pixel_array
    except _UNDECODABLE as exc:
        raise InvalidVolumeError(
            f"{path}: pixel data ({ds.file_meta.get('TransferSyntaxUID', 'unknown transfer syntax')}) cannot be decoded "
            f"({exc}); the file is truncated or needs a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle)."
        ) from exc
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if int(ds.get("SamplesPerPixel") or 1) != 1 or pixels.shape[-2:] != (ds.Rows, ds.Columns):
        raise InvalidVolumeError(
            f"{path} holds a {pixels.shape} colour image, not a greyscale CT; choose the CT series."
        )
    if pixels.size != n_frames * ds.Rows * ds.Columns:  # e.g. a multi-frame file that lost NumberOfFrames
        raise InvalidVolumeError(
            f"{path} holds {pixels.size // (ds.Rows * ds.Columns)} frames of pixels where its NumberOfFrames "
            f"says {n_frames}; the file is damaged, export the series again."
        )
    return ds, pixels.reshape(n_frames, ds.Rows, ds.Columns)


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


def _decode_into(slices: list[SliceHeader], out: np.ndarray, indices: np.ndarray) -> bool:
    """Decode ``slices`` into ``out[indices]`` as HU (each file once, however many of its frames are
    used); True when every value is an integer (integer pixels, integer rescale)."""
    by_file: dict[Path, list[tuple[SliceHeader, int]]] = {}
    for header, index in zip(slices, indices, strict=True):
        by_file.setdefault(header.path, []).append((header, int(index)))
    integral = True
    for path, members in by_file.items():
        ds, frames = _stored_frames(path)
        for header, index in members:
            pixels = frames[header.frame or 0]
            out[index] = pixels * np.float32(header.slope) + np.float32(header.intercept)
            padding = _padding_mask(ds, pixels)
            if padding is not None:
                out[index][padding] = _PADDING_HU
            integral = integral and float(header.slope).is_integer() and float(header.intercept).is_integer()
        integral = integral and frames.dtype.kind in "iu"
    return integral


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


def _resample(measured: np.ndarray, at_mm: np.ndarray, grid_mm: np.ndarray) -> np.ndarray:
    """Slices at ``grid_mm`` linearly interpolated between the measured slices at ``at_mm``."""
    upper = np.clip(np.searchsorted(at_mm, grid_mm), 1, len(at_mm) - 1)
    lower = upper - 1
    weights = np.clip((grid_mm - at_mm[lower]) / (at_mm[upper] - at_mm[lower]), 0.0, 1.0)
    out = np.empty((len(grid_mm), *measured.shape[1:]), dtype=np.float32)
    for j, (below, above, weight) in enumerate(zip(lower, upper, weights, strict=True)):
        out[j] = np.float32(1 - weight) * measured[below] + np.float32(weight) * measured[above]
    return out


def _in_gaps(layout: SliceLayout) -> list[int]:
    """Grid slices lying inside a gap of missing slices (filled by interpolation, not measured)."""
    if not layout.resampled:
        return [int(i) for i in np.setdiff1d(np.arange(layout.n_grid), layout.known_index)]
    grid, offsets = layout.grid_offsets_mm, layout.offsets_mm
    inside = np.zeros(len(grid), dtype=bool)
    for after in layout.missing_after:
        inside |= (grid > offsets[after] + 0.5 * layout.spacing_mm) & (
            grid < offsets[after + 1] - 0.5 * layout.spacing_mm
        )
    return [int(i) for i in np.flatnonzero(inside)]


def _check_one_size(slices: list[SliceHeader], source: str) -> None:
    first = slices[0]
    for header in slices:
        if (header.rows, header.columns) != (first.rows, first.columns):
            raise InvalidVolumeError(
                f"{source}: slices of one series differ in size ({first.rows}x{first.columns} vs "
                f"{header.rows}x{header.columns} in {header.name}); export the series again."
            )


def _hu_volume(layout: SliceLayout, source: str) -> tuple[np.ndarray, list[int]]:
    """Decode the ordered slices into a (z, rows, columns) HU array on the layout's grid, missing
    slices filled; int16 when every value is an integer in its range, else float32."""
    _check_one_size(layout.slices, source)
    rows, columns = layout.slices[0].rows, layout.slices[0].columns
    n_measured = len(layout.slices)
    if layout.resampled:
        check_fits_in_memory(source, (n_measured + layout.n_grid) * rows * columns, 4)
        measured = np.empty((n_measured, rows, columns), dtype=np.float32)
        _decode_into(layout.slices, measured, np.arange(n_measured))
        hu = _resample(measured, layout.offsets_mm, layout.grid_offsets_mm)
        return hu, _in_gaps(layout)  # interpolated: float32
    check_fits_in_memory(source, layout.n_grid * rows * columns, 4)
    hu = np.empty((layout.n_grid, rows, columns), dtype=np.float32)
    integral = _decode_into(layout.slices, hu, layout.known_index)
    filled = _in_gaps(layout)
    if filled:
        return _fill_gaps(hu, layout.known_index), filled
    if integral and hu.min() >= np.iinfo(np.int16).min and hu.max() <= np.iinfo(np.int16).max:
        hu = hu.astype(np.int16)
    return hu, filled


def _report_fields(first: SliceHeader) -> dict[str, Any]:
    """The REPORT_TAGS the first slice's file holds; a value pydicom cannot parse is left out."""
    ds = read_dataset(first.path, stop_before_pixels=True)
    fields = {}
    for tag in REPORT_TAGS if ds is not None else ():
        try:
            value = ds.get(tag)
        except UNREADABLE:  # a damaged value (e.g. an unknown VR) that no image tag needed
            continue
        if value not in (None, ""):
            fields[tag] = str(value)
    if "SliceThickness" not in fields and first.thickness_mm:
        fields["SliceThickness"] = f"{first.thickness_mm:g}"  # a multi-frame file states it per frame
    return fields


def _missing_slices_error(layout: SliceLayout, source: str, skipped: list[str]) -> InvalidVolumeError:
    """The gaps, and the files skipped while reading (perhaps the missing slices: the error is all a user sees)."""
    gaps = ", ".join(
        f"{count} after slice {after + 1} of {len(layout.slices)}"
        for after, count in layout.missing_after.items()
    )
    median = float(np.median(np.diff(layout.offsets_mm)))
    return InvalidVolumeError(
        f"{source}: the series misses slices ({gaps}, {median:.3f} mm spacing); export the complete series, "
        "or let the reader interpolate the gap (`chsnet segment --fill-missing-slices`, or "
        "`read_ct(path, fill_missing_slices=True)` in Python)."
        + "".join(f" Also {note}." for note in skipped)
    )


def read_series(
    headers: list[SliceHeader],
    source: str,
    *,
    fill_missing_slices: bool = False,
    warnings: list[str] | None = None,
) -> CTVolume:
    """Choose, order, decode and orient a series out of ``headers`` (slices of one or more series);
    ``warnings`` are notes from before the choice (e.g. skipped damaged files)."""
    earlier = list(warnings or [])
    series, choice_warnings = choose_series(headers, source)
    warnings = [*earlier, *choice_warnings]
    first = series[0]
    layout = order_slices(series, first.nominal_spacing_mm)
    warnings += layout.warnings
    if layout.missing_after and not fill_missing_slices:
        raise _missing_slices_error(layout, source, earlier)
    hu, filled = _hu_volume(layout, source)
    if filled:
        warnings.append(
            f"slices {filled} (0 = most inferior in the file's order) were missing and are interpolated, not measured"
        )
    row_spacing, column_spacing = layout.slices[0].pixel_spacing_mm
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((column_spacing, row_spacing, layout.spacing_mm))
    image.SetOrigin(layout.slices[0].position_mm or (0.0, 0.0, 0.0))
    image.SetDirection(
        tuple(np.column_stack([first.row_cosines, first.column_cosines, first.normal]).ravel())
    )
    metadata = _report_fields(layout.slices[0])
    if filled:
        metadata["interpolated_slices"] = filled
    if layout.resampled:
        steps = np.diff(layout.offsets_mm)
        metadata["resampled_slices"] = {
            "measured": len(layout.slices),
            "measured_steps_mm": [round(float(steps.min()), 4), round(float(steps.max()), 4)],
            "spacing_mm": round(layout.spacing_mm, 4),
        }
    return _volume(image, source, warnings, metadata)


def _volume(image: sitk.Image, source: str, warnings: list[str], metadata: dict[str, Any]) -> CTVolume:
    display, source_orientation = to_display(image)
    oblique = oblique_warning(display)
    metadata["warnings"] = [*warnings, oblique] if oblique else warnings
    return CTVolume(
        sitk.GetArrayFromImage(display), geometry_of(display, source_orientation), source, metadata
    )


def _scan_one_file(path: Path) -> HeaderScan:
    if is_appledouble(path):
        raise InvalidVolumeError(
            f"{path} is a macOS '._' companion file (resource fork), not DICOM; open the file without '._' or its folder."
        )
    scan = read_headers([path])
    if scan.n_dicom == 0:
        raise InvalidVolumeError(
            f"{path} is not a readable DICOM file (it is truncated, damaged or not DICOM); "
            "export it again or open the folder of the whole series."
        )
    return scan


def _whole_series_warning(path: Path, headers: list[SliceHeader]) -> list[str]:
    """A single file opened while its folder holds the rest of its series: one slice of a scan."""
    if not headers:
        return []
    n_more = slices_beside(path, headers[0].series_uid)
    if not n_more:
        return []
    return [
        f"opened 1 file; its folder holds {n_more} more slices of the same series: open the folder to read the whole scan"
    ]


def read_dicom(path: Path | list[Path], *, fill_missing_slices: bool = False) -> CTVolume:
    """Read a DICOM series folder, a single DICOM file, or a list of DICOM files as one CT volume.

    Damaged files, and files with a malformed geometry tag, among several are skipped with a warning
    naming them (and the tag); a single such file, or a folder of nothing else, is refused.
    """
    notes: list[str] = []
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
        scan = _scan_one_file(path)
        notes = _whole_series_warning(path, scan.headers)
    if not scan.headers:
        raise _nothing_readable_error(scan, source)
    return read_series(
        scan.headers,
        source,
        fill_missing_slices=fill_missing_slices,
        warnings=[*notes, *_skipped_warnings(scan)],
    )
