"""The CSV row's spacing columns name the right axes for an anisotropic grid."""

from __future__ import annotations

import csv

import pytest

from napari_chsnet.report import RunInfo, append_report_csv, build_report_json, compute_severity

from .conftest import make_synthetic_case


def test_csv_spacing_columns_hold_x_y_z_of_an_anisotropic_grid(tmp_path):
    # Three different spacings, x 0.7 mm, y 0.8 mm, z 2.5 mm, so any swap of the columns shows.
    case = make_synthetic_case(shape=(12, 24, 32), spacing_mm=(0.7, 0.8, 2.5))
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, weights_sha256="0" * 64,
                  input="/data/case.nii.gz", timestamp="2024-01-02T03:04:05+00:00")  # fmt: skip
    report = build_report_json(severity, run, case.ct.metadata, geometry=case.ct.geometry)
    assert report["voxel_spacing_mm"] == pytest.approx([0.7, 0.8, 2.5])
    row = next(csv.DictReader(append_report_csv(tmp_path / "r.csv", report).open(encoding="utf-8")))
    assert float(row["spacing_x_mm"]) == pytest.approx(0.7)
    assert float(row["spacing_y_mm"]) == pytest.approx(0.8)
    assert float(row["spacing_z_mm"]) == pytest.approx(2.5)
