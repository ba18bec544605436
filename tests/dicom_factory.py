"""The one writer of DICOM test data: small series with known geometry and study fields, enhanced
(multi-frame) files, and voxel-to-mm helpers, for the I/O, command-line and report tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

INTERCEPT = -1024.0
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def series_hu(n_slices: int, rows: int = 24, columns: int = 20) -> np.ndarray:
    """HU slices whose value encodes the slice index (slice k is -1000 + 100 k) plus a marker voxel."""
    hu = np.empty((n_slices, rows, columns), dtype=np.int16)
    for k in range(n_slices):
        hu[k] = -1000 + 100 * k
    hu[:, 2, 3] = 1500
    return hu


def _new_dataset(sop_class: str) -> pydicom.Dataset:
    """An empty dataset of ``sop_class`` with its file meta (explicit VR little endian) and a new UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def ct_dataset(
    hu_slice: np.ndarray,
    position_mm: Sequence[float],
    *,
    series_uid: str,
    instance: int,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.7, 0.8),
    modality: str = "CT",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    patient: tuple[str, str] = ("T001", "Test^Series"),
    study: tuple[str, str] = (STUDY_UID, "20240102"),
    series_number: int | None = None,
    description: str | None = None,
    thickness_mm: float = 2.0,
    acquisition: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> pydicom.Dataset:
    """A CT image dataset storing ``hu_slice`` as unsigned pixels with RescaleIntercept -1024 (values
    below -1024 HU stored as -1024); ``patient`` is (PatientID, PatientName), ``study``
    (StudyInstanceUID, StudyDate), and ``fields`` (DICOM keywords) are set last, over the rest."""
    ds = _new_dataset(CTImageStorage)
    ds.PatientID, ds.PatientName = patient
    ds.StudyInstanceUID, ds.StudyDate = study
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = description if description is not None else f"series {series_uid[-4:]}"
    ds.Modality = modality
    ds.Manufacturer = "pytest"
    ds.SeriesInstanceUID = series_uid
    if series_number is not None:
        ds.SeriesNumber = series_number
    if acquisition is not None:
        ds.AcquisitionNumber = acquisition
    ds.InstanceNumber = instance
    ds.ImageType = list(image_type)
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position_mm]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [str(v) for v in pixel_spacing]
    ds.SliceThickness = f"{thickness_mm:g}"
    ds.Rows, ds.Columns = hu_slice.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = str(INTERCEPT)
    ds.RescaleSlope = "1"
    ds.PixelData = (hu_slice.astype(np.int32) - int(INTERCEPT)).clip(0, 65535).astype(np.uint16).tobytes()
    for keyword, value in (fields or {}).items():
        setattr(ds, keyword, value)
    return ds


def write_series(
    folder: Path,
    hu: np.ndarray,
    *,
    spacing_z_mm: float = 2.0,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin_mm: Sequence[float] = (-10.0, -20.0, 30.0),
    series_uid: str | None = None,
    name: str = "slice",
    positions_mm: Sequence[float] | None = None,
    **kwargs,
) -> list[Path]:
    """Write ``hu`` (slice k at origin + k * spacing along the normal) as one file per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = positions_mm if positions_mm is not None else [k * spacing_z_mm for k in range(len(hu))]
    paths = []
    for k, offset in enumerate(offsets):
        ds = ct_dataset(
            hu[k],
            np.asarray(origin_mm) + offset * normal,
            series_uid=uid,
            instance=k + 1,
            orientation=orientation,
            **kwargs,
        )
        path = folder / f"{name}{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(
    path: Path,
    hu: np.ndarray,
    *,
    series_uid: str | None = None,
    first_z_mm: float = 30.0,
    positions_z_mm: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
) -> Path:
    """Write ``hu`` as one enhanced (multi-frame) CT file of the factory's patient T001: frame k at
    z = first_z_mm + 2 k mm (or ``positions_z_mm[k]``), 0.7 x 0.8 mm pixels, unsigned storage with a
    shared RescaleIntercept -1024, or frame k's own ``intercepts[k]`` (per-frame functional groups)."""
    ds = _new_dataset(EnhancedCTImageStorage)
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Series", "T001"
    ds.StudyInstanceUID, ds.StudyDate = STUDY_UID, "20240102"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber, ds.SeriesDescription = 7, "enhanced"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames, ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    measures, orientation = pydicom.Dataset(), pydicom.Dataset()
    measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = [0.7, 0.8], 2.0, 2.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = pydicom.Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    if intercepts is None:
        shared.PixelValueTransformationSequence = DicomSequence([_rescale(INTERCEPT)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    z_mm = positions_z_mm if positions_z_mm is not None else [first_z_mm + 2.0 * k for k in range(len(hu))]
    stored = hu.astype(np.int32) - int(INTERCEPT)
    frames = []
    for k, z in enumerate(z_mm):
        position, frame = pydicom.Dataset(), pydicom.Dataset()
        position.ImagePositionPatient = [-10.0, -20.0, z]
        frame.PlanePositionSequence = DicomSequence([position])
        if intercepts is not None:
            frame.PixelValueTransformationSequence = DicomSequence([_rescale(intercepts[k])])
            stored[k] = hu[k].astype(np.int32) - int(intercepts[k])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _rescale(intercept: float) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.RescaleIntercept, item.RescaleSlope, item.RescaleType = intercept, 1, "HU"
    return item


def save_without_preamble(path: Path) -> None:
    """Rewrite a DICOM file as a bare dataset: file meta kept, no 128-byte preamble or 'DICM' marker."""
    ds = pydicom.dcmread(path)
    ds.preamble = None
    ds.save_as(path, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"


def jpeg_lossless_copy(path: Path, tmp_dir: Path) -> None:
    """Re-encode a DICOM slice as JPEG Lossless Process 14 SV1 in place.

    pydicom has no JPEG Lossless encoder, so GDCM (inside SimpleITK) encodes the pixels and the
    encapsulated fragments are moved into the original dataset.
    """
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.uint16)
    encoded_path = tmp_dir / f"{path.stem}_jpeg.dcm"
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.SetFileName(str(encoded_path))
    writer.UseCompressionOn()
    writer.SetCompressor("JPEG")
    writer.Execute(sitk.GetImageFromArray(stored[None]))
    encoded = pydicom.dcmread(encoded_path)
    assert encoded.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def physical_point(geometry, index_zyx: Sequence[int]) -> np.ndarray:
    """LPS position (mm) of a voxel of a display grid."""
    direction = np.asarray(geometry.direction).reshape(3, 3)
    index_xyz = np.asarray(index_zyx[::-1], dtype=float)
    return np.asarray(geometry.origin_mm) + direction @ (index_xyz * np.asarray(geometry.spacing_mm))
