"""A CT series written as DICOM (one file per axial slice) with the study fields a report shows, for
the command-line and PDF tests; written by tests/dicom_factory.py, the one DICOM test writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dicom_factory import write_series

STUDY_FIELDS = {"PatientName": "Doe^Jane", "PatientID": "P42", "StudyDate": "20200415", "Modality": "CT"}


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 5.0),
    origin_mm: tuple[float, float, float] = (-120.0, -120.0, 0.0),
    fields: dict[str, Any] | None = None,
) -> Path:
    """One CT file per axial slice of ``hu`` (slice k at z = origin + k * spacing; spacing is x, y, z),
    with the study ``fields`` (DICOM keywords; ``STUDY_FIELDS`` by default)."""
    write_series(
        folder,
        hu,
        spacing_z_mm=spacing_mm[2],
        origin_mm=origin_mm,
        pixel_spacing=(spacing_mm[1], spacing_mm[0]),
        thickness_mm=spacing_mm[2],
        fields=STUDY_FIELDS if fields is None else fields,
        name="IM",
    )
    return folder
