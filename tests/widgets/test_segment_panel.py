"""The docked panel: sample through the plugin, segmentation in a worker, layers, cancel, re-run, errors."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_chsnet.napari_hooks import GEOMETRY_KEY
from napari_chsnet.registry import (
    INFECTION_COLORS,
    INFECTION_LAYER,
    LEFT_LUNG,
    LUNG_COLORS,
    LUNGS_LAYER,
    PROBABILITY_LAYER,
    RIGHT_LUNG,
)
from napari_chsnet.report import compute_severity
from napari_chsnet.widgets.colormaps import JET_NAME
from napari_chsnet.widgets.layer_facts import layer_geometry, run_info_of
from napari_chsnet.widgets.main import CHSNetWidget

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 180_000  # a toy network on a 12-slice CT: seconds, but CI machines are shared


def choose_weights(widget: CHSNetWidget, user, folder) -> None:
    """Pick a weights folder through the panel's Folder… button."""
    user.folders.append(folder)
    widget.segment.weights_folder.native.click()
    assert widget.segment.weights.value == str(folder)


def run_segmentation(qtbot, widget: CHSNetWidget) -> None:
    widget.segment.segment.native.click()
    assert widget.segment.running
    qtbot.waitUntil(lambda: not widget.segment.running, timeout=RUN_TIMEOUT_MS)


def test_sample_and_panel_come_from_the_manifest(panel):
    viewer, widget = panel
    viewer.open_sample("napari-chsnet", "synthetic_chest_ct")

    assert isinstance(widget, CHSNetWidget)
    widget.reset_choices()
    # The CT is offered; the ground-truth Labels layers are not.
    assert [name for name, _ in widget.segment._ct_choices()] == ["synthetic chest CT"]
    assert widget.segment.ct.value is viewer.layers["synthetic chest CT"]
    assert widget.segment.model.value == "chsnet"
    assert widget.segment.device.choices[0] == "auto"
    assert "cpu" in widget.segment.device.choices
    assert widget.segment.weights.value == "bundled"
    assert set(widget.shortcuts) == {"Shift-S", "Shift-R", "Shift-L", "Shift-J"}
    assert [widget.tabs.tabText(i) for i in range(widget.tabs.count())] == [
        "Segment",
        "Correct",
        "Report",
        "Fine-tune",
    ]


def test_segment_adds_three_layers_aligned_with_the_ct(panel, qtbot, tiny_weights, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    lungs, infection, probability = (
        viewer.layers[name] for name in (LUNGS_LAYER, INFECTION_LAYER, PROBABILITY_LAYER)
    )
    assert isinstance(lungs, Labels) and isinstance(infection, Labels) and isinstance(probability, Image)
    for layer in (lungs, infection, probability):
        np.testing.assert_allclose(layer.scale, ct.scale)
        np.testing.assert_allclose(layer.translate, ct.translate)
        assert layer.data.shape == ct.data.shape
        assert layer.metadata[GEOMETRY_KEY] == ct.metadata[GEOMETRY_KEY]
    # Stacked above the CT; the red mask on top of the JET map.
    assert [layer.name for layer in viewer.layers] == [
        ct.name,
        PROBABILITY_LAYER,
        LUNGS_LAYER,
        INFECTION_LAYER,
    ]

    np.testing.assert_allclose(
        lungs.colormap.map(np.array([RIGHT_LUNG, LEFT_LUNG])), [LUNG_COLORS[1], LUNG_COLORS[2]]
    )
    np.testing.assert_allclose(infection.colormap.map(np.array([1])), [INFECTION_COLORS[1]])
    assert lungs.colormap.map(np.array([0]))[0][3] == 0  # background transparent
    assert dict(zip(lungs.features["index"], lungs.features["lung"], strict=True)) == {
        1: "right lung",
        2: "left lung",
    }
    assert set(np.unique(lungs.data)) <= {0, 1, 2} and lungs.data.dtype == np.uint8

    assert probability.colormap.name == JET_NAME
    assert probability.blending == "additive"
    assert tuple(probability.contrast_limits) == (0.0, 1.0)
    assert 0.3 <= probability.opacity <= 0.7
    assert probability.data.dtype == np.float32

    # The table shows the figures of the layers on screen.
    expected = compute_severity(
        lungs.data, infection.data, layer_geometry(lungs), widget.results.min_lesion_ml
    )
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=5000)
    assert widget.severity.cell(0, 0) == f"{expected.right.volume_ml:.1f}"
    assert widget.severity.cell(1, 0) == f"{expected.left.volume_ml:.1f}"
    assert widget.severity.cell(2, 3) == expected.overall_grade
    assert widget.segment.status.value.startswith("Done (cpu, ")


def test_the_status_names_the_model_that_made_the_layers(panel, qtbot, tiny_weights, small_phantom):
    """The status ("Done (cpu, …): grade …") named no model: a user comparing models could not tell
    which one made the layers on screen."""
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    widget.segment.model.value = "rdunet"
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    assert widget.segment.status.value.splitlines()[-1] == "segmented with Residual Dilated U-Net."


def test_the_status_names_a_reduced_precision(panel, qtbot, tiny_weights, small_phantom, monkeypatch):
    """On a CPU with AMX the networks run in bfloat16 (inference.device); the status says so, as the
    report does, since its figures differ from float32's in the last digits."""
    import napari_chsnet.inference.device as device_module

    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: True)
    monkeypatch.setenv("CHSNET_CPU_BF16", "1")  # tests/conftest.py pins float32
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    assert widget.segment.status.value.startswith("Done (cpu, bfloat16, ")
    assert run_info_of(viewer.layers[PROBABILITY_LAYER]).inference_options["precision"] == "bfloat16 autocast"


def test_the_status_says_not_measured_when_no_lung_is_graded(panel, qtbot, tiny_weights, small_phantom):
    """A slab of a chest (lungmask's two DICOM slices) showed "grade CT-1" in the status beside a table of
    "not measured": both say "not measured" now."""
    import dataclasses

    viewer, widget = panel
    slab = dataclasses.replace(
        small_phantom, ct=dataclasses.replace(small_phantom.ct, hu=small_phantom.ct.hu[5:7])
    )
    add_ct(viewer, slab, name="slab")
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=10_000)
    assert widget.segment.status.value.splitlines()[0].endswith("grade not measured")
    assert widget.severity.cell(2, 3) == "not measured"


def test_the_threshold_tooltip_says_what_it_means_for_eamc(panel):
    _viewer, widget = panel
    tooltip = widget.segment.threshold.tooltip
    assert "EAMC: each member's vote threshold" in tooltip and "majority vote" in tooltip


def test_the_mirror_averaging_box_reaches_the_engine_and_the_layers(
    panel, qtbot, tiny_weights, small_phantom
):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    choose_weights(widget, widget.dialogs, tiny_weights)
    assert widget.segment.mirror_averaging.value  # CHS-Net's default, as in the CLI
    widget.segment.mirror_averaging.value = False
    widget.segment.model.value = "eamc"
    assert widget.segment.mirror_averaging.value  # a model choice brings back that model's default
    widget.segment.model.value = "chsnet"
    widget.segment.mirror_averaging.value = False

    run_segmentation(qtbot, widget)

    options = run_info_of(viewer.layers[PROBABILITY_LAYER]).inference_options
    assert options["mirror_averaging"] is False and options["threshold"] == widget.segment.threshold.value


def test_the_overlapping_tiles_box_is_eamc_s_and_reaches_the_engine(
    panel, qtbot, tiny_weights, small_phantom
):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    box = widget.segment.overlapping_tiles
    assert not box.native.isVisibleTo(widget.segment.native)  # CHS-Net reads its crop whole
    widget.segment.model.value = "eamc"
    assert box.native.isVisibleTo(widget.segment.native) and box.value is False  # EAMC's default
    # chosen after the model, which resets the weights to its own: toy EAMC, not the bundled minutes
    choose_weights(widget, widget.dialogs, tiny_weights)
    box.value = True
    widget.segment.mirror_averaging.value = False

    run_segmentation(qtbot, widget)

    options = run_info_of(viewer.layers[PROBABILITY_LAYER]).inference_options
    assert options["overlapping_tiles"] is True and options["mirror_averaging"] is False
    widget.segment.model.value = "chsnet"
    assert not box.native.isVisibleTo(widget.segment.native) and box.value is False


def test_cancel_mid_run_adds_no_layer(panel, qtbot, tiny_weights, small_phantom, notifications):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    choose_weights(widget, widget.dialogs, tiny_weights)
    widget.segment.batch_size.value = 1  # many steps: the run cannot end before the cancel lands
    stages = []

    widget.segment.segment.native.click()
    widget.segment._worker.yielded.connect(lambda progress: stages.append(progress.stage))
    widget.segment.cancel.native.click()
    qtbot.waitUntil(lambda: not widget.segment.running, timeout=RUN_TIMEOUT_MS)

    assert len(viewer.layers) == 1
    assert "infection" not in stages
    assert widget.segment.status.value.startswith("Cancelled")
    assert widget.segment.segment.enabled and not widget.segment.cancel.enabled
    assert any("cancelled" in str(n.message) for n in notifications)


def test_the_inputs_a_run_read_are_locked_and_the_table_uses_the_min_lesion_shown(
    panel, qtbot, tiny_weights, small_phantom
):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    choose_weights(widget, widget.dialogs, tiny_weights)
    panel_ = widget.segment
    inputs = (
        panel_.threshold, panel_.min_lesion_ml, panel_.mirror_averaging, panel_.overlapping_tiles,
        panel_.batch_size,
    )  # fmt: skip

    panel_.segment.native.click()
    assert panel_.running and not any(box.enabled for box in inputs)
    panel_.min_lesion_ml.value = 5.0  # a script still can: the finished run must not undo it
    qtbot.waitUntil(lambda: not panel_.running, timeout=RUN_TIMEOUT_MS)

    assert all(box.enabled for box in inputs)
    assert widget.results.min_lesion_ml == panel_.min_lesion_ml.value == 5.0
    assert widget.report.build_report()["min_lesion_ml"] == 5.0


def test_rerun_asks_before_replacing_edited_layers(panel, qtbot, tiny_weights, small_phantom, user):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    choose_weights(widget, user, tiny_weights)
    show_known_result(widget, ct, small_phantom)  # a finished earlier run
    first_lungs = viewer.layers[LUNGS_LAYER]

    # An unedited result is replaced without a question (ScriptedUser has no answer ready).
    run_segmentation(qtbot, widget)
    lungs = viewer.layers[LUNGS_LAYER]
    assert lungs is not first_lungs
    assert not np.array_equal(lungs.data, small_phantom.lungs)

    # Edit the lungs through napari's undoable API, then refuse the replacement.
    lungs.data_setitem((np.array([0]), np.array([0]), np.array([0])), LEFT_LUNG)
    edited = lungs.data.copy()
    user.confirm_answers.append(False)
    widget.segment.segment.native.click()
    assert not widget.segment.running
    assert "'lungs'" in user.questions[-1]
    assert viewer.layers[LUNGS_LAYER] is lungs
    np.testing.assert_array_equal(lungs.data, edited)

    # Accept: fresh layers in the same places.
    user.confirm_answers.append(True)
    run_segmentation(qtbot, widget)
    assert viewer.layers[LUNGS_LAYER] is not lungs
    assert [layer.name for layer in viewer.layers][1:] == [PROBABILITY_LAYER, LUNGS_LAYER, INFECTION_LAYER]


def test_a_layer_of_the_same_name_not_made_by_a_run_is_not_replaced_silently(panel, small_phantom, user):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    mine = viewer.add_labels(small_phantom.lungs.copy(), name=LUNGS_LAYER)
    user.confirm_answers.append(False)

    widget.segment.segment.native.click()

    assert not widget.segment.running
    assert viewer.layers[LUNGS_LAYER] is mine


def test_bad_weights_become_an_error_notification(panel, qtbot, small_phantom, tmp_path, notifications):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    (tmp_path / "chsnet.safetensors").write_bytes(b"not a checkpoint")
    choose_weights(widget, widget.dialogs, tmp_path)

    run_segmentation(qtbot, widget)

    errors = [n for n in notifications if n.severity == "error"]
    assert errors, "no error notification"
    assert "chsnet.safetensors" in str(errors[-1].message)
    assert len(viewer.layers) == 1
    assert widget.segment.status.value.startswith("Failed")


def test_a_weights_folder_without_the_model_s_file_is_refused(
    panel, small_phantom, tiny_weights, tmp_path, notifications
):
    """An RD-UNet set chosen for another model once ran that model's bundled weights without a word."""
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    rdunet_set = tmp_path / "ft_rdunet"
    rdunet_set.mkdir()
    (rdunet_set / "rdunet.safetensors").write_bytes((tiny_weights / "rdunet.safetensors").read_bytes())
    widget.dialogs.folders.append(rdunet_set)
    widget.segment.weights_folder.native.click()  # the model is CHS-Net

    assert "has no chsnet.safetensors (it holds rdunet weights)" in str(notifications[-1].message)
    assert notifications[-1].severity == "error"
    assert widget.segment.weights.value == "bundled"

    widget.segment.model.value = "rdunet"
    choose_weights(widget, widget.dialogs, rdunet_set)  # its own model: taken
    widget.segment.model.value = "eamc"
    widget.segment.weights.value = str(rdunet_set)  # still offered, now for EAMC
    widget.segment.run()

    assert not widget.segment.running
    assert "has no eamc.safetensors" in str(notifications[-1].message)


def test_no_ct_is_an_error_notification(panel, notifications):
    viewer, widget = panel
    viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="not a CT")
    widget.segment.run()
    assert "No CT to segment" in str(notifications[-1].message)
    assert not widget.segment.running


def test_no_ct_says_why_an_open_image_is_not_offered(panel, notifications):
    viewer, widget = panel
    viewer.add_image(np.zeros((32, 32), np.float32), name="a photo")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="drawing")
    widget.reset_choices()
    widget.segment.run()
    message = str(notifications[-1].message)
    assert "No CT to segment" in message
    assert "A CT layer must be a 3-D greyscale image: 'a photo' is 2-D." in message
    assert "drawing" not in message  # a Labels layer is never a CT: nothing to explain


def test_an_8bit_layer_from_another_reader_is_converted_with_a_warning(
    panel, qtbot, tiny_weights, small_phantom, notifications, windowed_8bit
):
    """A layer that did not come through this plugin's reader (here a bare array, as napari's own
    readers give for a windowed 8-bit export) gets the reader's intensity check before the run."""
    viewer, widget = panel
    pixels = windowed_8bit(small_phantom.ct.hu)
    layer = viewer.add_image(pixels, name="windowed", scale=small_phantom.ct.geometry.spacing_zyx)
    widget.segment.ct.value = layer
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    warned = [n for n in notifications if "not Hounsfield units" in str(n.message)]
    assert warned and "'windowed'" in str(warned[-1].message)
    assert layer.data.dtype == np.uint8 and layer.metadata == {}, "the user's layer is left as it was"
    assert run_info_of(viewer.layers[LUNGS_LAYER]) is not None
    assert widget.segment.status.value.startswith("Done (cpu, ")


def test_a_layer_from_this_plugin_is_not_checked_again(panel, small_phantom, notifications):
    from napari_chsnet.widgets.layer_facts import ct_volume_from_layer

    viewer, _ = panel
    data, kwargs, _ = ct_layer_of_read_volume(small_phantom)
    layer = viewer.add_image(data, **kwargs)
    volume = ct_volume_from_layer(layer)
    assert volume.hu is layer.data or np.shares_memory(volume.hu, layer.data)
    assert volume.metadata["warnings"] == []


def ct_layer_of_read_volume(phantom):
    """The layer data the plugin's reader gives (metadata marks the values as checked HU)."""
    import dataclasses

    from napari_chsnet.io.readers import in_hounsfield_units
    from napari_chsnet.napari_hooks import ct_layer

    fresh = dataclasses.replace(phantom.ct, metadata={"warnings": []})  # the session's phantom stays as is
    return ct_layer(in_hounsfield_units(fresh))


def test_a_result_named_layer_added_during_the_run_is_not_replaced_without_asking(
    panel, qtbot, tiny_weights, small_phantom, user
):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    choose_weights(widget, user, tiny_weights)
    widget.segment.segment.native.click()  # no result layers yet: no question
    assert widget.segment.running and not user.confirm_answers
    mine = viewer.add_labels(small_phantom.infection.copy(), name=INFECTION_LAYER)  # opened meanwhile
    user.confirm_answers.append(False)

    qtbot.waitUntil(lambda: not widget.segment.running, timeout=RUN_TIMEOUT_MS)

    assert "'infection'" in user.questions[-1]
    assert viewer.layers[INFECTION_LAYER] is mine
    assert widget.segment.status.value.startswith("Result discarded")


def test_a_ct_without_voxel_size_is_measured_in_1_mm_voxels_with_a_warning_everywhere(
    panel, qtbot, tiny_weights, small_phantom, notifications
):
    """A bare array (a .npy, another reader's layer, the console) has no chsnet geometry and scale
    1: Segment warns, and the table's note and the report say the volumes assume 1 mm voxels."""
    from napari_chsnet.widgets.layer_facts import UNIT_SPACING_WARNING

    viewer, widget = panel
    layer = viewer.add_image(np.array(small_phantom.ct.hu), name="bare array")
    widget.segment.ct.value = layer
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    warned = [str(n.message) for n in notifications if "1 mm voxels" in str(n.message)]
    assert warned == [f"'bare array': {UNIT_SPACING_WARNING}"]
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=5000)
    assert UNIT_SPACING_WARNING in widget.severity.note.value
    lungs = viewer.layers[LUNGS_LAYER]
    assert widget.severity.severity.right.volume_ml == pytest.approx(
        np.count_nonzero(lungs.data == RIGHT_LUNG) / 1000
    )
    report = widget.report.build_report()
    assert report["warnings"].count(UNIT_SPACING_WARNING) == 1  # the CT's and its masks' warning, once


def test_a_ct_with_a_scale_but_no_chsnet_geometry_is_measured_with_its_scale_and_says_so(
    panel, qtbot, small_phantom, notifications
):
    viewer, widget = panel
    scale = small_phantom.ct.geometry.spacing_zyx
    ct = viewer.add_image(np.array(small_phantom.ct.hu), name="tif with a scale", scale=scale)
    show_known_result(widget, ct, small_phantom)

    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=5000)
    assert widget.severity.severity.right.volume_ml == pytest.approx(small_phantom.lung_volume_ml[RIGHT_LUNG])
    note = "Voxel size taken from the layer's scale ({:g} × {:g} × {:g} mm".format(*scale)
    assert note in widget.severity.note.value
    assert sum(note in warning for warning in widget.report.build_report()["warnings"]) == 1


def test_masks_drawn_on_the_grid_of_a_ct_the_plugin_read_are_not_warned_about(panel, qtbot, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    for name, data in ((LUNGS_LAYER, small_phantom.lungs), (INFECTION_LAYER, small_phantom.infection)):
        # napari's New Labels layer: the CT's scale and translate, none of its metadata
        viewer.add_labels(data.copy(), name=name, scale=ct.scale, translate=ct.translate)

    assert widget.results.spacing_warning() is None
    assert not any("voxel size" in w.lower() for w in widget.report.build_report()["warnings"])


def test_the_cts_contrast_slider_reaches_bone_and_the_masks_share_its_units(panel, small_phantom):
    """The CT opens in the lung window, but its slider must reach soft-tissue and bone windows
    (napari caps it at the limits a layer is made with); the masks read in the CT's mm and axes."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    assert tuple(ct.contrast_limits) == (-1350.0, 150.0)
    low, high = ct.contrast_limits_range
    assert low <= float(small_phantom.ct.hu.min()) and high >= float(small_phantom.ct.hu.max()) > 150.0
    show_known_result(widget, ct, small_phantom)
    for name in ("lungs", "infection", "infection probability"):
        layer = viewer.layers[name]
        assert tuple(str(u) for u in layer.units) == tuple(str(u) for u in ct.units)
        assert tuple(layer.axis_labels) == tuple(ct.axis_labels) == ("I-S", "A-P", "R-L")
