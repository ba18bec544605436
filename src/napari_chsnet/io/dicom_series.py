"""Choosing the CT series among the image planes of a DICOM folder.

A folder of several patients is refused: the series opened would be one patient's by chance.
Among one patient's series the axial ORIGINAL/PRIMARY CT with the most slices is opened; ties go
to thinner slices, then the lower SeriesNumber, then the UID, never to file names or the order
the file system lists them in. The warning names the opened series and the others by number,
description, slice count and thickness, so that the user can tell whether it is the right one.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.dicom_headers import SliceHeader, format_dicom_date
from napari_chsnet.listing import first_and_more

_AXIAL = np.array([0.0, 0.0, 1.0])
# Multi-frame objects that carry Rows and Columns but no image of the patient's densities.
_NOT_IMAGES = {"SEG": "segmentation (SEG)", "RTDOSE": "dose grid (RTDOSE)"}
# Other series (or patients) named in a warning or error before the rest are counted.
_SERIES_SHOWN = 5


def choose_series(headers: list[SliceHeader], source: str) -> tuple[list[SliceHeader], list[str]]:
    """The best-ranked series of one patient, cleaned of localizers and odd orientations, with
    warnings about the choice."""
    images = _images(headers, source)
    _check_one_patient(images, source)
    warnings: list[str] = []
    by_series: dict[str, list[SliceHeader]] = {}
    for header in images:
        if not header.is_localizer:
            by_series.setdefault(header.series_uid, []).append(header)
    if not by_series:
        raise InvalidVolumeError(
            f"{source} holds only localizer/scout images, no CT series; select the folder of the axial CT series."
        )
    for uid, series in by_series.items():
        kept = _majority_orientation(series)
        if len(kept) < len(series):
            warnings.append(
                f"dropped {len(series) - len(kept)} slice(s) of series {uid} whose orientation differs from the rest (localizer-like)"
            )
        by_series[uid] = kept
    ranked = sorted(by_series.values(), key=rank)
    chosen = ranked[0]
    if len(ranked) > 1:
        warnings.append(_choice_warning(ranked))
    return chosen, warnings + _kind_warnings(chosen)


def _images(headers: list[SliceHeader], source: str) -> list[SliceHeader]:
    """The planes of image series; a folder of nothing but SEG or RTDOSE objects is refused by kind
    (read as values they would pass for a label map, not be recognised as what they are)."""
    images = [h for h in headers if h.modality not in _NOT_IMAGES]
    if not images:
        kinds = " and ".join(sorted({_NOT_IMAGES[h.modality] for h in headers}))
        raise InvalidVolumeError(
            f"{source} holds only a DICOM {kinds} object, no CT image series; open the folder of the CT series it belongs to."
        )
    return images


def _check_one_patient(headers: list[SliceHeader], source: str) -> None:
    """Refuse image series of several patients (PatientID, or PatientName where IDs are missing)."""
    patients = {h.file.patient_id or h.file.patient_name for h in headers}
    if len(patients) <= 1:
        return
    ids = sorted({h.file.patient_id for h in headers if h.file.patient_id})
    without_id = any(not h.file.patient_id for h in headers)
    named = f"PatientID {first_and_more(ids, _SERIES_SHOWN)}" if ids else "told apart by PatientName"
    if ids and without_id:
        named += ", and some without a PatientID"
    raise InvalidVolumeError(
        f"{source} holds image series of {len(patients)} patients ({named}); give the folder of one patient's series."
    )


def _majority_orientation(series: list[SliceHeader]) -> list[SliceHeader]:
    majority, _count = Counter(h.orientation_key for h in series).most_common(1)[0]
    return [h for h in series if h.orientation_key == majority]


def _is_ct(series: list[SliceHeader]) -> bool:
    return series[0].modality == "CT"


def _is_original_primary(series: list[SliceHeader]) -> bool:
    return series[0].image_type[:2] == ("ORIGINAL", "PRIMARY")


def _is_axial(series: list[SliceHeader]) -> bool:
    normal = series[0].normal
    return abs(float(normal @ _AXIAL)) >= max(abs(normal))


def _thickness(series: list[SliceHeader]) -> float | None:
    return series[0].thickness_mm


def rank(series: list[SliceHeader]) -> tuple[bool, bool, bool, int, float, float, str]:
    """Sort key, best first: CT, ORIGINAL/PRIMARY, axial, more slices (frames count as slices);
    then thinner slices, the lower SeriesNumber and the UID, so that equal series are told apart by
    a fixed rule and not by file names or the order the file system lists them in."""
    first = series[0]
    return (
        not _is_ct(series),
        not _is_original_primary(series),
        not _is_axial(series),
        -len(series),
        _thickness(series) or math.inf,
        first.file.series_number if first.file.series_number is not None else math.inf,
        first.series_uid,
    )


def describe_series(series: list[SliceHeader], with_study_date: bool) -> str:
    """E.g. 'series 2 "Thorax 2.0 Br40" (40 slices, 2 mm thick, study of 2021-01-01)'."""
    file = series[0].file
    name = f"series {file.series_number}" if file.series_number is not None else f"series {file.series_uid}"
    if file.series_description:
        name += f' "{file.series_description}"'
    details = [f"{len(series)} slice{'s' if len(series) > 1 else ''}"]
    thickness = _thickness(series)
    if thickness:
        details.append(f"{thickness:g} mm thick")
    if with_study_date:
        details.append(
            f"study of {format_dicom_date(file.study_date)}" if file.study_date else "study without a date"
        )
    return f"{name} ({', '.join(details)})"


def _choice_warning(ranked: list[list[SliceHeader]]) -> str:
    with_dates = len({series[0].file.study_uid for series in ranked}) > 1
    others = [describe_series(series, with_dates) for series in ranked[1:]]
    shown = first_and_more(others, _SERIES_SHOWN, "; ")
    return (
        f"found {len(ranked)} image series; opened {describe_series(ranked[0], with_dates)}, not {shown}; "
        "to open another, select its files"
    )


def _kind_warnings(chosen: list[SliceHeader]) -> list[str]:
    warnings = []
    if not _is_ct(chosen):
        warnings.append(
            f"modality is {chosen[0].modality or 'missing'}, not CT: values may not be Hounsfield units"
        )
    if not _is_original_primary(chosen):
        image_type = "\\".join(chosen[0].image_type) or "missing"
        warnings.append(f"series is not ORIGINAL/PRIMARY (ImageType {image_type})")
    if not _is_axial(chosen):
        warnings.append("series is not axial; it is shown reoriented to axial slices")
    return warnings
