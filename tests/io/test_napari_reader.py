"""Opening a file through napari with the plugin's manifest (needs Qt/OpenGL under Xvfb)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import SimpleITK as sitk

pytestmark = pytest.mark.gui


def test_viewer_opens_nifti_through_the_plugin(make_napari_viewer, tmp_path):
    if not resources.files("napari_chsnet").joinpath("napari.yaml").is_file():
        pytest.skip("napari.yaml is not written yet, so napari cannot find the plugin's reader")
    values = np.full((4, 16, 12), -850, dtype=np.int16)
    values[:, :, 0] = 40
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-5.0, -6.0, -7.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-chsnet")
    assert layer.scale == pytest.approx((2.5, 0.8, 0.7))
    assert layer.translate == pytest.approx((-7.0, -6.0, -5.0))
    assert layer.data.min() == -850 and layer.data.max() == 40
    assert tuple(layer.contrast_limits) == pytest.approx((-1350.0, 150.0))
    assert "chsnet_geometry" in layer.metadata
