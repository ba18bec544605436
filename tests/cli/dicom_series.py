"""A CT series written as DICOM (one file per axial slice) with known geometry and study fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDY_FIELDS = {"PatientName": "Doe^Jane", "PatientID": "P42", "StudyDate": "20200415", "Modality": "CT"}


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 5.0),
    origin_mm: tuple[float, float, float] = (-120.0, -120.0, 0.0),
    fields: dict[str, Any] | None = None,
) -> Path:
    """One CT file per axial slice (slice k at z = origin + k * spacing), pixels as HU + 1024, with the
    study ``fields`` (DICOM keywords; ``STUDY_FIELDS`` by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    for k, hu_slice in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SliceThickness = spacing_mm[2]
        for keyword, value in (STUDY_FIELDS if fields is None else fields).items():
            setattr(ds, keyword, value)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study_uid, series_uid, k + 1
        ds.ImagePositionPatient = [origin_mm[0], origin_mm[1], origin_mm[2] + k * spacing_mm[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing_mm[1], spacing_mm[0]]
        ds.Rows, ds.Columns = hu_slice.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu_slice.astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder
