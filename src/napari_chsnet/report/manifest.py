"""The run manifest and the full report dictionary written as ``report.json``.

``build_report_json`` lays the run facts (``inference.run_info.RunInfo``: model, weights checksum,
device, timings, software versions) and the study fields over ``SeverityReport.to_dict()``. Nothing
here imports torch or matplotlib.
"""

from __future__ import annotations

import re
from typing import Any

from napari_chsnet.inference.run_info import RunInfo, case_name, utc_timestamp
from napari_chsnet.io.hounsfield import HU, INTENSITY_KEY
from napari_chsnet.io.volume import Geometry
from napari_chsnet.json_numbers import json_float
from napari_chsnet.report.anonymize import anonymous_case_name, identifying_values, scrub_identifiers
from napari_chsnet.report.severity import SeverityReport

REPORT_FORMAT = "napari-chsnet severity report"
REPORT_FORMAT_VERSION = 1

DISCLAIMER = (
    "Research tool — not for clinical diagnosis. Volumes and grades are computed automatically by a "
    "segmentation model and have not been reviewed by a radiologist."
)

# Study fields copied from CTVolume.metadata (DICOM keywords), in report order.
STUDY_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesDescription",
    "SeriesInstanceUID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "SliceThickness",
    "KVP",
    "ConvolutionKernel",
)
# Removed by anonymize: the study fields that DICOM PS3.15's Basic Application Level
# Confidentiality Profile removes or blanks (Annex E) and that identify the person or link straight
# back to them or to their record: names and IDs, the UIDs (a PACS query away from the patient),
# dates and times (with the institution, the scan), free-text descriptions (may hold names).
# Patient sex and age stay, as the profile's Retain Patient Characteristics Option keeps them: lung
# volumes are read against them. Acquisition fields (modality, scanner model, kernel...) stay.
IDENTIFYING_FIELDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "OtherPatientIDs",
        "AccessionNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "SeriesDescription",
        "InstitutionName",
    }
)


def _study_value(value: Any) -> Any:
    """Plain-JSON form of a metadata value (pydicom PersonName, MultiValue, numbers...)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_study_value(v) for v in value]
    return str(value)


def study_fields(metadata: dict[str, Any] | None, anonymize: bool) -> dict[str, Any]:
    """The study/patient fields present in ``metadata`` (DICOM keywords), minus identifying ones
    when ``anonymize`` is set. Fields stored under ``metadata["dicom"]`` are found too."""
    metadata = metadata or {}
    sources = [metadata]
    if isinstance(metadata.get("dicom"), dict):
        sources.append(metadata["dicom"])
    study: dict[str, Any] = {}
    for key in STUDY_FIELDS:
        if anonymize and key in IDENTIFYING_FIELDS:
            continue
        for source in sources:
            value = source.get(key)
            if value not in (None, ""):
                study[key] = _study_value(value)
                break
    return study


def _normalise_patient_name(name: str) -> str:
    # DICOM PN uses ^ between family and given names.
    return re.sub(r"\^+", " ", name).strip()


def build_report_json(
    severity: SeverityReport,
    run_info: RunInfo,
    metadata: dict[str, Any] | None = None,
    anonymize: bool = False,
    geometry: Geometry | None = None,
    exported_at: str | None = None,
) -> dict[str, Any]:
    """The complete ``report.json`` content.

    Args:
        severity: figures from ``compute_severity``.
        run_info: model, device, timings and versions of the run.
        metadata: ``CTVolume.metadata`` (DICOM keywords such as ``PatientName``, ``StudyDate``;
            reader warnings under ``"warnings"``).
        anonymize: drop the identifying study fields (``IDENTIFYING_FIELDS``: names, IDs, UIDs,
            dates, descriptions, institution) and give the case name as ``input`` instead of the
            input's path (folder names often hold the patient's name).
        geometry: the voxel grid the masks were counted on: its spacing goes under
            ``voxel_spacing_mm`` (x, y, z), so that volumes can be checked against the masks.
        exported_at: ISO-8601 time the report is written; now (UTC) by default. ``timestamp``
            stays the run's time (``run_info.timestamp``), when the masks were segmented.

    Returns:
        ``severity.to_dict()`` (``lungs``, ``overall``, ``min_lesion_ml``) plus ``format``,
        ``format_version``, ``case``, ``input``, ``timestamp``, ``exported_at``, ``model``, ``device``,
        ``runtime_s``, ``stage_timings_s``, ``inference_options``, ``weights_sha256``, ``software``,
        ``input_intensity``, ``voxel_spacing_mm``, ``study``, ``anonymized``, ``small_lesions_removed``,
        ``infection_outside_lungs_ml``, ``warnings`` and ``disclaimer``. Plain JSON types only.
    """
    study = study_fields(metadata, anonymize)
    if "PatientName" in study and isinstance(study["PatientName"], str):
        study["PatientName"] = _normalise_patient_name(study["PatientName"])
    reader_warnings = [str(w) for w in (metadata or {}).get("warnings", []) or []]
    case = run_info.case or case_name(run_info.input)
    # each once: a CT layer's spacing warning reaches both its metadata and the severity
    warnings = list(dict.fromkeys([*severity.warnings, *run_info.warnings, *reader_warnings]))
    if anonymize:
        identity = study_fields(metadata, anonymize=False)
        original = case
        case, renamed = anonymous_case_name(case, identity)
        private = [*identifying_values(identity, IDENTIFYING_FIELDS), run_info.input]
        private += [original] if renamed else []  # a harmless case name stays, in warnings too
        warnings = [scrub_identifiers(w, private) for w in warnings] + ([renamed] if renamed else [])
    report = {"format": REPORT_FORMAT, "format_version": REPORT_FORMAT_VERSION}
    report.update(severity.to_dict())
    report.update(
        {
            "case": case,
            "input": case if anonymize else run_info.input,
            "timestamp": run_info.timestamp,  # the run's: when the masks were segmented
            "exported_at": exported_at or utc_timestamp(),  # when this report was written
            "model": run_info.model,
            "device": run_info.device,
            "runtime_s": float(run_info.runtime_s),
            "stage_timings_s": {str(k): float(v) for k, v in run_info.stage_timings_s.items()},
            "inference_options": dict(run_info.inference_options),
            "weights_sha256": run_info.weights_sha256,
            "lung_weights_sha256": run_info.lung_weights_sha256,
            "software": dict(run_info.software),
            # how the scan's stored values were read (io.hounsfield): hu, display8, offset1024, unknown
            "input_intensity": str((metadata or {}).get(INTENSITY_KEY, HU)),
            "voxel_spacing_mm": [float(s) for s in geometry.spacing_mm] if geometry else None,
            "study": study,
            "anonymized": bool(anonymize),
            "small_lesions_removed": {
                "components": severity.removed_components,
                "volume_ml": json_float(severity.removed_ml),
            },
            "infection_outside_lungs_ml": json_float(severity.outside_lungs_ml),
            "warnings": warnings,
            "disclaimer": DISCLAIMER,
        }
    )
    return report
