"""Known answers for the anonymised manifest (``report/manifest.py``, docs/report.md "Anonymize"):
which study fields it drops, and that a case name it had to replace is gone from its warnings too."""

from __future__ import annotations

import json
import re

from napari_chsnet.report import RunInfo, build_report_json, compute_severity
from napari_chsnet.report.manifest import IDENTIFYING_FIELDS, STUDY_FIELDS, study_fields

# docs/report.md, "Anonymize": the fields DICOM PS3.15's Basic Profile (Annex E) removes or blanks and
# that identify the patient or lead straight back to them.
DOCUMENTED_IDENTIFYING_FIELDS = {
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
    "SeriesDescription", "InstitutionName",
}  # fmt: skip


def test_the_identifying_fields_are_the_documented_ones():
    # IDENTIFYING_FIELDS is the public list the docs name; OtherPatientIDs (other IDs of the same
    # patient) is one of them though no study field copies it today, so a caller filtering its
    # own metadata with the constant drops it too.
    assert set(IDENTIFYING_FIELDS) == DOCUMENTED_IDENTIFYING_FIELDS
    kept = {"PatientSex", "PatientAge", "Modality", "Manufacturer", "ManufacturerModelName", "SliceThickness",
            "KVP", "ConvolutionKernel"}  # fmt: skip
    assert set(STUDY_FIELDS) - IDENTIFYING_FIELDS == kept
    metadata = {field: "X-1" for field in (*DOCUMENTED_IDENTIFYING_FIELDS, *kept)}
    assert set(study_fields(metadata, anonymize=True)) == kept


def test_a_replaced_case_name_is_taken_out_of_the_warnings_too(synthetic_case):
    # "WU_LI_scan" holds the words of PatientName Wu^Li, so the case is renamed. A reader warning
    # quoting the file name must not show it either: the name's words alone ("Wu", "Li") are not
    # whole words there ("_" joins them), so only the original case name, scrubbed as a whole, takes
    # it out; the rest of the warning stays.
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    metadata = {
        "PatientName": "Wu^Li",
        "PatientID": "X-991",
        "SeriesInstanceUID": "1.2.3.4.5",
        "warnings": ["WU_LI_scan.nii.gz has no voxel spacing; 1 mm assumed"],
    }
    run = RunInfo(
        model="chsnet", device="cpu", runtime_s=1.0, input="/data/WU_LI_scan.nii.gz", case="WU_LI_scan"
    )
    report = build_report_json(severity, run, metadata, anonymize=True)
    assert re.fullmatch(r"case-[0-9a-f]{12}", report["case"])
    assert "[removed].nii.gz has no voxel spacing; 1 mm assumed" in report["warnings"]
    assert "wu_li" not in json.dumps(report).casefold()
