"""Reading DICOM headers into image planes: one per single-frame file, one per frame of a multi-frame file.

pydicom reads each file's header without its pixels. An enhanced (multi-frame) file is expanded
into its frames, each with the position, orientation, pixel spacing and rescale that its
functional groups give (per frame, else shared, else the file's top-level attributes), so that
the series choice, the ordering and the gap, duplicate and spacing checks treat frames and
single-frame files alike. A file pydicom cannot parse is set aside as damaged; one whose geometry tags
are malformed (a wrong count of values, not numbers, cosines that are not two perpendicular unit
vectors) is set aside with what is wrong with it (MalformedTagError), so that the warning or error
names the tag.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.orientation import nearest_orthonormal

# CT Image Storage and Enhanced CT Image Storage: a CT even when the Modality tag is missing.
_CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")
# What pydicom raises on a damaged or cut-off file, reading it or converting a value on first use: a
# truncated element surfaces as a bare struct.error or BytesLengthException (OSError inside a sequence),
# a corrupted value representation as NotImplementedError ("Unknown VR"), not as InvalidDicomError.
# Nothing broader: a ValueError or TypeError of this package's own code is a bug, not a damaged file.
UNREADABLE = (InvalidDicomError, BytesLengthException, struct.error, EOFError, OSError, NotImplementedError)
# A dataset saved without the 128-byte preamble starts with its file meta (group 0002) or, without
# file meta too, with its identifying group (0008).
_BARE_DATASET_GROUPS = (0x0002, 0x0008)
_VALUE_REPRESENTATIONS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
# Tags the single-file check reads from the files beside it (and what makes a forced read plausible).
_SIBLING_TAGS = ["SOPClassUID", "Modality", "SeriesInstanceUID", "Rows", "Columns", "NumberOfFrames"]
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Largest departure of ImageOrientationPatient's cosines from unit length, and of their dot product from 0,
# taken as rounding (real files write them to 3-6 decimals).
_COSINE_TOLERANCE = 0.05
# Below this departure the cosines are used as written (already perpendicular unit vectors to float precision).
_ORTHONORMAL_ATOL = 1e-7
# Characters of a malformed value quoted in a message (a damaged value can be long binary garbage).
_SHOWN_CHARACTERS = 60
# pydicom's (implicit VR, little endian) of a dataset read without file meta, as a transfer syntax.
_SYNTAX_OF_ENCODING = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


class MalformedTagError(InvalidVolumeError):
    """A tag the reader needs holds a value of the wrong count or kind, e.g. "ImageOrientationPatient has 5
    values, expected 6"; the file's name is added by whoever reads it."""


def format_dicom_date(value: str) -> str:
    """DICOM DA "19600102" → "1960-01-02"; anything else (not a calendar-like date) as it is."""
    match = re.fullmatch(r"\s*(\d{4})(\d{2})(\d{2})\s*", value)
    if match and 1 <= int(match[2]) <= 12 and 1 <= int(match[3]) <= 31:
        return f"{match[1]}-{match[2]}-{match[3]}"
    return value


@dataclass(frozen=True)
class FileHeader:
    """What one file's top-level header says about its patient, study and series."""

    path: Path
    modality: str
    image_type: tuple[str, ...]
    series_uid: str
    series_number: int | None
    series_description: str
    study_uid: str
    study_date: str
    patient_id: str
    patient_name: str
    rows: int
    columns: int
    n_frames: int


@dataclass(frozen=True)
class SliceHeader:
    """One image plane: a single-frame file (``frame`` None) or one frame of a multi-frame file."""

    file: FileHeader
    frame: int | None
    row_cosines: tuple[float, float, float]
    column_cosines: tuple[float, float, float]
    position_mm: tuple[float, float, float] | None
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns)
    thickness_mm: float | None
    nominal_spacing_mm: float
    slope: float
    intercept: float
    instance_number: int
    acquisition_number: int | None

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def series_uid(self) -> str:
        return self.file.series_uid

    @property
    def modality(self) -> str:
        return self.file.modality

    @property
    def image_type(self) -> tuple[str, ...]:
        return self.file.image_type

    @property
    def rows(self) -> int:
        return self.file.rows

    @property
    def columns(self) -> int:
        return self.file.columns

    @property
    def name(self) -> str:
        """The file name, with the frame number for a frame of a multi-frame file."""
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"

    @property
    def stack_order(self) -> tuple[int, int]:
        """Order of slices without positions: InstanceNumber, then the frame."""
        return (self.instance_number, self.frame or 0)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosines, self.column_cosines)

    @property
    def orientation_key(self) -> tuple[float, ...]:
        return tuple(np.round(np.r_[self.row_cosines, self.column_cosines], 3))

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type


def is_appledouble(path: Path) -> bool:
    """macOS writes a '._name' companion (resource fork) beside each file copied to a foreign disk: never DICOM."""
    return path.name.startswith("._")


def looks_like_dicom(path: Path) -> bool:
    """True if the file carries the DICOM preamble marker, a .dcm suffix, or starts as a dataset
    saved without the preamble does; never for a macOS '._' companion."""
    if is_appledouble(path):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    head = _head(path)
    return head[128:132] == b"DICM" or _starts_like_bare_dataset(head)


DICOM_PROBE_LIMIT = 500  # files looked at before deciding a folder holds no DICOM


def folder_has_dicom(folder: Path, probe_limit: int = DICOM_PROBE_LIMIT) -> bool:
    """True if ``folder`` (or a folder below it) holds a DICOMDIR or a file that looks like DICOM
    among the first ``probe_limit`` files walked (cheap: 132 bytes read per file)."""
    seen = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.upper() == "DICOMDIR" or looks_like_dicom(Path(root) / name):
                return True
            seen += 1
            if seen >= probe_limit:
                return False
    return False


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)
    except OSError:
        return b""


def _starts_like_bare_dataset(head: bytes) -> bool:
    """Whether ``head`` starts with a little-endian element of group 0002 or 0008 whose VR (explicit)
    or length (implicit) is plausible: README files, JPEGs, Thumbs.db or .DS_Store do not."""
    if len(head) < 8:
        return False
    group, _element = struct.unpack("<HH", head[:4])
    if group not in _BARE_DATASET_GROUPS:
        return False
    implicit_length = struct.unpack("<I", head[4:8])[0]
    return head[4:6] in _VALUE_REPRESENTATIONS or (group == 0x0008 and implicit_length < 0x10000)


def read_dataset(
    path: Path, *, stop_before_pixels: bool = False, specific_tags: list[str] | None = None
) -> pydicom.Dataset | None:
    """The dataset of a DICOM file, or None if the file is not DICOM or is damaged.

    A file without the 128-byte preamble and 'DICM' marker (some PACS exports and converters write
    them) is read again with ``force=True`` and kept only when it names a SOP class or a modality,
    so that other files beside a series (README, Thumbs.db, a JPEG) are still passed over.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags)
    except InvalidDicomError:
        pass  # no preamble: perhaps a bare dataset
    except UNREADABLE:
        return None
    if not _starts_like_bare_dataset(_head(path)):
        return None
    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags, force=True
        )
        plausible = bool(ds.get("SOPClassUID") or ds.get("Modality"))
    except Exception:  # noqa: BLE001 - forced parsing of arbitrary bytes can raise anything
        return None
    return _with_transfer_syntax(ds) if plausible else None


def _with_transfer_syntax(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A bare dataset without file meta gets the transfer syntax it was read with, which pydicom
    needs to decode its pixels."""
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = _SYNTAX_OF_ENCODING.get(ds.original_encoding, ImplicitVRLittleEndian)
    ds.file_meta = meta
    return ds


def _number(value: object) -> float:
    """A header number, or 0.0 when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def nominal_spacing(spacing_between_slices: object, thickness: object) -> float:
    """The slice spacing a header states, for a single slice or slices without positions.

    SpacingBetweenSlices is written negative by some scanners (the stacking direction); its size is
    the spacing. When it is 0 or missing, the slice thickness stands in, and 1 mm when that is
    missing too.
    """
    spacing = abs(_number(spacing_between_slices))
    if spacing > 0:
        return spacing
    thickness_mm = _number(thickness)
    return thickness_mm if thickness_mm > 0 else 1.0


def _values(value: object) -> list[object]:
    """A tag's values as a list: pydicom gives a multi-valued tag as a MultiValue, a single value as itself."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _whole_number(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int:
    """A count (Rows, Columns, NumberOfFrames) as a positive int; ``default`` when the tag is missing,
    empty or 0, where it may be."""
    values = _values(ds.get(keyword))
    if default is not None and not any(values):
        return default
    if len(values) > 1:
        raise MalformedTagError(f"{keyword} has {len(values)} values, expected 1")
    number = _int_or_none(values[0]) if values else None
    if number is None or number < 1:
        raise MalformedTagError(f"{keyword} is {_shown(values) or 'empty'}, not a positive whole number")
    return number


def file_header(path: Path, ds: pydicom.Dataset) -> FileHeader:
    """The patient, study and series fields of an image dataset."""
    sop_class = str(ds.get("SOPClassUID", ""))
    return FileHeader(
        path=path,
        modality=str(ds.get("Modality") or ("CT" if sop_class in _CT_SOP_CLASSES else "")).upper(),
        image_type=tuple(str(v).upper() for v in _values(ds.get("ImageType"))),
        series_uid=str(ds.get("SeriesInstanceUID", "unknown series")),
        series_number=_int_or_none(ds.get("SeriesNumber")),
        series_description=str(ds.get("SeriesDescription") or "").strip(),
        study_uid=str(ds.get("StudyInstanceUID") or ""),
        study_date=str(ds.get("StudyDate") or ""),
        patient_id=str(ds.get("PatientID") or "").strip(),
        patient_name=str(ds.get("PatientName") or "").strip(),
        rows=_whole_number(ds, "Rows"),
        columns=_whole_number(ds, "Columns"),
        n_frames=_whole_number(ds, "NumberOfFrames", default=1),
    )


def slice_headers(path: Path, ds: pydicom.Dataset) -> list[SliceHeader]:
    """The image planes of a dataset: one for a single-frame file, one per frame of a multi-frame
    file, none for non-image DICOM (reports, structure sets, presentation states)."""
    if "Rows" not in ds or "Columns" not in ds:
        return []
    file = file_header(path, ds)
    if file.n_frames == 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        return [_plane(file, ds, None)]
    return [_plane(file, ds, frame) for frame in range(file.n_frames)]


def _functional_group(ds: pydicom.Dataset, frame: int | None, keyword: str) -> pydicom.Dataset | None:
    """The item of functional group ``keyword`` for ``frame``: the frame's own, else the shared one."""
    holders = []
    per_frame = _items(ds, "PerFrameFunctionalGroupsSequence")
    if frame is not None and frame < len(per_frame):
        holders.append(per_frame[frame])
    holders += _items(ds, "SharedFunctionalGroupsSequence")[:1]
    for holder in holders:
        items = _items(holder, keyword)
        if items:
            return items[0]
    return None


def _items(holder: pydicom.Dataset, keyword: str) -> DicomSequence:
    """The items of sequence ``keyword``, none when it is missing; a value that is not a sequence is a
    MalformedTagError."""
    value = holder.get(keyword)
    if isinstance(value, DicomSequence):
        return value
    if value is None or value == "":
        return DicomSequence()
    raise MalformedTagError(f"{keyword} is not a sequence")


def _from_group(group: pydicom.Dataset | None, ds: pydicom.Dataset, keyword: str) -> object:
    """``keyword`` from a functional group item when it holds it, else from the top-level dataset."""
    if group is not None and group.get(keyword) not in (None, ""):
        return group.get(keyword)
    return ds.get(keyword)


def _floats(value: object, keyword: str, count: int) -> tuple[float, ...] | None:
    """Tag ``keyword``'s ``count`` numbers, None when it is missing or empty; another number of values,
    or a value that is not a finite number, is a MalformedTagError naming the tag."""
    values = _values(value)
    if not values:
        return None
    if len(values) != count:
        raise MalformedTagError(
            f"{keyword} has {len(values)} value{'s' if len(values) > 1 else ''}, expected {count}"
        )
    try:
        floats = tuple(float(v) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        floats = (math.nan,)
    if not all(math.isfinite(f) for f in floats):
        raise MalformedTagError(f"{keyword} holds a value that is not a number ({_shown(values)})")
    return floats


def _shown(values: Iterable[object]) -> str:
    """Values as DICOM writes a multi-valued tag, separated by backslashes, cut after 60 characters."""
    text = "\\".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return text if len(text) <= _SHOWN_CHARACTERS else text[: _SHOWN_CHARACTERS - 1] + "…"


def _orientation(ds: pydicom.Dataset, frame: int | None) -> tuple[float, ...]:
    """Row and column cosines; two vectors that are not (to rounding) perpendicular unit vectors give no
    slice normal to order slices along, nor a grid: a MalformedTagError."""
    group = _functional_group(ds, frame, "PlaneOrientationSequence")
    keyword = "ImageOrientationPatient"
    orientation = _floats(_from_group(group, ds, keyword), keyword, 6) or _DEFAULT_ORIENTATION
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    departure = max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(row @ column))
    if departure > _COSINE_TOLERANCE:
        raise MalformedTagError(f"{keyword} ({_shown(orientation)}) is not two perpendicular unit vectors")
    if departure > _ORTHONORMAL_ATOL:
        # Cosines written to 3 decimals (0.985\0.174 for 10°) are up to ~1e-3 off; the grid must be
        # exactly perpendicular, or NIfTI writers skew it and the written masks are refused. The nearest
        # perpendicular unit vectors (polar decomposition: both move by the same small angle).
        nearest = nearest_orthonormal(np.column_stack([row, column]))
        orientation = tuple(float(v) for v in (*nearest[:, 0], *nearest[:, 1]))
    return orientation


def _position(ds: pydicom.Dataset, frame: int | None) -> tuple[float, ...] | None:
    """A frame without a per-frame or shared PlanePositionSequence has no position: the top-level
    ImagePositionPatient of a multi-frame file would place every frame at its first."""
    group = _functional_group(ds, frame, "PlanePositionSequence")
    if group is not None:
        return _floats(group.get("ImagePositionPatient"), "ImagePositionPatient", 3)
    return _floats(ds.get("ImagePositionPatient"), "ImagePositionPatient", 3) if frame is None else None


def _pixel_spacing(measures: pydicom.Dataset | None, ds: pydicom.Dataset) -> tuple[float, ...]:
    """(between rows, between columns) in mm; 1 mm each when the file does not say."""
    spacing = _floats(_from_group(measures, ds, "PixelSpacing"), "PixelSpacing", 2) or (1.0, 1.0)
    if min(spacing) <= 0:
        raise MalformedTagError(f"PixelSpacing ({_shown(spacing)}) holds a spacing that is not positive")
    return spacing


def _acquisition_number(ds: pydicom.Dataset, frame: int | None) -> int | None:
    content = _functional_group(ds, frame, "FrameContentSequence")
    if content is not None and content.get("FrameAcquisitionNumber") is not None:
        return _int_or_none(content.FrameAcquisitionNumber)
    return _int_or_none(ds.get("AcquisitionNumber"))


def _plane(file: FileHeader, ds: pydicom.Dataset, frame: int | None) -> SliceHeader:
    """One plane's geometry and rescale, from its frame's functional groups, the shared ones or the
    top-level attributes, in that order."""
    orientation = _orientation(ds, frame)
    measures = _functional_group(ds, frame, "PixelMeasuresSequence")
    thickness = _from_group(measures, ds, "SliceThickness")
    rescale = _functional_group(ds, frame, "PixelValueTransformationSequence")
    return SliceHeader(
        file=file,
        frame=frame,
        row_cosines=orientation[:3],  # type: ignore[arg-type]
        column_cosines=orientation[3:6],  # type: ignore[arg-type]
        position_mm=_position(ds, frame),  # type: ignore[arg-type]
        pixel_spacing_mm=_pixel_spacing(measures, ds),  # type: ignore[arg-type]
        thickness_mm=_number(thickness) or None,
        nominal_spacing_mm=nominal_spacing(_from_group(measures, ds, "SpacingBetweenSlices"), thickness),
        slope=_number(_from_group(rescale, ds, "RescaleSlope")) or 1.0,
        intercept=_number(_from_group(rescale, ds, "RescaleIntercept")),
        instance_number=_int_or_none(ds.get("InstanceNumber")) or 0,
        acquisition_number=_acquisition_number(ds, frame),
    )


@dataclass(frozen=True)
class HeaderScan:
    """Image planes of some files, the count of DICOM files among them, the damaged ones and those
    whose header holds a malformed value (with what is wrong with it)."""

    headers: list[SliceHeader]
    n_dicom: int
    damaged: list[Path]
    malformed: dict[Path, str]


def read_headers(paths: Iterable[Path]) -> HeaderScan:
    """Image planes of the files in ``paths``; files that look like DICOM but cannot be parsed (cut
    off, damaged), and files whose geometry tags are malformed, are set aside so that one bad file
    does not stop the rest, and macOS '._' companions are passed over silently."""
    headers: list[SliceHeader] = []
    damaged: list[Path] = []
    malformed: dict[Path, str] = {}
    n_dicom = 0
    for path in paths:
        if is_appledouble(path):
            continue
        ds = read_dataset(path, stop_before_pixels=True)
        if ds is None:
            if looks_like_dicom(path):
                damaged.append(path)
            continue
        n_dicom += 1
        try:
            headers += slice_headers(path, ds)
        except UNREADABLE:  # a value pydicom parses only when it is used: one byte of a US, an unknown VR
            damaged.append(path)
        except MalformedTagError as exc:
            malformed[path] = str(exc)
    return HeaderScan(headers, n_dicom, damaged, malformed)


def _is_candidate(name: str) -> bool:
    return name.upper() != "DICOMDIR" and not name.startswith("._")


def scan_folder(folder: Path) -> HeaderScan:
    """Image planes of the files under ``folder`` (recursively); see ``read_headers``."""
    paths = [
        Path(root) / name
        for root, _dirs, files in os.walk(folder)
        for name in sorted(files)
        if _is_candidate(name)
    ]
    return read_headers(paths)


def slices_beside(path: Path, series_uid: str) -> int:
    """Slices (frames) of series ``series_uid`` in the other files of ``path``'s folder (not below it),
    from a few header tags of each."""
    count = 0
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if entry.name == path.name or not _is_candidate(entry.name) or not entry.is_file():
                continue
            ds = read_dataset(Path(entry.path), stop_before_pixels=True, specific_tags=_SIBLING_TAGS)
            if ds is not None and "Rows" in ds and str(ds.get("SeriesInstanceUID", "")) == series_uid:
                count += _int_or_none(ds.get("NumberOfFrames")) or 1
    return count
