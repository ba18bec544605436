"""Fixtures of the command-line tests: a tiny weights set, a small phantom as NIfTI and as DICOM."""

from __future__ import annotations

import pytest

from cli.dicom_series import write_dicom_series
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


@pytest.fixture(scope="session")
def dicom_folder(tmp_path_factory, phantom):
    return write_dicom_series(tmp_path_factory.mktemp("dicom") / "series_a", phantom.ct.hu)


@pytest.fixture
def volume_of(phantom):
    def make(hu):
        return CTVolume(hu, phantom.ct.geometry, "test")

    return make
