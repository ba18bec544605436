"""Closing the panel with the dock's title-bar ✕: napari only takes it out of its dock (no
closeEvent), and the panel must still let go of the viewer. Once napari drops the panel, Qt deletes
its widgets: work still running must not call back into them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

from napari_chsnet.registry import INFECTION_LAYER, LUNGS_LAYER, RIGHT_LUNG

from .conftest import add_ct, show_known_result
from .test_segment_panel import RUN_TIMEOUT_MS, choose_weights
from .test_window_close import _stand_in_fine_tune, _start_a_long_segmentation

pytestmark = pytest.mark.gui
PANEL = ("napari-chsnet", "CHS-Net Segment")
KEYS = {"Shift-S", "Shift-R", "Shift-L", "Shift-J"}


def _bound_shift_keys(viewer) -> set[str]:
    return {str(key) for key in viewer.keymap if "Shift" in str(key)}


def test_the_dock_close_button_cancels_the_run_and_releases_keys_and_layers(
    make_napari_viewer, qtbot, small_phantom, tiny_weights, user, notifications
):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    widget.use_dialogs(user)
    add_ct(viewer, small_phantom)
    choose_weights(widget, user, tiny_weights)
    widget.segment.batch_size.value = 1  # many steps: the run cannot end before the close lands
    widget.segment.segment.native.click()
    assert widget.segment.running and len(_bound_shift_keys(viewer)) == 4

    dock.title.close_button.click()  # napari's ✕: remove_dock_widget, no closeEvent

    qtbot.waitUntil(lambda: not widget.segment.running, timeout=RUN_TIMEOUT_MS)
    assert len(viewer.layers) == 1
    assert not [n for n in notifications if "cancelled" in str(n.message)], "cancelled quietly"
    assert _bound_shift_keys(viewer) == set()
    # the closed panel no longer follows the layer list
    add_ct(viewer, small_phantom, name="second CT")
    assert "second CT" not in [layer.name for layer in widget.segment.ct.choices]
    assert "second CT" not in [layer.name for layer in widget.finetune.ct.choices]

    warnings_before = len(notifications)
    _dock, reopened = viewer.window.add_plugin_dock_widget(*PANEL)
    assert reopened is not widget
    assert set(reopened.shortcuts) == KEYS
    assert not [n for n in notifications[warnings_before:] if "already bound" in str(n.message)]
    assert len(_bound_shift_keys(viewer)) == 4


def test_a_panel_closed_twice_releases_once(panel):
    viewer, widget = panel
    widget.close()  # closeEvent
    widget.setParent(None)  # then taken out of the dock as well
    assert widget.shortcuts == {} and _bound_shift_keys(viewer) == set()


def test_a_closed_panel_no_longer_follows_renames(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    emitted = []
    widget.results.changed.connect(lambda: emitted.append(1))
    ct.name = "renamed"
    assert emitted  # a rename can change which layer is 'lungs' or 'infection'
    widget.close()
    emitted.clear()
    ct.name = "renamed again"
    assert not emitted


def test_a_closed_panel_takes_the_hover_features_off_and_a_reopened_one_restores_them(
    make_napari_viewer, small_phantom
):
    """With no panel watching ndisplay, features left on a Labels layer raised napari's 3-D
    TypeError when the layer became active."""
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs = viewer.layers[LUNGS_LAYER]
    assert list(lungs.features["lung"]) == ["right lung", "left lung"]

    dock.title.close_button.click()  # in 2-D
    assert lungs.features.shape[1] == 0 and viewer.layers[INFECTION_LAYER].features.shape[1] == 0
    viewer.mouse_over_canvas = True  # no view direction yet, as in test_result_layers
    viewer.dims.ndisplay = 3
    for name in (ct.name, LUNGS_LAYER, INFECTION_LAYER):
        viewer.layers.selection.active = viewer.layers[name]  # raised TypeError for the Labels
    viewer.dims.ndisplay = 2

    viewer.window.add_plugin_dock_widget(*PANEL)
    assert list(lungs.features["lung"]) == ["right lung", "left lung"]
    assert list(viewer.layers[INFECTION_LAYER].features["finding"]) == ["infection"]


def _close_and_delete(qtbot, dock, widget) -> None:
    """napari's ✕, then what follows in the GUI once napari holds no reference to the panel (the
    tests hold one): Qt deletes the panel's widgets."""
    dock.title.close_button.click()
    with qtbot.waitSignal(widget.destroyed, timeout=5000):
        widget.deleteLater()


@pytest.fixture
def docked(make_napari_viewer, user):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    widget.use_dialogs(user)
    return viewer, dock, widget


def test_closing_the_panel_during_a_run_cancels_it_quietly(
    docked, qtbot, small_phantom, tiny_weights, user, notifications
):
    viewer, dock, widget = docked
    segment = _start_a_long_segmentation(viewer, widget, small_phantom, user, tiny_weights)

    _close_and_delete(qtbot, dock, widget)  # a callback touching a deleted widget fails the test

    qtbot.waitUntil(lambda: not segment.running, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(100)
    assert len(viewer.layers) == 1
    assert not [n for n in notifications if "cancelled" in str(n.message)]


def _close_then_release(qtbot, dock, widget, gate: threading.Event, part) -> None:
    """Close and delete the panel while ``part``'s held worker runs, then let the worker finish and
    wait until ``part`` is no longer busy (its callbacks have run, on a deleted panel)."""
    assert part.busy
    _close_and_delete(qtbot, dock, widget)
    gate.set()
    qtbot.waitUntil(lambda: not part.busy, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(100)


def _held_until(gate: threading.Event, task):
    """``task`` that waits for ``gate`` first: the worker is sure to outlive the panel."""

    def held(*args, **kwargs):
        assert gate.wait(30)
        return task(*args, **kwargs)

    return held


def test_a_correction_running_when_the_panel_is_closed_still_finishes(
    docked, qtbot, small_phantom, monkeypatch
):
    from napari_chsnet.widgets import correct as correct_module

    gate = threading.Event()
    monkeypatch.setattr(
        correct_module, "with_holes_filled", _held_until(gate, correct_module.with_holes_filled)
    )
    viewer, dock, widget = docked
    ct = add_ct(viewer, small_phantom)
    lungs_data = small_phantom.lungs.copy()
    inside = ndimage.binary_erosion(lungs_data == RIGHT_LUNG, structure=np.ones((1, 5, 5)))
    z, y, x = np.argwhere(inside)[0]
    lungs_data[z, y - 1 : y + 2, x - 1 : x + 2] = 0  # a hole for Fill holes to fill
    show_known_result(widget, ct, small_phantom, lungs=lungs_data)
    correct = widget.correct
    correct.target.value = LUNGS_LAYER
    correct.fill_holes.native.click()
    _close_then_release(qtbot, dock, widget, gate, correct)
    assert viewer.layers[LUNGS_LAYER].data[z, y, x] == RIGHT_LUNG


def test_a_correction_waiting_for_a_brush_stroke_when_the_panel_is_closed_is_still_written(
    docked, qtbot, small_phantom
):
    viewer, dock, widget = docked
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    infection, lungs = viewer.layers[INFECTION_LAYER], viewer.layers[LUNGS_LAYER]
    outside = tuple(np.argwhere(lungs.data == 0)[:50].T)
    infection.data_setitem(outside, 1)
    correct = widget.correct
    correct.restrict.native.click()
    with infection.block_history():  # napari's brush stroke, as in test_correct_panel
        qtbot.waitUntil(lambda: correct.waiting_for_stroke, timeout=RUN_TIMEOUT_MS)
        _close_and_delete(qtbot, dock, widget)

    qtbot.waitUntil(lambda: not correct.busy, timeout=5000)
    assert not infection.data[outside].any()


def test_an_export_running_when_the_panel_is_closed_still_writes_its_file(
    docked, qtbot, small_phantom, user, tmp_path, monkeypatch
):
    from napari_chsnet.widgets import report_panel

    gate = threading.Event()
    monkeypatch.setattr(report_panel, "write_report_json", _held_until(gate, report_panel.write_report_json))
    viewer, dock, widget = docked
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    report = widget.report
    user.save_paths.append(tmp_path / "report.json")
    report.export_json.native.click()
    _close_then_release(qtbot, dock, widget, gate, report)
    assert (tmp_path / "report.json").is_file()


def test_a_fine_tune_running_when_the_panel_is_closed_is_cancelled_quietly(
    docked, qtbot, monkeypatch, notifications
):
    """The training itself is replaced by a stand-in that reports steps until it is cancelled."""
    viewer, dock, widget = docked
    finetune = widget.finetune
    steps = _stand_in_fine_tune(monkeypatch, finetune)
    finetune.run()
    assert finetune.running
    qtbot.waitUntil(lambda: len(steps) > 3, timeout=5000)

    _close_and_delete(qtbot, dock, widget)

    qtbot.waitUntil(lambda: not finetune.running, timeout=5000)
    qtbot.wait(100)
    assert len(steps) < 999, "cancelled"
    assert not [n for n in notifications if "Fine-tun" in str(n.message)]
