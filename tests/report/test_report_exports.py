"""Report files: JSON shape and content, appendable CSV, PDF text, no-overwrite and atomic writes."""

from __future__ import annotations

import csv
import json
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_chsnet.errors import InvalidVolumeError, OutputExistsError
from napari_chsnet.inference.run_info import case_name
from napari_chsnet.io.checksums import file_sha256
from napari_chsnet.report import (
    CSV_COLUMNS,
    DISCLAIMER,
    ReportFormatError,
    RunInfo,
    append_report_csv,
    build_report_json,
    compute_severity,
    software_versions,
    write_report_json,
    write_report_pdf,
)
from napari_chsnet.report import exports as exports_module
from napari_chsnet.report.anonymize import anonymous_case_name, identifying_values, scrub_identifiers

pypdf = pytest.importorskip("pypdf", reason="PDF text checks need pypdf (testing extra)")


def make_report(case, anonymize=False, input_path="/data/scans/case_0042.nii.gz"):
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    run = RunInfo(
        model="chsnet",
        device="cpu",
        runtime_s=12.5,
        weights_sha256="0" * 64,
        input=input_path,
        timestamp="2024-01-02T03:04:05+00:00",
        stage_timings_s={"prepare": 0.5, "predict": 11.0},
    )
    return build_report_json(severity, run, case.ct.metadata, anonymize=anonymize)


def test_report_json_has_the_stable_keys(synthetic_case):
    report = make_report(synthetic_case)
    for key in (
        "lungs",
        "overall",
        "min_lesion_ml",
        "model",
        "device",
        "runtime_s",
        "weights_sha256",
        "lung_weights_sha256",
        "software",
        "input",
        "study",
        "disclaimer",
        "timestamp",
        "exported_at",
        "stage_timings_s",
        "case",
    ):
        assert key in report, key
    assert set(report["lungs"]["right"]) == {
        "volume_ml",
        "infected_ml",
        "involvement_pct",
        "grade",
        "measured",
    }
    assert report["lungs"]["right"]["measured"] is True and report["overall"]["measured"] is True
    assert report["overall"]["grade"] in {"CT-1", "CT-2", "CT-3", "CT-4"}
    assert report["case"] == "case_0042"
    assert report["stage_timings_s"] == {"prepare": 0.5, "predict": 11.0}
    assert report["study"]["PatientName"] == "DOE JANE"  # DICOM PN carets become spaces
    assert report["disclaimer"] == DISCLAIMER
    assert DISCLAIMER.startswith("Research tool — not for clinical diagnosis")
    assert set(report["software"]) == {"python", "torch", "numpy", "SimpleITK", "napari_chsnet"}
    assert report["software"]["numpy"] == np.__version__


# A DICOM series' study fields, as the reader gives them, under a folder named after the patient.
DICOM_STUDY = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-0042",
    "PatientBirthDate": "19610203",
    "PatientSex": "F",
    "PatientAge": "059Y",
    "StudyDate": "20200415",
    "StudyTime": "101500",
    "StudyDescription": "CT CHEST DOE FOLLOW-UP",
    "AccessionNumber": "ACC-77",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1111",
    "SeriesDescription": "LUNG 1.0",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2222",
    "Modality": "CT",
    "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "SOMATOM",
    "InstitutionName": "St Elsewhere Hospital",
    "SliceThickness": 1.0,
    "KVP": 120,
    "ConvolutionKernel": "B70f",
    "warnings": [],
}
PATIENT_FOLDER = "/data/DOE_JANE_1961/CT_chest_20200415"


def make_dicom_report(case, anonymize):
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, input=PATIENT_FOLDER)
    return build_report_json(severity, run, DICOM_STUDY, anonymize=anonymize)


def test_anonymize_removes_identifying_fields_and_keeps_study(synthetic_case):
    report = make_report(synthetic_case, anonymize=True)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate"):
        assert key not in report["study"]
    assert report["study"] == {"PatientSex": "F", "Modality": "CT"}
    assert report["anonymized"] is True
    assert "DOE" not in json.dumps(report)


def test_anonymize_drops_uids_dates_descriptions_institution_and_the_input_path(synthetic_case, tmp_path):
    """DICOM PS3.15 Basic Profile: the UIDs, dates, free-text descriptions and institution go too;
    the input path (folder names often hold the patient's name) becomes the case name."""
    plain = make_dicom_report(synthetic_case, anonymize=False)
    assert plain["study"]["StudyInstanceUID"] and plain["input"] == PATIENT_FOLDER  # there to remove

    report = make_dicom_report(synthetic_case, anonymize=True)
    assert report["study"] == {
        "PatientSex": "F",
        "PatientAge": "059Y",
        "Modality": "CT",
        "Manufacturer": "SIEMENS",
        "ManufacturerModelName": "SOMATOM",
        "SliceThickness": 1.0,
        "KVP": 120,
        "ConvolutionKernel": "B70f",
    }
    assert report["case"] == report["input"] == "CT_chest_20200415"
    row = next(csv.DictReader(append_report_csv(tmp_path / "r.csv", report).open(encoding="utf-8")))
    assert tuple(row) == CSV_COLUMNS and row["input"] == "CT_chest_20200415"
    pdf = pdf_text(write_report_pdf(tmp_path / "r.pdf", report, synthetic_case.ct, synthetic_case.lungs,
                                    synthetic_case.infection, None))  # fmt: skip
    for text in (json.dumps(report), (tmp_path / "r.csv").read_text(encoding="utf-8"), pdf):
        for identifying in ("DOE", "PID-0042", "19610203", "3680043", "Elsewhere", "/data/"):
            assert identifying not in text, identifying


@pytest.mark.parametrize("folder", ["DOE^JANE_12345", "doe_jane", "scan_PID-0042"])
def test_an_anonymised_case_name_holding_the_patients_name_or_id_is_replaced(
    synthetic_case, tmp_path, folder
):
    """A folder named after the patient kept the name in the JSON, the CSV and the PDF's title."""
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, input=f"/data/{folder}", case=folder)
    report = build_report_json(severity, run, DICOM_STUDY, anonymize=True)
    assert re.fullmatch(r"case-[0-9a-f]{12}", report["case"]) and report["input"] == report["case"]
    assert any("holds the patient's name or ID" in w for w in report["warnings"])
    path = write_report_pdf(
        tmp_path / "r.pdf", report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, None
    )
    title = pypdf.PdfReader(str(path)).metadata.title
    for text in (json.dumps(report), pdf_text(path), title):
        assert folder.casefold() not in text.casefold() and "doe" not in text.casefold()
    plain = build_report_json(severity, run, DICOM_STUDY, anonymize=False)
    assert plain["case"] == folder  # only an anonymised report renames it


@pytest.mark.parametrize(
    ("case", "name", "renamed"),
    [("WU_LI", "Wu^Li", True), ("xu_yi_ct", "Xu^Yi", True), ("planning_scan_3", "Smith^Ann", False),
     ("case_0042", "Doe^Jane", False), ("MÜLLER_CT", "Müller^Hans", True), ("OBRIEN_chest", "O'Brien^Sean", True),
     ("smith-jones_ct", "Smith-Jones^Ann", True), ("o_scan", "O'Brien^Sean", False)],
)  # fmt: skip
def test_the_case_name_rule_matches_whole_name_words(case, name, renamed):
    """Two-letter names were missed (a 3-character minimum), 'ann' was found inside 'planning'."""
    identity = {"PatientName": name, "PatientID": "X-991", "SeriesInstanceUID": "1.2.3.4.5"}
    shown, warning = anonymous_case_name(case, identity)
    assert (shown != case) == renamed == (warning is not None)
    if renamed:  # the same scan gets the same name; another series' key another one
        assert anonymous_case_name(case, identity)[0] == shown
        assert anonymous_case_name(case, {**identity, "SeriesInstanceUID": "1.2.3.4.6"})[0] != shown


def test_an_anonymised_report_keeps_its_warnings_without_identifying_details(synthetic_case):
    """The series-choice warning quoted descriptions, study dates and UIDs into the anonymised JSON,
    CSV and PDF (the study fields themselves were dropped)."""
    choice = (
        'found 2 image series; opened series 3 "DOE JANE chest" (79 slices, 1 mm thick, study of 2024-01-02), '
        'not series 1.2.826.0.1.3680043.8.498.777 "Lung 5.0" (40 slices, study of 2023-05-06)'
    )
    metadata = {**DICOM_STUDY, "warnings": [choice, "input /data/DOE_JANE_1961/CT_chest_20200415 read as HU"]}
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, input=PATIENT_FOLDER)
    plain = build_report_json(severity, run, metadata, anonymize=False)
    assert choice in plain["warnings"]
    report = build_report_json(severity, run, metadata, anonymize=True)
    text = json.dumps(report["warnings"])
    for identifying in ("DOE", "JANE", "2024-01-02", "2023-05-06", "3680043", "Lung 5.0", "1961", "20200415"):
        assert identifying not in text, identifying
    assert "found 2 image series; opened series 3 (79 slices" in text  # the warning itself stays


def test_scrubbing_takes_whole_words_and_real_dates_only():
    """'NaN' lost 'Na' (PatientName Li^Na), '512' lost '12' (PatientID 12), a harmless case name
    'ct' was cut out of 'correction', and a voxel count read as a date."""
    values = identifying_values({"PatientName": "Li^Na", "PatientID": "12"}, ["PatientName", "PatientID"])
    text = (
        "holds NaN values (12 of 20241302 voxels) in a 512 x 512 grid; Li Na's scan of 2024-01-02, 20231231"
    )
    assert scrub_identifiers(text, values) == (
        "holds NaN values ([removed] of 20241302 voxels) in a 512 x 512 grid; [removed]'s scan of [removed], [removed]"
    )
    quoted = 'opened series 3 (79 slices), not series 4 "JANE" chest" (40 slices)'
    assert scrub_identifiers(quoted) == "opened series 3 (79 slices), not series 4 (40 slices)"


def test_an_anonymised_report_leaves_a_harmless_case_name_in_its_warnings(synthetic_case):
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, input="/data/ct", case="ct")
    note = "shown without shear correction; check the lungs layer"
    report = build_report_json(severity, run, {**DICOM_STUDY, "warnings": [note]}, anonymize=True)
    assert report["case"] == "ct" and note in report["warnings"]


def test_software_versions_does_not_import_heavy_packages():
    import sys

    had_torch = "torch" in sys.modules
    versions = software_versions()
    assert versions["python"].count(".") == 2
    assert ("torch" in sys.modules) == had_torch


def test_file_sha256_and_case_name(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"abc")
    assert file_sha256(weights) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert case_name("/x/y/scan_7.nii.gz") == "scan_7"
    assert case_name("/x/dicom_folder/") == "dicom_folder"


def test_write_json_round_trips_and_refuses_overwrite(synthetic_case, tmp_path):
    report = make_report(synthetic_case)
    target = tmp_path / "new" / "dir" / "report.json"
    write_report_json(target, report)
    assert json.loads(target.read_text(encoding="utf-8")) == report
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_report_json(target, {"other": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == report
    write_report_json(target, {"other": 1}, overwrite=True)
    assert json.loads(target.read_text(encoding="utf-8")) == {"other": 1}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temporary left


def test_failed_json_write_leaves_no_file(tmp_path):
    target = tmp_path / "report.json"
    with pytest.raises(ValueError):
        write_report_json(target, {"bad": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    write_report_json(target, {"old": 1})

    def crash(path, text):
        def write(temporary):
            Path(temporary).write_text(text[: len(text) // 2])
            raise RuntimeError("disk full")

        exports_module.atomic_write(path, write)

    monkeypatch.setattr(exports_module, "_write_text", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report_json(target, {"new": 2}, overwrite=True)
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_csv_appends_across_runs_with_one_header(synthetic_case, tmp_path):
    target = tmp_path / "out" / "report.csv"
    first = make_report(synthetic_case, input_path="/scans/a.nii.gz")
    second = make_report(synthetic_case, input_path="/scans/b_dicom")
    append_report_csv(target, first)
    append_report_csv(target, second)
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == list(CSV_COLUMNS)
    assert len(lines) == 3
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["case"] for r in rows] == ["a", "b_dicom"]
    assert rows[0]["right_grade"] == first["lungs"]["right"]["grade"]
    assert float(rows[0]["right_volume_ml"]) == pytest.approx(first["lungs"]["right"]["volume_ml"], abs=1e-3)
    assert rows[1]["overall_grade"] == second["overall"]["grade"]
    assert rows[0]["model"] == "chsnet" and rows[0]["timestamp"] == "2024-01-02T03:04:05+00:00"


def test_a_case_written_again_replaces_its_rows_in_place(synthetic_case, tmp_path, monkeypatch):
    """``chsnet segment --overwrite``: the earlier rows describe files that no longer exist."""
    target = tmp_path / "report.csv"
    base = make_report(synthetic_case, input_path="/scans/a.nii.gz")
    for case, stamp in (("a", "1"), ("b, with comma", "1"), ("a", "2"), ("c", "1")):
        append_report_csv(target, dict(base, case=case, timestamp=stamp))
    before = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [(r["case"], r["timestamp"]) for r in before] == [
        ("a", "1"),
        ("b, with comma", "1"),
        ("a", "2"),
        ("c", "1"),
    ]
    written = []
    real_write = exports_module._write_text
    monkeypatch.setattr(
        exports_module, "_write_text", lambda path, text: written.append(path) or real_write(path, text)
    )

    append_report_csv(target, dict(base, case="a", timestamp="3", model="rdunet"), replace_case=True)
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [(r["case"], r["timestamp"]) for r in rows] == [("a", "3"), ("b, with comma", "1"), ("c", "1")]
    assert rows[0]["model"] == "rdunet" and rows[1:] == [before[1], before[3]]
    assert written == [target]  # whole, through the atomic writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]

    append_report_csv(target, dict(base, case="d", timestamp="1"), replace_case=True)  # a new case: appended
    append_report_csv(target, dict(base, case="c", timestamp="2"))  # without replace_case: appended as before
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [(r["case"], r["timestamp"]) for r in rows] == [
        ("a", "3"), ("b, with comma", "1"), ("c", "1"), ("d", "1"), ("c", "2"),
    ]  # fmt: skip
    assert target.read_text(encoding="utf-8").splitlines()[0] == ",".join(CSV_COLUMNS)


def test_replacing_a_case_row_keeps_a_csv_with_other_columns_untouched(synthetic_case, tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("patient,volume\np1,3\n", encoding="utf-8")
    with pytest.raises(ReportFormatError, match="new CSV"):
        append_report_csv(target, make_report(synthetic_case), replace_case=True)
    assert target.read_text(encoding="utf-8") == "patient,volume\np1,3\n"


@pytest.mark.skipif(sys.platform == "win32", reason="no file lock on Windows")
def test_concurrent_csv_appends_keep_every_row(synthetic_case, tmp_path, monkeypatch):
    # Two runs appending into one folder: without a lock each rewrites the file it read, dropping rows.
    target, report = tmp_path / "report.csv", make_report(synthetic_case, input_path="/scans/a.nii.gz")
    real_write = exports_module._write_text

    def slow_write(path, text):
        time.sleep(0.002)  # widen the read-to-write window so an unlocked race shows every time
        real_write(path, text)

    monkeypatch.setattr(exports_module, "_write_text", slow_write)

    def append_many(tag):
        for i in range(10):
            append_report_csv(target, dict(report, case=f"{tag}{i}"))

    threads = [threading.Thread(target=append_many, args=(tag,)) for tag in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list(csv.DictReader(target.open(encoding="utf-8")))) == 20


def test_report_says_when_it_was_written_besides_the_run_s_time(synthetic_case, tmp_path):
    """A report exported after corrections gave only the model run's time. ``timestamp`` stays the
    run's (when the masks were segmented); ``exported_at`` is when the report was written, now by
    default, timezone-aware ISO 8601 like ``timestamp``."""
    from datetime import datetime, timedelta, timezone

    before = datetime.now(timezone.utc).replace(microsecond=0)
    report = make_report(synthetic_case)
    after = datetime.now(timezone.utc)
    assert report["timestamp"] == "2024-01-02T03:04:05+00:00"
    written = datetime.fromisoformat(report["exported_at"])
    assert written.utcoffset() == timedelta(0) and before <= written <= after
    target = write_report_json(tmp_path / "report.json", report)
    assert json.loads(target.read_text(encoding="utf-8"))["exported_at"] == report["exported_at"]
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    given = build_report_json(
        severity, RunInfo("chsnet", "cpu", 1.0), {}, exported_at="2024-01-02T12:20:33+01:00"
    )
    assert given["exported_at"] == "2024-01-02T12:20:33+01:00"


def test_the_csv_keeps_its_columns_and_appends_to_a_current_release_csv(synthetic_case, tmp_path):
    """The CSV header is checked exactly against ``CSV_COLUMNS`` before appending: an
    ``exported_at`` column would refuse every CSV the current release wrote, so the CSV keeps one
    time, ``timestamp``, the run's (``exported_at`` is in the JSON and the PDF)."""
    current_release_header = (
        "case,input,timestamp,model,device,right_volume_ml,right_infected_ml,right_involvement_pct,"
        "right_grade,left_volume_ml,left_infected_ml,left_involvement_pct,left_grade,overall_volume_ml,"
        "overall_infected_ml,overall_involvement_pct,overall_grade,min_lesion_ml,threshold,"
        "mirror_averaging,spacing_x_mm,spacing_y_mm,spacing_z_mm,input_intensity,runtime_s,"
        "weights_sha256,lung_weights_sha256,n_warnings,warnings,status,error"
    )
    assert ",".join(CSV_COLUMNS) == current_release_header
    target = tmp_path / "report.csv"
    target.write_text(current_release_header + "\n", encoding="utf-8")
    report = make_report(synthetic_case)
    append_report_csv(target, report)
    (row,) = csv.DictReader(target.open(encoding="utf-8"))
    assert row["timestamp"] == report["timestamp"] == "2024-01-02T03:04:05+00:00"


def test_csv_with_other_header_is_refused_untouched(synthetic_case, tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("patient,volume\np1,3\n", encoding="utf-8")
    with pytest.raises(ReportFormatError, match="new CSV"):
        append_report_csv(target, make_report(synthetic_case))
    assert target.read_text(encoding="utf-8") == "patient,volume\np1,3\n"


def test_removed_islands_and_outside_infection_reach_json_csv_and_pdf(synthetic_case, tmp_path):
    """Known answer on the 4 x 4 x 6 mm synthetic case (0.096 mL voxels): two one-voxel islands
    in the lungs (below 0.1 mL, removed: 0.192 mL) and three voxels of infection outside them."""
    infection = synthetic_case.infection.copy()
    lungs = synthetic_case.lungs
    right, left = np.argwhere(lungs == 1)[0], np.argwhere(lungs == 2)[-1]  # lung edges, far from the lesions
    assert infection[tuple(right)] == 0 and infection[tuple(left)] == 0
    infection[tuple(right)] = infection[tuple(left)] = 1
    infection[20, 32, 38:41] = 1  # in the mediastinum, between the lungs
    assert not (lungs[20, 32, 38:41]).any()
    severity = compute_severity(lungs, infection, synthetic_case.ct.geometry)
    report = build_report_json(
        severity, RunInfo(model="chsnet", device="cpu", runtime_s=1.0, input="x.nii.gz")
    )
    assert report["small_lesions_removed"] == {"components": 2, "volume_ml": 0.192}
    assert report["infection_outside_lungs_ml"] == 0.288
    assert not any("outside both lung masks" in w for w in report["warnings"])  # under 5 % of the infection

    # the CSV keeps its columns (batches append to files earlier versions wrote)
    row = next(csv.DictReader(append_report_csv(tmp_path / "r.csv", report).open()))
    assert (
        tuple(row) == CSV_COLUMNS and row["overall_infected_ml"] == f"{report['overall']['infected_ml']:.3f}"
    )

    pdf = write_report_pdf(tmp_path / "r.pdf", report, synthetic_case.ct, lungs, infection)
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)
    assert "Not counted: 2 infection islands < 0.1 mL (0.19 mL) and 0.29 mL of infection outside" in text


def test_csv_on_empty_file_writes_header(synthetic_case, tmp_path):
    target = tmp_path / "report.csv"
    target.touch()
    append_report_csv(target, make_report(synthetic_case))
    assert target.read_text(encoding="utf-8").splitlines()[0] == ",".join(CSV_COLUMNS)


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)


@pytest.fixture(scope="module")
def written_pdf(synthetic_case, tmp_path_factory):
    report = make_report(synthetic_case)
    path = tmp_path_factory.mktemp("pdf") / "sub" / "report.pdf"
    write_report_pdf(
        path,
        report,
        synthetic_case.ct,
        synthetic_case.lungs,
        synthetic_case.infection,
        synthetic_case.probability,
    )
    return path, report


def test_pdf_is_a_pdf_with_grades_table_and_disclaimer(written_pdf):
    path, report = written_pdf
    assert path.read_bytes()[:5] == b"%PDF-"
    text = pdf_text(path)
    assert len(pypdf.PdfReader(str(path)).pages) == 2
    assert "Research tool — not for clinical diagnosis" in text
    for side in ("right", "left"):
        assert report["lungs"][side]["grade"] in text
    assert f"{report['lungs']['right']['volume_ml']:,.1f}" in text
    assert "Overall severity" in text and report["overall"]["grade"] in text
    assert "DOE JANE" in text and "PID-0042" in text
    assert "Axial key slices" in text and "Coronal view" in text


def test_pdf_refuses_overwrite_unless_asked(written_pdf, synthetic_case):
    path, report = written_pdf
    before = path.read_bytes()
    args = (report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, None)
    with pytest.raises(OutputExistsError):
        write_report_pdf(path, *args)
    assert path.read_bytes() == before


def test_anonymised_pdf_has_no_patient_identity(synthetic_case, tmp_path):
    report = make_report(synthetic_case, anonymize=True)
    path = write_report_pdf(
        tmp_path / "anon.pdf", report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, None
    )
    text = pdf_text(path)
    assert "anonymised" in text
    assert "DOE" not in text and "PID-0042" not in text and "19610203" not in text
    assert "probability map" in text  # no probability given: the panel says so


def test_pdf_rejects_masks_off_the_ct_grid(synthetic_case, tmp_path):
    report = make_report(synthetic_case)
    with pytest.raises(InvalidVolumeError, match="CT's grid"):
        write_report_pdf(
            tmp_path / "r.pdf",
            report,
            synthetic_case.ct,
            synthetic_case.lungs[:-1],
            synthetic_case.infection[:-1],
            None,
        )
    assert not (tmp_path / "r.pdf").exists()


def test_pdf_of_an_already_clean_infection_skips_the_second_cleaning(synthetic_case, tmp_path, monkeypatch):
    """The CLI passes the pipeline's cleaned mask with infection_is_clean=True: no second pass."""
    from napari_chsnet.report import clean_infection, rendering

    case = synthetic_case
    cleaned = clean_infection(case.lungs, case.infection, case.ct.geometry).mask.view(np.uint8)
    monkeypatch.setattr(rendering, "clean_infection", lambda *a, **k: pytest.fail("cleaned twice"))
    path = write_report_pdf(
        tmp_path / "r.pdf", make_report(case), case.ct, case.lungs, cleaned, None, infection_is_clean=True
    )
    assert "Axial key slices" in pdf_text(path)


def test_csv_grade_cells_say_not_measured_for_a_lung_too_small_to_grade():
    """The PDF, tables and CLI said "not measured" while report.csv held CT-1 in every grade cell (a
    two-slice slab): a cohort sheet counted the case as graded."""
    from napari_chsnet.io.volume import Geometry
    from napari_chsnet.report.severity import compute_severity

    lungs = np.zeros((10, 10, 24), dtype=np.uint8)
    lungs[:, :, :10], lungs[:2, :2, 14:16] = 1, 2  # a 2000 mL right lung, a 16 mL left fragment
    infection = np.zeros_like(lungs)
    infection[:1, :, :10], infection[:2, :2, 14:16] = 1, 1
    fragment = compute_severity(lungs, infection, Geometry(spacing_mm=(1.0, 1.0, 2000.0)), min_lesion_ml=0.0)
    row = exports_module.report_csv_row(fragment.to_dict())
    assert (row["right_grade"], row["left_grade"], row["overall_grade"]) == ("CT-1", "not measured", "CT-1")
    slab = compute_severity(lungs, infection, Geometry(spacing_mm=(1.0, 1.0, 1.0)), min_lesion_ml=0.0)
    row = exports_module.report_csv_row(slab.to_dict())
    assert row["overall_grade"] == row["right_grade"] == "not measured"
    assert float(row["right_involvement_pct"]) == pytest.approx(10.0)  # the figures stay


@pytest.mark.parametrize("kind", ["json", "pdf"])
def test_a_folder_given_as_the_report_path_is_refused_even_with_overwrite(synthetic_case, tmp_path, kind):
    """``--overwrite`` replaces a report file, never a folder: the folder and its files stay."""
    report = make_report(synthetic_case)
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept", encoding="utf-8")
    with pytest.raises(OutputExistsError, match=r"reports is a folder; give a file path for the report"):
        if kind == "json":
            write_report_json(folder, report, overwrite=True)
        else:
            case = synthetic_case
            write_report_pdf(folder, report, case.ct, case.lungs, case.infection, overwrite=True)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert (folder / "keep.txt").read_text(encoding="utf-8") == "kept"


@pytest.mark.parametrize("mirror_averaging", [True, False])
def test_the_csv_writes_mirror_averaging_as_true_or_false(synthetic_case, tmp_path, mirror_averaging):
    """docs/report.md: the ``mirror_averaging`` cell reads ``true``/``false``, as in the JSON."""
    report = make_report(synthetic_case)
    report["inference_options"] = {
        "threshold": 0.5,
        "min_lesion_ml": 0.1,
        "mirror_averaging": mirror_averaging,
    }
    target = tmp_path / "report.csv"
    append_report_csv(target, report)
    (row,) = csv.DictReader(target.open(encoding="utf-8"))
    assert row["mirror_averaging"] == ("true" if mirror_averaging else "false")
    assert row["threshold"] == "0.500"
