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


def test_viewer_opens_a_written_mask_as_labels_in_mm(make_napari_viewer, tmp_path):
    """A lungs.nii.gz from `chsnet segment` reopens as labels, not as a grey 'CT' in the lung window."""
    if not resources.files("napari_chsnet").joinpath("napari.yaml").is_file():
        pytest.skip("napari.yaml is not written yet, so napari cannot find the plugin's reader")
    from napari.layers import Labels

    lungs = np.zeros((4, 16, 12), dtype=np.uint8)
    lungs[:, 4:12, 1:5], lungs[:, 4:12, 7:11] = 1, 2
    image = sitk.GetImageFromArray(lungs)
    image.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(image, str(tmp_path / "lungs.nii.gz"))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "lungs.nii.gz"), plugin="napari-chsnet")
    assert isinstance(layer, Labels) and layer.name == "lungs"
    np.testing.assert_array_equal(layer.data, lungs)
    assert layer.scale == pytest.approx((2.5, 0.8, 0.7))
    assert [str(unit) for unit in layer.units] == ["millimeter"] * 3


def test_a_saved_probability_map_reopens_like_the_runs_layer_and_is_not_a_ct(make_napari_viewer, tmp_path):
    from napari.layers import Image

    from napari_chsnet.widgets.colormaps import JET_NAME
    from napari_chsnet.widgets.layer_facts import ct_layer_choices

    probability = np.linspace(0.0, 1.0, 4 * 16 * 12, dtype=np.float32).reshape(4, 16, 12)
    image = sitk.GetImageFromArray(probability)
    image.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(image, str(tmp_path / "infection_probability.nii.gz"))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "infection_probability.nii.gz"), plugin="napari-chsnet")
    assert isinstance(layer, Image) and layer.colormap.name == JET_NAME
    assert tuple(layer.contrast_limits) == (0.0, 1.0) and layer.blending == "additive"
    assert ct_layer_choices(viewer.layers) == []
