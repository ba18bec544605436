"""Coronal and sagittal views of a CHS-Net CT show the head at the top: the volumes' z axis grows
toward superior and napari draws a 2-D view's vertical axis downward (feet at the top before)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import add_ct

pytestmark = pytest.mark.gui
PANEL = ("napari-chsnet", "CHS-Net Segment")
AXIAL, CORONAL, SAGITTAL = (0, 1, 2), (1, 0, 2), (2, 0, 1)


def _camera(viewer):
    return getattr(viewer, "scene", viewer).camera  # viewer.scene since napari 0.9


def _vertical(viewer) -> str:
    return str(_camera(viewer).orientation2d[0])


def test_coronal_and_sagittal_views_of_a_chsnet_ct_are_head_up(panel, small_phantom):
    viewer, _widget = panel
    add_ct(viewer, small_phantom)
    assert _vertical(viewer) == "down"  # axial: anterior at the top, as napari draws it

    viewer.dims.order = CORONAL
    assert _vertical(viewer) == "up"
    assert str(_camera(viewer).orientation2d[1]) == "right"  # the patient's right stays on the left
    viewer.dims.order = SAGITTAL
    assert _vertical(viewer) == "up"
    viewer.dims.order = AXIAL
    assert _vertical(viewer) == "down"
    viewer.dims.order = (0, 2, 1)  # z sliced, still an axial plane: napari's orientation
    assert _vertical(viewer) == "down"

    viewer.dims.order = CORONAL
    viewer.dims.ndisplay = 3  # one flipped axis would mirror the 3-D rendering
    assert _vertical(viewer) == "down"
    viewer.dims.ndisplay = 2
    assert _vertical(viewer) == "up"


def test_only_while_a_chsnet_volume_is_open_and_the_panel_watches(make_napari_viewer, small_phantom):
    viewer = make_napari_viewer()
    dock, _widget = viewer.window.add_plugin_dock_widget(*PANEL)
    other = viewer.add_image(np.zeros((4, 8, 8), np.float32), name="not from this plugin")
    viewer.dims.order = CORONAL
    assert _vertical(viewer) == "down"  # orientation unknown: napari's own

    ct = add_ct(viewer, small_phantom)
    assert _vertical(viewer) == "up"
    viewer.layers.remove(ct)
    assert _vertical(viewer) == "down"

    add_ct(viewer, small_phantom)
    assert _vertical(viewer) == "up"
    dock.title.close_button.click()  # the panel closed: napari's orientation back, not followed
    assert _vertical(viewer) == "down"
    viewer.dims.order = SAGITTAL
    assert _vertical(viewer) == "down"
    assert other in viewer.layers


def test_the_users_own_orientation_is_given_back(panel, small_phantom):
    """Turning up saves the view's orientation and turning back restores it (not napari's default)."""
    viewer, _widget = panel
    add_ct(viewer, small_phantom)
    camera = _camera(viewer)
    camera.orientation2d = ("up", "right")  # the user's choice for the axial view
    viewer.dims.order = CORONAL
    assert _vertical(viewer) == "up"
    viewer.dims.order = AXIAL
    assert _vertical(viewer) == "up"  # the user's, not napari's "down"


def test_a_user_turning_the_coronal_view_back_is_not_undone_by_layers(panel, small_phantom):
    """The camera is touched only when the wanted state changes: an orientation the user sets while
    the view is turned stays when layers are opened or closed."""
    viewer, _widget = panel
    add_ct(viewer, small_phantom)
    camera = _camera(viewer)
    viewer.dims.order = CORONAL
    assert _vertical(viewer) == "up"
    camera.orientation2d = ("down", "right")  # the user turns the coronal view back
    mask = viewer.add_labels(np.zeros(small_phantom.ct.hu.shape, np.uint8), name="my mask")
    assert _vertical(viewer) == "down"
    viewer.layers.remove(mask)
    assert _vertical(viewer) == "down"


def test_a_scan_from_another_reader_keeps_napari_orientation_once_segmented(panel, small_phantom):
    """A CT opened by another reader has no known z direction: its result (which carries a grid
    for the writers) does not turn the coronal view either; one on this plugin's CT does."""
    from .conftest import show_known_result

    viewer, widget = panel
    foreign = viewer.add_image(small_phantom.ct.hu[::-1].copy(), name="stack.tif", scale=(1.0, 0.7, 0.7))
    viewer.dims.order = CORONAL
    assert _vertical(viewer) == "down"
    show_known_result(widget, foreign, small_phantom)
    assert _vertical(viewer) == "down"

    ct = add_ct(viewer, small_phantom, name="plugin CT")
    show_known_result(widget, ct, small_phantom)
    viewer.layers.remove(ct)  # its result alone still keeps the view head up
    assert _vertical(viewer) == "up"
