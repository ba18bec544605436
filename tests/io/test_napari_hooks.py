"""The npe2 reader, writer and sample-data functions, called as napari calls them (no viewer)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import Geometry
from napari_chsnet.io.writers import write_volume
from napari_chsnet.napari_hooks import (
    AXIS_LABELS,
    GEOMETRY_KEY,
    LUNG_WINDOW_HU,
    PROBABILITY_KEY,
    get_reader,
    read_ct_layers,
    sample_synthetic_ct,
    widen_contrast_range,
    write_image,
    write_labels,
)
from napari_chsnet.registry import INFECTION_COLORS, LUNG_COLORS


@pytest.fixture
def ras_nifti(tmp_path):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.0))
    image.SetOrigin((10.0, 20.0, -50.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert get_reader(str(tmp_path / "a.txt")) is None
    assert get_reader(str(tmp_path / "picture.png")) is None
    assert get_reader(str(tmp_path)) is None, "a folder without DICOM files"
    assert get_reader([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]) is None


def test_reader_gives_an_image_layer_in_hu_with_geometry(ras_nifti):
    reader = get_reader(str(ras_nifti))
    assert reader is not None
    [(data, kwargs, layer_type)] = reader(str(ras_nifti))
    assert layer_type == "image"
    assert kwargs["name"] == "ct"
    assert kwargs["scale"] == pytest.approx((2.0, 0.8, 0.7))
    # RAS origin (10, 20) is the right-anterior corner; the display origin is the other corner
    assert kwargs["translate"] == pytest.approx((-50.0, 20.0 - 4 * 0.8, 10.0 - 5 * 0.7))
    assert kwargs["contrast_limits"] == LUNG_WINDOW_HU
    assert kwargs["metadata"][GEOMETRY_KEY]["source_orientation"] == "RAS"
    assert data.min() == -1000 and data.max() == -1000 + 119


def test_layers_are_in_mm_with_named_axes(ras_nifti):
    """napari (0.5.1 on) takes units and axis labels: the scale bar and the cursor read mm."""
    from napari.components import ViewerModel

    [(data, kwargs, layer_type)] = read_ct_layers(str(ras_nifti))
    assert kwargs["units"] == ("mm", "mm", "mm") and kwargs["axis_labels"] == AXIS_LABELS == (
        "I-S",
        "A-P",
        "R-L",
    )
    [layer] = ViewerModel()._add_layer_from_data(data, kwargs, layer_type)
    assert [str(unit) for unit in layer.units] == ["millimeter"] * 3
    assert tuple(layer.axis_labels) == AXIS_LABELS


def test_contrast_slider_reaches_the_whole_data_range(ras_nifti):
    """napari makes a layer's slider range its initial contrast limits: the lung window and no more."""
    from napari.components import ViewerModel

    [layer] = ViewerModel()._add_layer_from_data(*read_ct_layers(str(ras_nifti))[0])
    assert tuple(layer.contrast_limits_range) == pytest.approx(LUNG_WINDOW_HU), "napari's own behaviour"
    layer.data[0, 0, 0] = 2000  # bone
    widen_contrast_range(layer)
    assert tuple(layer.contrast_limits_range) == pytest.approx((-1350.0, 2000.0))
    assert tuple(layer.contrast_limits) == pytest.approx(LUNG_WINDOW_HU), "still opened in the lung window"


@pytest.mark.parametrize(
    "name, values, colors",
    [("lungs.nii.gz", (0, 1, 2), LUNG_COLORS), ("infection.nii.gz", (0, 1), INFECTION_COLORS)],
)
def test_a_mask_written_by_chsnet_opens_as_labels_on_the_ct_grid(ras_nifti, tmp_path, name, values, colors):
    """A mask read as a CT was a grey image in the lung window (0/1/2 alike) warned as 'not HU'."""
    ct = read_ct(ras_nifti)
    mask = np.zeros(ct.shape, dtype=np.uint8)
    for k, value in enumerate(values):
        mask[:, :, 2 * k : 2 * k + 2] = value
    write_volume(tmp_path / name, mask, ct.geometry, is_label=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'not Hounsfield units' warning
        [(data, kwargs, layer_type)] = get_reader(str(tmp_path / name))(str(tmp_path / name))
    assert layer_type == "labels" and data.dtype == np.uint8
    np.testing.assert_array_equal(data, mask)
    assert kwargs["name"] == name.split(".")[0]
    assert "intensity" not in kwargs["metadata"], "not a CT checked for HU"
    assert {k: v for k, v in kwargs["colormap"].items() if k is not None} == colors
    [(_, ct_kwargs, _)] = read_ct_layers(str(ras_nifti))
    assert kwargs["units"] == ct_kwargs["units"] and kwargs["axis_labels"] == ct_kwargs["axis_labels"]
    assert kwargs["scale"] == pytest.approx(ct_kwargs["scale"])
    assert kwargs["translate"] == pytest.approx(ct_kwargs["translate"], abs=1e-4)
    from napari.components import ViewerModel
    from napari.layers import Image, Labels

    [layer] = ViewerModel()._add_layer_from_data(data, kwargs, layer_type)
    assert isinstance(layer, Labels) and not isinstance(layer, Image), "so the Segment tab never offers it"
    [again] = write_labels(str(tmp_path / "again.nii"), data, kwargs)  # through its chsnet_geometry
    written, source = sitk.ReadImage(again), sitk.ReadImage(str(ras_nifti))
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(written.GetSize(), source.GetSize())


def test_a_probability_map_written_by_the_plugin_opens_as_a_probability_image(ras_nifti, tmp_path):
    """It opened as a grey CT in the lung window, offered in the Segment tab's CT picker."""
    from napari_chsnet.widgets.colormaps import JET_NAME

    [(ct, ct_kwargs, _)] = read_ct_layers(str(ras_nifti))
    probability = np.linspace(0.0, 1.0, ct.size, dtype=np.float32).reshape(ct.shape)
    [path] = write_image(str(tmp_path / "infection_probability.nii.gz"), probability, ct_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'not Hounsfield units' warning
        [(data, kwargs, layer_type)] = get_reader(path)(path)

    assert layer_type == "image" and data.dtype == np.float32
    np.testing.assert_allclose(data, probability, atol=1e-6)
    assert kwargs["colormap"].name == JET_NAME
    assert kwargs["contrast_limits"] == (0.0, 1.0) and kwargs["blending"] == "additive"
    assert kwargs["metadata"][PROBABILITY_KEY] and "intensity" not in kwargs["metadata"]
    assert kwargs["scale"] == pytest.approx(ct_kwargs["scale"])


@pytest.mark.parametrize(
    "values",
    [np.array([-1000.0, -500.5, 40.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.5, 1.5])],
    ids=["float HU", "whole numbers 0/1", "above 1"],
)
def test_other_float_volumes_are_not_taken_for_a_probability_map(tmp_path, values):
    volume = np.resize(values, (4, 5, 6)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "scan.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not HU, and says so
        [(_data, kwargs, _layer_type)] = read_ct_layers(str(tmp_path / "scan.nii.gz"))
    assert PROBABILITY_KEY not in kwargs["metadata"] and kwargs.get("blending") != "additive"


def test_a_ct_normalised_to_0_1_opens_as_a_ct_not_as_a_probability_map(tmp_path):
    """Its values alone look like a probability map's: only a file named as the plugin names its
    probability maps opens as one."""
    from napari_chsnet.io.phantom import make_phantom

    hu = make_phantom(shape=(8, 64, 64), seed=2).ct.hu.astype(np.float32)
    normalised = (hu - hu.min()) / (hu.max() - hu.min())
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(normalised), str(path))
    with pytest.warns(UserWarning, match=r"values lie in \[0, 1\]: normalised"):
        [(_data, kwargs, layer_type)] = get_reader(str(path))(str(path))
    assert layer_type == "image" and PROBABILITY_KEY not in kwargs["metadata"]
    assert kwargs.get("blending") != "additive" and kwargs["colormap"] == "gray"


def test_reader_converts_an_8bit_scan_and_warns_in_napari(tmp_path, windowed_8bit):
    """napari shows a reader's warnings as notifications: the user learns the file was not in HU."""
    from napari_chsnet.io.phantom import make_phantom

    hu = make_phantom(shape=(8, 64, 64), spacing_mm=(4.0, 4.0, 5.0), seed=2).ct.hu
    pixels = windowed_8bit(hu)
    path = tmp_path / "windowed.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(path))
    with pytest.warns(UserWarning, match="not Hounsfield units"):
        [(data, kwargs, _)] = get_reader(str(path))(str(path))
    assert kwargs["metadata"]["intensity"] == "display8"
    assert data.min() < -900, "the air outside the chest is air again"


def test_a_multi_label_map_opens_as_labels_not_as_an_8bit_ct(tmp_path):
    """A 60-label map (as TotalSegmentator writes) opened as a grey CT converted from 8-bit values."""
    from test_hounsfield import multi_label_map

    labels = multi_label_map()
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "organs.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'not Hounsfield units' warning
        [(data, kwargs, layer_type)] = read_ct_layers(str(tmp_path / "organs.nii.gz"))
    assert layer_type == "labels" and data.dtype == np.uint8
    np.testing.assert_array_equal(data, labels)
    assert "intensity" not in kwargs["metadata"] and "colormap" not in kwargs, "napari's own label colours"


@pytest.mark.parametrize(
    ("value", "dtype", "layer_type"),
    [(0, np.int16, "labels"), (-1000, np.int16, "image")],
    ids=["zero", "air"],
)
def test_a_file_of_one_value_opens_with_a_warning(tmp_path, value, dtype, layer_type):
    """An all-zero volume opened as an empty labels layer without a word."""
    path = tmp_path / "blank.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 16, 16), value, dtype)), str(path))
    with pytest.warns(
        UserWarning, match=rf"blank.nii.gz: the file holds one value only \({value} in every voxel\)"
    ):
        [(_data, _kwargs, opened_as)] = read_ct_layers(str(path))
    assert opened_as == layer_type


def test_values_not_in_hu_open_as_an_image_marked_unknown(tmp_path):
    """An MR-like volume opens (with the reader's warning); the Segment tab refuses it from the
    ``intensity`` its layer carries (tests/widgets/test_segment_values.py)."""
    mr_like = 300 + np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16) % 1200
    sitk.WriteImage(sitk.GetImageFromArray(mr_like), str(tmp_path / "mr.nii.gz"))
    with pytest.warns(
        UserWarning, match="do not look like Hounsfield units .* the segmentation refuses them"
    ):
        [(data, kwargs, layer_type)] = read_ct_layers(str(tmp_path / "mr.nii.gz"))
    assert layer_type == "image" and kwargs["metadata"]["intensity"] == "unknown"
    np.testing.assert_array_equal(data, mr_like)


def test_open_as_stack_of_one_path_reads_that_path(ras_nifti, axial_series):
    """napari's "Open as stack" passes a one-item list, even for a NIfTI file or a DICOM folder."""
    folder, hu = axial_series
    for path, expected in ((str(ras_nifti), read_ct(ras_nifti).hu), (str(folder), hu)):
        [(data, kwargs, _)] = get_reader([path])([path])
        np.testing.assert_array_equal(data, expected)
    dicom_files = [str(p) for p in sorted(folder.iterdir())]
    [(data, _, _)] = get_reader(dicom_files)(dicom_files)
    np.testing.assert_array_equal(data, hu)
    with pytest.raises(InvalidVolumeError, match=r"2 paths .* not DICOM files \(ct\.nii\.gz, series\)"):
        read_ct_layers([str(ras_nifti), str(folder)])


def test_writers_put_layers_back_on_the_source_grid(ras_nifti, tmp_path):
    [(data, kwargs, _)] = get_reader(str(ras_nifti))(str(ras_nifti))
    labels = (data > -950).astype(np.uint8)
    [labels_path] = write_labels(str(tmp_path / "mask"), labels, kwargs)
    assert labels_path.endswith("mask.nii.gz")
    written, source = sitk.ReadImage(labels_path), sitk.ReadImage(str(ras_nifti))
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), (sitk.GetArrayFromImage(source) > -950))
    [image_path] = write_image(str(tmp_path / "copy.mha"), data, kwargs)
    np.testing.assert_array_equal(read_ct(image_path).hu, data)


def test_writer_without_chsnet_metadata_uses_scale_and_translate(tmp_path):
    meta = {"scale": (2.0, 0.5, 0.5), "translate": (5.0, 6.0, 7.0), "metadata": {}}
    [path] = write_labels(str(tmp_path / "m.nrrd"), np.ones((3, 4, 4), dtype=np.uint8), meta)
    image = sitk.ReadImage(path)
    assert image.GetSpacing() == pytest.approx((0.5, 0.5, 2.0))
    assert image.GetOrigin() == pytest.approx((7.0, 6.0, 5.0))


def test_a_new_labels_layer_on_an_oblique_ct_is_written_on_the_ct_s_grid(make_napari_viewer, tmp_path):
    values = np.full((4, 5, 6), -800, dtype=np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.0))
    angle = np.deg2rad(20)  # an axial series rotated 20° in-plane
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "oblique.nii.gz"))
    viewer = make_napari_viewer()
    [ct] = viewer.open(str(tmp_path / "oblique.nii.gz"), plugin="napari-chsnet")
    # what napari's "New labels layer" button makes: the CT's shape, scale and translate, no metadata
    drawn = viewer.add_labels(np.zeros(ct.data.shape, dtype=np.uint8), scale=ct.scale, translate=ct.translate)
    drawn.data[1, 2, 3] = 1
    [path] = write_labels(
        str(tmp_path / "drawn.nii.gz"), drawn.data, {"scale": drawn.scale, "translate": drawn.translate}
    )
    written = sitk.ReadImage(path)
    np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-3)


def test_chsnet_geometry_without_a_source_orientation_is_an_lps_file(tmp_path):
    """``source_orientation`` is optional in the metadata (a layer made by a script, or by a tool that
    knows spacing, origin and direction only): as in ``Geometry``, its default is LPS, the display
    orientation, so the layer is written as it is shown, voxel (z, y, x) at file index (x, y, z)."""
    stored = {
        "spacing_mm": [0.5, 0.6, 2.0],
        "origin_mm": [5.0, 6.0, 7.0],
        "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
    }
    assert Geometry.from_metadata(stored) == Geometry((0.5, 0.6, 2.0), (5.0, 6.0, 7.0))
    labels = np.zeros((3, 4, 5), dtype=np.uint8)
    labels[1, 2, 3] = 1
    [path] = write_labels(str(tmp_path / "m.mha"), labels, {"metadata": {GEOMETRY_KEY: stored}})
    image = sitk.ReadImage(path)
    assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), labels)
    assert image.TransformIndexToPhysicalPoint((3, 2, 1)) == pytest.approx((5.0 + 1.5, 6.0 + 1.2, 7.0 + 2.0))


def _oblique_ct(path, shape_zyx, spacing, origin, angle_deg):
    image = sitk.GetImageFromArray(np.full(shape_zyx, -800, dtype=np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    a = np.deg2rad(angle_deg)  # rotated in-plane, so each CT's rotation is in its metadata only
    image.SetDirection((np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return image


# Two CTs open at once (two visits, a thin and a thick reconstruction) that napari's "New labels layer"
# cannot tell apart by all but one of shape, scale and translate.
_SECOND_CT = {
    "position": ((4, 5, 6), (0.7, 0.8, 2.0), (40.0, -30.0, 120.0)),
    "spacing": ((4, 5, 6), (0.7, 0.8, 1.0), (0.0, 0.0, 0.0)),
    "size": ((7, 5, 6), (0.7, 0.8, 2.0), (0.0, 0.0, 0.0)),
}


@pytest.mark.parametrize("differs_in", list(_SECOND_CT))
def test_a_new_labels_layer_is_written_on_its_own_ct_s_grid_not_another_open_one(
    make_napari_viewer, tmp_path, differs_in
):
    """The layer drawn on the second CT must be written on that CT's grid: the first CT matches it in
    all but one of shape, scale and translate, and has another rotation."""
    _oblique_ct(tmp_path / "first.nii.gz", (4, 5, 6), (0.7, 0.8, 2.0), (0.0, 0.0, 0.0), 20)
    shape, spacing, origin = _SECOND_CT[differs_in]
    second = _oblique_ct(tmp_path / "second.nii.gz", shape, spacing, origin, -10)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "first.nii.gz"), plugin="napari-chsnet")
    [ct] = viewer.open(str(tmp_path / "second.nii.gz"), plugin="napari-chsnet")
    drawn = viewer.add_labels(np.zeros(ct.data.shape, dtype=np.uint8), scale=ct.scale, translate=ct.translate)
    [path] = write_labels(
        str(tmp_path / "drawn.nii.gz"), drawn.data, {"scale": drawn.scale, "translate": drawn.translate}
    )
    written = sitk.ReadImage(path)
    assert written.GetSize() == second.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), spacing, rtol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), origin, atol=1e-3)
    np.testing.assert_allclose(written.GetDirection(), second.GetDirection(), atol=1e-5)


def test_sample_has_ct_and_ground_truth_layers():
    layers = sample_synthetic_ct()
    assert [layer_type for _, _, layer_type in layers] == ["image", "labels", "labels"]
    assert [kwargs["name"] for _, kwargs, _ in layers] == [
        "synthetic chest CT",
        "lungs (ground truth)",
        "infection (ground truth)",
    ]
    ct, lungs, infection = (data for data, _, _ in layers)
    assert ct.shape == lungs.shape == infection.shape == (64, 256, 256)
    assert set(np.unique(lungs)) == {0, 1, 2}


def test_a_name_with_a_dot_but_no_known_suffix_gets_nii_gz(tmp_path):
    """A name "lungs_v1.2" was refused as "cannot write .2": only a known file suffix counts as one."""
    meta = {"scale": (2.0, 0.5, 0.5), "translate": (5.0, 6.0, 7.0), "metadata": {}}
    [path] = write_labels(str(tmp_path / "lungs_v1.2"), np.ones((3, 4, 4), dtype=np.uint8), meta)
    assert path == str(tmp_path / "lungs_v1.2.nii.gz")
    assert sitk.ReadImage(path).GetSize() == (4, 4, 3)
    with pytest.raises(InvalidVolumeError, match="cannot write .png"):  # known, not writable: refused by name
        write_labels(str(tmp_path / "lungs.png"), np.ones((3, 4, 4), dtype=np.uint8), meta)
