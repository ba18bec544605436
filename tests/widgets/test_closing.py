"""Closing the panel with the dock's title-bar ✕: napari only takes it out of its dock (no
closeEvent), and the panel must still let go of the viewer."""

from __future__ import annotations

import pytest

from .conftest import add_ct
from .test_segment_panel import RUN_TIMEOUT_MS, choose_weights

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
    assert widget.segment.status.value.startswith("Cancelled") and len(viewer.layers) == 1
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
