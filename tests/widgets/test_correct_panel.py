"""Correction helpers: known answers on hand-made masks, and one undo step each in the viewer."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels
from napari.utils.key_bindings import coerce_keybinding

from napari_chsnet.registry import INFECTION_LAYER, LEFT_LUNG, LUNGS_LAYER, RIGHT_LUNG
from napari_chsnet.widgets.correct import (
    apply_as_one_step,
    first_label_along,
    min_voxels_for,
    relabelled_component,
    restricted_infection,
    with_holes_filled,
    without_islands,
)

from .conftest import add_ct, show_known_result

HELPER_TIMEOUT_MS = 10_000


# ---------------------------------------------------------------- the corrections, by hand
def test_restricted_infection_clears_voxels_outside_both_lungs():
    lungs = np.array([[[0, 1, 1, 0, 2, 2]]], np.uint8)
    infection = np.array([[[1, 1, 0, 1, 1, 0]]], np.uint8)
    np.testing.assert_array_equal(restricted_infection(infection, lungs), [[[0, 1, 0, 0, 1, 0]]])


def test_without_islands_drops_small_components_of_each_label():
    labels = np.zeros((1, 5, 9), np.uint8)
    labels[0, :, :3] = 1  # 15 voxels of lung 1
    labels[0, 0, 5] = 1  # an island of 1 voxel of lung 1
    labels[0, 2:4, 7:9] = 2  # 4 voxels of lung 2
    out = without_islands(labels, min_voxels=4)
    assert out[0, 0, 5] == 0
    assert (out == 1).sum() == 15 and (out == 2).sum() == 4  # exactly min_voxels is kept


def test_with_holes_filled_fills_background_enclosed_by_a_label_slice_by_slice():
    labels = np.zeros((2, 5, 5), np.uint8)
    labels[0, 1:4, 1:4] = 2
    labels[0, 2, 2] = 0  # a vessel inside the left lung
    labels[1, 1:4, 1:4] = 1
    labels[1, 2, 2] = 0
    out = with_holes_filled(labels)
    assert out[0, 2, 2] == 2 and out[1, 2, 2] == 1
    assert (out[:, 0, :] == 0).all()  # nothing outside grows


def test_relabelled_component_changes_only_the_connected_part_under_the_voxel():
    labels = np.zeros((1, 3, 7), np.uint8)
    labels[0, :, :2] = 2  # mislabelled: on the right side of the patient (small x)
    labels[0, :, 5:] = 2
    out = relabelled_component(labels, (0, 1, 0), RIGHT_LUNG)
    assert (out[0, :, :2] == RIGHT_LUNG).all() and (out[0, :, 5:] == LEFT_LUNG).all()
    np.testing.assert_array_equal(relabelled_component(labels, (0, 1, 3), RIGHT_LUNG), labels)  # background


@pytest.mark.parametrize(
    ("volume_ml", "voxel_ml", "expected"), [(0.1, 0.001, 100), (0.1, 0.0016, 63), (0.0001, 0.001, 1)]
)
def test_min_voxels_for(volume_ml, voxel_ml, expected):
    assert min_voxels_for(volume_ml, voxel_ml) == expected


def test_apply_as_one_step_is_undone_by_one_undo():
    layer = Labels(np.zeros((2, 4, 4), np.uint8))
    after = layer.data.copy()
    after[0, :2, :2] = 1
    after[1, 3, 3] = 2
    assert apply_as_one_step(layer, layer.data.copy(), after) == 5
    np.testing.assert_array_equal(layer.data, after)
    layer.undo()
    assert not layer.data.any()
    assert apply_as_one_step(layer, layer.data.copy(), layer.data.copy()) == 0


def test_apply_as_one_step_leaves_voxels_the_user_changed_since_the_snapshot():
    layer = Labels(np.zeros((1, 2, 4), np.uint8))
    snapshot = layer.data.copy()
    after = np.ones_like(snapshot)
    layer.data_setitem((np.array([0, 0]), np.array([0, 1]), np.array([0, 3])), 2)  # painted meanwhile
    assert apply_as_one_step(layer, snapshot, after) == 6
    assert layer.data[0, 0, 0] == 2 and layer.data[0, 1, 3] == 2
    assert (layer.data == 1).sum() == 6


def test_first_label_along_finds_the_first_non_zero_voxel_from_the_start():
    data = np.zeros((5, 3, 3), np.uint8)
    data[3, 1, 1], data[1, 1, 1] = 2, 1
    assert first_label_along(data, np.array([4.4, 1.0, 1.0]), np.array([-0.5, 1.0, 1.0])) == (3, 1, 1)
    assert first_label_along(data, np.array([0.0, 0.0, 0.0]), np.array([4.0, 0.0, 0.0])) is None


# ---------------------------------------------------------------- in the viewer
@pytest.fixture
def known_result(panel, small_phantom):
    """The panel with the phantom's true masks shown as a result."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    return viewer, widget


def wait_for_helper(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.correct.busy, timeout=HELPER_TIMEOUT_MS)


@pytest.mark.gui
def test_restrict_infection_is_one_undo_step(known_result, qtbot):
    viewer, widget = known_result
    infection, lungs = viewer.layers[INFECTION_LAYER], viewer.layers[LUNGS_LAYER]
    outside = np.argwhere(lungs.data == 0)[:50]
    infection.data_setitem(tuple(outside.T), 1)
    before = infection.data.copy()

    widget.correct.restrict.native.click()
    wait_for_helper(qtbot, widget)

    assert not (infection.data[lungs.data == 0]).any()
    np.testing.assert_array_equal(infection.data[lungs.data > 0], before[lungs.data > 0])
    infection.undo()
    np.testing.assert_array_equal(infection.data, before)


@pytest.mark.gui
def test_remove_islands_and_fill_holes_are_one_undo_step_each(known_result, qtbot, small_phantom):
    viewer, widget = known_result
    lungs = viewer.layers[LUNGS_LAYER]
    original = lungs.data.copy()
    z, y, x = np.argwhere(original == RIGHT_LUNG)[len(np.argwhere(original == RIGHT_LUNG)) // 2]
    lungs.data_setitem((np.array([z]), np.array([y]), np.array([x])), 0)  # a hole inside the right lung
    background = np.argwhere(original == 0)[0]
    lungs.data_setitem(tuple(np.array([background]).T), LEFT_LUNG)  # a one-voxel island
    edited = lungs.data.copy()

    widget.correct.target.value = LUNGS_LAYER
    widget.correct.islands_ml.value = 0.05
    widget.correct.remove_islands.native.click()
    wait_for_helper(qtbot, widget)
    assert lungs.data[tuple(background)] == 0
    assert lungs.data[z, y, x] == 0

    widget.correct.fill_holes.native.click()
    wait_for_helper(qtbot, widget)
    assert lungs.data[z, y, x] == RIGHT_LUNG

    lungs.undo()  # the fill
    assert lungs.data[z, y, x] == 0 and lungs.data[tuple(background)] == 0
    lungs.undo()  # the island removal
    np.testing.assert_array_equal(lungs.data, edited)


@pytest.mark.gui
def test_shift_r_relabels_the_lung_under_the_cursor(known_result, qtbot):
    viewer, widget = known_result
    lungs = viewer.layers[LUNGS_LAYER]
    original = lungs.data.copy()
    voxel = np.argwhere(original == LEFT_LUNG)[0]
    viewer.cursor.position = tuple(lungs.data_to_world(voxel))

    viewer.keymap[coerce_keybinding("Shift-R")](viewer)
    wait_for_helper(qtbot, widget)

    assert (lungs.data[original == LEFT_LUNG] == RIGHT_LUNG).all()  # the left lung is one component
    assert (lungs.data[original == RIGHT_LUNG] == RIGHT_LUNG).all()
    assert widget.results.is_edited(LUNGS_LAYER)
    lungs.undo()
    np.testing.assert_array_equal(lungs.data, original)
    # undone back to the run's masks: not a correction (the report, Segment, Fine-tune's slices)
    assert not widget.results.is_edited(LUNGS_LAYER) and widget.finetune.edited_slices() == ()


@pytest.mark.gui
def test_a_helper_that_changes_nothing_says_so_and_adds_no_undo_step(known_result, qtbot, notifications):
    """It said "0 voxels (0.00 mL) changed; Ctrl+Z undoes it.", and Ctrl+Z undid the stroke before."""
    viewer, widget = known_result
    infection, lungs = viewer.layers[INFECTION_LAYER], viewer.layers[LUNGS_LAYER]
    assert not infection.data[lungs.data == 0].any()  # nothing outside the lungs to restrict
    stroke = tuple(np.argwhere((lungs.data > 0) & (infection.data == 0))[:20].T)
    infection.data_setitem(stroke, 1)  # the user's last stroke, inside the lungs

    widget.correct.restrict.native.click()
    wait_for_helper(qtbot, widget)

    assert str(notifications[-1].message) == "Infection restricted to the lungs: nothing to change."
    infection.undo()  # Ctrl+Z undoes that stroke, as nothing else was added since
    assert not infection.data[stroke].any()


@pytest.mark.gui
def test_relabel_with_the_cursor_off_the_lungs_only_warns(known_result, notifications):
    viewer, widget = known_result
    lungs = viewer.layers[LUNGS_LAYER]
    before = lungs.data.copy()
    viewer.cursor.position = tuple(lungs.data_to_world(np.argwhere(before == 0)[0]))
    widget.correct.relabel_left.native.click()
    assert not widget.correct.busy
    assert "mouse cursor on a lung" in str(notifications[-1].message)
    np.testing.assert_array_equal(lungs.data, before)


@pytest.mark.gui
def test_an_erase_made_while_a_helper_runs_is_kept(known_result, qtbot):
    viewer, widget = known_result
    lungs = viewer.layers[LUNGS_LAYER]
    left = np.argwhere(lungs.data == LEFT_LUNG)
    viewer.cursor.position = tuple(lungs.data_to_world(left[len(left) // 2]))
    widget.correct.relabel_right.native.click()  # the worker starts from a snapshot
    erased = tuple(left[:30].T)
    lungs.data_setitem(erased, 0)  # the user erases meanwhile (the result cannot arrive before)

    wait_for_helper(qtbot, widget)

    assert not lungs.data[erased].any()
    assert (lungs.data[tuple(left[30:].T)] == RIGHT_LUNG).all()


@pytest.mark.gui
def test_a_helper_finishing_during_a_brush_stroke_waits_for_it_and_is_its_own_undo_step(known_result, qtbot):
    viewer, widget = known_result
    infection, lungs = viewer.layers[INFECTION_LAYER], viewer.layers[LUNGS_LAYER]
    outside = tuple(np.argwhere(lungs.data == 0)[:50].T)
    infection.data_setitem(outside, 1)
    before = infection.data.copy()
    stroke = np.argwhere((lungs.data > 0) & (infection.data == 0))[:20]

    widget.correct.restrict.native.click()
    # napari's brush keeps block_history() open from mouse press to release, handling Qt events
    # between mouse moves: the helper's result arrives in the middle of the stroke.
    with infection.block_history():
        infection.data_setitem(tuple(stroke[:10].T), 1)
        qtbot.waitUntil(lambda: widget.correct.waiting_for_stroke, timeout=HELPER_TIMEOUT_MS)
        assert widget.correct.busy and infection.data[outside].all()  # not written yet
        infection.data_setitem(tuple(stroke[10:].T), 1)
    wait_for_helper(qtbot, widget)
    assert not infection.data[outside].any() and infection.data[tuple(stroke.T)].all()

    infection.undo()  # the helper alone
    assert infection.data[outside].all() and infection.data[tuple(stroke.T)].all()
    infection.undo()  # the whole stroke
    np.testing.assert_array_equal(infection.data, before)


def _column_off_the_middle_slice(lungs: np.ndarray, label: int) -> tuple[int, int, int]:
    """(middle slice, y, x) of a column through ``label`` voxels only, none at the middle slice."""
    middle = lungs.shape[0] // 2
    column = (lungs == label).any(0) & ~((lungs > 0) & (lungs != label)).any(0) & (lungs[middle] == 0)
    y, x = np.argwhere(column)[0]
    return middle, int(y), int(x)


@pytest.mark.gui
@pytest.mark.parametrize("after_a_mouse_move", [False, True])
def test_shift_l_in_3d_relabels_the_lung_seen_along_the_view_ray(known_result, qtbot, after_a_mouse_move):
    viewer, widget = known_result
    lungs = viewer.layers[LUNGS_LAYER]
    original = lungs.data.copy()
    viewer.dims.ndisplay = 3
    getattr(viewer, "scene", viewer).camera.set_view_direction(
        (1, 0, 0)
    )  # looking along z: a column of voxels per pixel
    middle, y, x = _column_off_the_middle_slice(original, RIGHT_LUNG)
    # In 3-D the cursor lies on the camera-centre plane, here the middle slice (no lung there).
    viewer.cursor.position = tuple(lungs.data_to_world((middle, y, x)))
    if after_a_mouse_move:  # what napari's canvas sets on each mouse move (the ray's direction)
        viewer.cursor._view_direction = np.array([1.0, 0.0, 0.0])

    viewer.keymap[coerce_keybinding("Shift-L")](viewer)
    wait_for_helper(qtbot, widget)

    assert (lungs.data[:, y, x][original[:, y, x] > 0] == LEFT_LUNG).all()
    assert (lungs.data[original == LEFT_LUNG] == LEFT_LUNG).all()
    lungs.undo()
    np.testing.assert_array_equal(lungs.data, original)
