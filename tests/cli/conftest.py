"""Fixtures of the command-line tests: a tiny weights set, a small phantom as NIfTI and as DICOM."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from inference.factory import small_phantom, write_tiny_weights_set
from napari_chsnet.inference.weights import clear_cache
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.io.writers import write_volume


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="session")
def phantom():
    return small_phantom()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, phantom):
    return write_tiny_weights_set(tmp_path_factory.mktemp("weights"), phantom=phantom)


@pytest.fixture(scope="session")
def ras_nifti(tmp_path_factory, phantom):
    """The phantom written as a RAS-ordered NIfTI (outputs must come back in that same grid)."""
    geometry = Geometry(phantom.ct.geometry.spacing_mm, (-100.0, -80.0, 20.0), source_orientation="RAS")
    path = tmp_path_factory.mktemp("ct") / "case_ras.nii.gz"
    write_volume(path, phantom.ct.hu, geometry)
    return path


def write_dicom_series(folder, hu: np.ndarray, spacing_mm=(2.5, 2.5, 5.0), origin_mm=(-120.0, -120.0, 0.0)):
    """One CT file per axial slice (slice k at z = origin + k * spacing), pixels as HU + 1024."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for k, hu_slice in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = "Doe^Jane", "P42", "20200415", "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = "1.2.3.4", series_uid, k + 1
        ds.ImagePositionPatient = [origin_mm[0], origin_mm[1], origin_mm[2] + k * spacing_mm[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing_mm[1], spacing_mm[0]]
        ds.SliceThickness = spacing_mm[2]
        ds.Rows, ds.Columns = hu_slice.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu_slice.astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="session")
def dicom_folder(tmp_path_factory, phantom):
    return write_dicom_series(tmp_path_factory.mktemp("dicom") / "series_a", phantom.ct.hu)


@pytest.fixture
def volume_of(phantom):
    def make(hu):
        return CTVolume(hu, phantom.ct.geometry, "test")

    return make
