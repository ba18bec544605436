"""How a run's layers join the viewer: in 3-D, above their CT (the two on top of the layer list),
keeping the user's display settings,
recognised by a panel opened later, and never replacing another CT's result without asking."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from napari_chsnet.registry import INFECTION_LAYER, LEFT_LUNG, LUNGS_LAYER, PROBABILITY_LAYER, RIGHT_LUNG

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui
PANEL = ("napari-chsnet", "CHS-Net Segment")
RESULTS = [PROBABILITY_LAYER, LUNGS_LAYER, INFECTION_LAYER]
TABLE_TIMEOUT_MS = 5_000


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def _other_infection(phantom) -> np.ndarray:
    """An infection mask unlike the phantom's, to tell a second result from the first."""
    infection = np.zeros_like(phantom.infection)
    infection[phantom.lungs > 0] = 1
    return infection


def test_a_result_arriving_in_3d_replaces_all_three_layers(panel, small_phantom):
    """In 3-D with no mouse move since, napari has no view direction and a Labels layer with features
    raised a TypeError when it became active: the first result lacked 'infection', the second kept
    the old 'infection' beside the new 'lungs'."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    # The mouse rests on the canvas, last moved there in 2-D (no view direction), and the user
    # switched to 3-D with napari's shortcut: napari's state in the reviewer's GUI session.
    viewer.mouse_over_canvas = True
    viewer.dims.ndisplay = 3
    assert viewer.cursor._view_direction is None

    show_known_result(widget, ct, small_phantom)
    assert _names(viewer) == [ct.name, *RESULTS]
    first_run = {viewer.layers[name].unique_id for name in RESULTS}
    second = _other_infection(small_phantom)
    show_known_result(widget, ct, small_phantom, infection=second)

    assert _names(viewer) == [ct.name, *RESULTS]
    assert not first_run & {viewer.layers[name].unique_id for name in RESULTS}, "no layer of the first run"
    np.testing.assert_array_equal(viewer.layers[INFECTION_LAYER].data, second)


@contextmanager
def _raising_in(emitter, applies, message: str) -> Iterator[None]:
    """A handler on ``emitter`` that raises ``RuntimeError(message)`` for the events ``applies`` to, for
    the block; the block must end in that error (the swap raises it, not hides it)."""

    def failing_handler(event):
        if applies(event):
            raise RuntimeError(message)

    emitter.connect(failing_handler)
    try:
        with pytest.raises(RuntimeError, match=message):
            yield
    finally:
        emitter.disconnect(failing_handler)


def test_an_error_during_the_swap_still_leaves_the_layers_of_one_run(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    second = _other_infection(small_phantom)

    def is_lungs(event):
        return event.value.name == LUNGS_LAYER

    with _raising_in(viewer.layers.events.inserted, is_lungs, "a layer handler failed"):
        show_known_result(widget, ct, small_phantom, infection=second)

    assert _names(viewer) == [ct.name, *RESULTS]
    np.testing.assert_array_equal(viewer.layers[INFECTION_LAYER].data, second)


def test_a_removing_handler_that_raises_still_leaves_only_the_new_runs_layers(panel, small_phantom):
    """The error comes before napari removes the old 'lungs': it stayed, and the new one went in
    as 'lungs [1]' while the panel took the old one for its own unedited result."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    first_run = {viewer.layers[name].unique_id for name in RESULTS}
    second = _other_infection(small_phantom)

    def is_lungs(event):
        return viewer.layers[event.index].name == LUNGS_LAYER

    with _raising_in(viewer.layers.events.removing, is_lungs, "a removing handler failed"):
        show_known_result(widget, ct, small_phantom, infection=second)

    assert _names(viewer) == [ct.name, *RESULTS]
    assert not first_run & {layer.unique_id for layer in viewer.layers}, "no layer of the first run"
    np.testing.assert_array_equal(viewer.layers[INFECTION_LAYER].data, second)
    written = widget.results._written
    assert {name: written[name] for name in RESULTS} == {n: viewer.layers[n].unique_id for n in RESULTS}
    assert widget.results.would_lose_work() == []


def test_selecting_a_result_layer_in_3d_raises_nothing_and_2d_hover_names_the_lung(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs = viewer.layers[LUNGS_LAYER]
    assert list(lungs.features["lung"]) == ["right lung", "left lung"]

    viewer.mouse_over_canvas = True  # as in the test above
    viewer.dims.ndisplay = 3
    for name in (ct.name, LUNGS_LAYER, INFECTION_LAYER):
        viewer.layers.selection.active = viewer.layers[name]  # raised TypeError for the Labels
    viewer.dims.ndisplay = 2

    assert list(lungs.features["lung"]) == ["right lung", "left lung"]
    assert list(viewer.layers[INFECTION_LAYER].features["finding"]) == ["infection"]


def test_result_layers_sit_directly_above_their_ct_raised_above_other_scans(panel, small_phantom):
    """Left directly above the first CT, the result was drawn under a second scan opened since:
    the CT and its result now move above the other scans, in their order; other layers stay above."""
    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    show_known_result(widget, first, small_phantom)
    second = add_ct(viewer, small_phantom, name="second CT")  # opened later: on top of the results

    show_known_result(widget, second, small_phantom)
    assert _names(viewer) == ["first CT", "second CT", *RESULTS]

    show_known_result(widget, first, small_phantom)
    assert _names(viewer) == ["second CT", "first CT", *RESULTS]
    viewer.add_points(name="marks")  # a layer the user put on top
    show_known_result(widget, first, small_phantom)  # segmented again: no scan over it, the marks stay on top
    assert _names(viewer) == ["second CT", "first CT", *RESULTS, "marks"]


def test_a_new_result_keeps_the_users_display_settings(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs, infection, probability = (
        viewer.layers[name] for name in (LUNGS_LAYER, INFECTION_LAYER, PROBABILITY_LAYER)
    )
    lungs.contour, lungs.opacity, lungs.blending = 0, 0.3, "opaque"
    infection.visible = False
    probability.blending, probability.opacity = "translucent", 0.2

    show_known_result(widget, ct, small_phantom)

    lungs, infection, probability = (
        viewer.layers[name] for name in (LUNGS_LAYER, INFECTION_LAYER, PROBABILITY_LAYER)
    )
    assert (lungs.contour, lungs.opacity, lungs.blending) == (0, pytest.approx(0.3), "opaque")
    assert not infection.visible
    assert (probability.blending, probability.opacity) == ("translucent", pytest.approx(0.2))


def _close_and_reopen(viewer, dock):
    dock.title.close_button.click()  # napari's ✕
    _dock, reopened = viewer.window.add_plugin_dock_widget(*PANEL)
    return reopened


def test_a_reopened_panel_shows_the_table_and_takes_unedited_results_as_its_own(
    make_napari_viewer, qtbot, small_phantom, user
):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    expected = widget.severity.cell(2, 1)

    reopened = _close_and_reopen(viewer, dock)
    reopened.use_dialogs(user)  # no answer ready: a question fails the test

    qtbot.waitUntil(lambda: reopened.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    assert reopened.severity.cell(2, 1) == expected
    assert reopened.results.would_lose_work() == []
    assert reopened.segment._confirm_replacing(ct)
    assert not any(reopened.results.is_edited(name) for name in RESULTS)


def test_a_result_edited_while_no_panel_was_open_is_known_as_edited(make_napari_viewer, small_phantom, user):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    dock.title.close_button.click()
    viewer.layers[LUNGS_LAYER].data_setitem((np.array([0]), np.array([0]), np.array([0])), LEFT_LUNG)

    _dock, reopened = viewer.window.add_plugin_dock_widget(*PANEL)
    reopened.use_dialogs(user)

    assert reopened.results.would_lose_work() == [LUNGS_LAYER]
    assert reopened.results.is_edited(LUNGS_LAYER) and not reopened.results.is_edited(INFECTION_LAYER)
    user.confirm_answers.append(False)
    assert not reopened.segment._confirm_replacing(ct)
    assert "The layer 'lungs' was edited or not made by this run" in user.questions[-1]


def test_segmenting_another_ct_asks_before_replacing_the_first_cts_result(panel, small_phantom, user):
    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    show_known_result(widget, first, small_phantom)
    lungs = viewer.layers[LUNGS_LAYER]
    second = add_ct(viewer, small_phantom, name="second CT")
    widget.reset_choices()
    widget.segment.ct.value = second
    user.confirm_answers.append(False)

    widget.segment.run()

    assert not widget.segment.running
    question = user.questions[-1]
    assert "'first CT'" in question and "'second CT'" in question
    assert viewer.layers[LUNGS_LAYER] is lungs
    # the CT the result belongs to: replaced without a question, as before
    assert widget.segment._confirm_replacing(first)
    assert len(user.questions) == 1


def test_an_overlay_kept_over_the_ct_moves_with_it_above_another_scan(panel, small_phantom):
    """A corrected mask kept under another name sits over its CT, then a second scan is opened: the
    CT rising above that scan takes the overlay with it (left behind, it was hidden under two CTs)."""
    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    viewer.add_labels(small_phantom.lungs, name="lungs corrected")
    add_ct(viewer, small_phantom, name="second CT")
    show_known_result(widget, first, small_phantom)
    assert _names(viewer) == ["second CT", "first CT", *RESULTS, "lungs corrected"]


def test_segmenting_raises_the_ct_only_above_scans_never_above_overlays(panel, small_phantom):
    """A probability map opened over the CT, or an earlier result renamed to keep it, is an overlay,
    not a scan: the CT is not moved over it (it would hide it under the opaque CT); a second CT is
    still a scan the result rises above."""
    from napari_chsnet.io.volume import CTVolume
    from napari_chsnet.napari_hooks import probability_layer

    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    prob = np.where(small_phantom.infection > 0, 0.8, 0.0).astype(np.float32)
    data, kwargs, _ = probability_layer(
        CTVolume(prob, small_phantom.ct.geometry, "p.nii.gz", {}), "saved probability"
    )
    viewer.add_image(data, **kwargs)  # the CLI's probability map opened over the CT to compare
    show_known_result(widget, first, small_phantom)
    assert _names(viewer) == ["first CT", *RESULTS, "saved probability"]

    viewer.layers[PROBABILITY_LAYER].name = "earlier probability"  # kept: renamed out of the run's way
    second = add_ct(viewer, small_phantom, name="second CT")
    viewer.layers.move(viewer.layers.index(second), 0)  # the second scan under everything
    assert _names(viewer)[:2] == ["second CT", "first CT"]
    show_known_result(widget, first, small_phantom)
    names = _names(viewer)
    assert names.index("earlier probability") > names.index("first CT")
    assert names.index("saved probability") > names.index("first CT")
    assert names[:2] == ["second CT", "first CT"]

    show_known_result(widget, second, small_phantom)  # a scan under the other: it rises above first CT
    names = _names(viewer)
    assert names.index("second CT") > names.index("first CT")
    assert names[names.index("second CT") + 1 : names.index("second CT") + 4] == RESULTS


def _slice_of(labels: np.ndarray, label: int, nth: int) -> tuple[int, tuple[np.ndarray, ...]]:
    """The ``nth`` axial slice holding ``label``, and 30 of its ``label`` voxels (as indices)."""
    voxels = np.argwhere(labels == label)
    z = int(np.unique(voxels[:, 0])[nth])
    return z, tuple(voxels[voxels[:, 0] == z][:30].T)


def test_an_edit_undone_back_to_the_runs_masks_is_no_longer_a_correction(
    panel, qtbot, small_phantom, monkeypatch
):
    """The review's walk: Shift+R by mistake, then Ctrl+Z. The masks were the model's again but stayed
    'corrected': the report warned, Segment asked first and the Fine-tune tab trained on the slices."""
    from napari_chsnet.widgets import layer_facts
    from napari_chsnet.widgets.layer_facts import edited_slices
    from napari_chsnet.widgets.report_panel import EDITED_WARNING

    viewer, widget = panel  # the user has no answer ready: a question fails the test
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs, results = viewer.layers[LUNGS_LAYER], widget.results
    z1, first = _slice_of(lungs.data, LEFT_LUNG, 0)
    z2, second = _slice_of(lungs.data, LEFT_LUNG, 1)
    lungs.data_setitem(first, RIGHT_LUNG)
    lungs.data_setitem(second, RIGHT_LUNG)
    assert edited_slices(lungs) == (z1, z2) and results.is_edited(LUNGS_LAYER)

    lungs.undo()  # Ctrl+Z: the second edit goes, the first stays
    assert edited_slices(lungs) == (z1,) and results.is_edited(LUNGS_LAYER)
    lungs.undo()  # back at the run's masks
    assert edited_slices(lungs) == () and not results.is_edited(LUNGS_LAYER)
    assert results.would_lose_work() == []
    assert widget.segment._confirm_replacing(ct)
    assert EDITED_WARNING not in widget.report.build_report()["warnings"]
    assert widget.finetune.lungs.value.name == LUNGS_LAYER and widget.finetune.edited_slices() == ()

    lungs.redo()  # Ctrl+Shift+Z: corrected again
    assert edited_slices(lungs) == (z1,) and results.is_edited(LUNGS_LAYER)

    # Painted back by hand: checked once napari has written the stroke.
    lungs.data_setitem(first, LEFT_LUNG)
    qtbot.waitUntil(lambda: not results.is_edited(LUNGS_LAYER), timeout=TABLE_TIMEOUT_MS)
    assert edited_slices(lungs) == ()

    # Moving the slider also refreshes the layer (set_data): nothing is checked then.
    counted: list[int] = []
    checksums = layer_facts.slice_checksums
    monkeypatch.setattr(layer_facts, "slice_checksums", lambda data: counted.append(1) or checksums(data))
    lungs.data_setitem(second, RIGHT_LUNG)
    qtbot.wait(50)
    counted.clear()
    viewer.dims.set_point(0, lungs.data_to_world((z1, 0, 0))[0])
    viewer.dims.set_point(0, lungs.data_to_world((z2, 0, 0))[0])
    assert counted == [] and edited_slices(lungs) == (z2,)


def test_masks_without_the_runs_slice_checksums_stay_corrected_after_an_undo(panel, small_phantom):
    """Masks opened from files (or kept from an older session) cannot tell the run's values."""
    from napari_chsnet.widgets.layer_facts import edited_slices

    viewer, widget = panel
    lungs = viewer.add_labels(small_phantom.lungs.copy(), name=LUNGS_LAYER)
    z, voxels = _slice_of(lungs.data, LEFT_LUNG, 0)
    lungs.data_setitem(voxels, 0)
    lungs.undo()
    assert widget.results.is_edited(LUNGS_LAYER) and edited_slices(lungs) == (z,)


def _new_infection(phantom, z: int, count: int) -> tuple[np.ndarray, ...]:
    """``count`` voxels of slice ``z`` inside the lungs and outside the phantom's infection."""
    ys, xs = np.nonzero((phantom.lungs[z] > 0) & (phantom.infection[z] == 0))
    return np.full(count, z), ys[:count], xs[:count]


def test_a_redo_on_a_hidden_layer_is_a_correction_again(panel, small_phantom, user, monkeypatch):
    """napari refreshes (emits set_data for) only a visible layer, but Ctrl+Shift+Z redoes on a hidden
    one too: Segment replaced the redone correction without asking, the report did not call the masks
    corrected and the Fine-tune tab had no edited slice. Each question compares the data with the run's."""
    from napari_chsnet.widgets import layer_facts
    from napari_chsnet.widgets.layer_facts import edited_slices
    from napari_chsnet.widgets.report_panel import EDITED_WARNING

    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    infection, results = viewer.layers[INFECTION_LAYER], widget.results
    infection.data_setitem(_new_infection(small_phantom, 6, 20), 1)
    infection.undo()
    assert not results.is_edited(INFECTION_LAYER) and edited_slices(infection) == ()
    infection.visible = False
    assert widget.finetune.infection.value.name == INFECTION_LAYER

    def segment_asks() -> bool:
        asked = len(user.questions)
        user.confirm_answers.append(False)
        replaced = widget.segment._confirm_replacing(ct)
        if len(user.questions) == asked:
            user.confirm_answers.pop()
        return not replaced and len(user.questions) == asked + 1

    questions = {
        "Segment asks first": segment_asks,
        "the report calls the masks corrected": lambda: (
            EDITED_WARNING in widget.report.build_report()["warnings"]
        ),
        "the Fine-tune tab trains on slice 6": lambda: widget.finetune.edited_slices() == (6,),
        "the infection is edited": lambda: results.is_edited(INFECTION_LAYER),
    }
    for what, asked_first in questions.items():  # each the first to look since the step
        infection.redo()  # Ctrl+Shift+Z with the layer hidden
        assert asked_first(), what
        assert edited_slices(infection) == (6,) and results.would_lose_work() == [INFECTION_LAYER]
        infection.undo()
        assert not asked_first(), what
        assert edited_slices(infection) == () and results.would_lose_work() == []

    # Showing the layer refreshes it (set_data, as the slider does): only questions compute checksums.
    counted: list[int] = []
    checksums = layer_facts.slice_checksums
    monkeypatch.setattr(layer_facts, "slice_checksums", lambda data: counted.append(1) or checksums(data))
    infection.visible = True
    viewer.dims.set_point(0, infection.data_to_world((3, 0, 0))[0])
    assert counted == []


def test_two_strokes_redone_while_hidden_are_both_corrections(panel, small_phantom):
    """Several steps between two looks: showing the layer again took only the last redo's slice."""
    from napari_chsnet.widgets.layer_facts import edited_slices

    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    infection, results = viewer.layers[INFECTION_LAYER], widget.results
    infection.data_setitem(_new_infection(small_phantom, 3, 10), 1)
    infection.data_setitem(_new_infection(small_phantom, 6, 20), 1)
    infection.undo()
    infection.undo()
    assert edited_slices(infection) == () and not results.is_edited(INFECTION_LAYER)

    infection.visible = False
    infection.redo()
    infection.redo()
    infection.visible = True  # napari refreshes the layer it shows
    assert edited_slices(infection) == (3, 6) and results.is_edited(INFECTION_LAYER)

    infection.visible = False
    infection.undo()
    infection.undo()
    assert edited_slices(infection) == () and not results.is_edited(INFECTION_LAYER)
    infection.redo()
    infection.redo()
    assert edited_slices(infection) == (3, 6) and results.would_lose_work() == [INFECTION_LAYER]


def test_a_paint_after_an_undo_on_a_hidden_layer_keeps_the_undos_slices(panel, qtbot, small_phantom):
    """An erase undone while hidden put a painted slice back; the next paint dropped the redo step."""
    from napari_chsnet.widgets.layer_facts import edited_slices

    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    infection, results = viewer.layers[INFECTION_LAYER], widget.results
    stroke = _new_infection(small_phantom, 3, 10)
    infection.data_setitem(stroke, 1)
    infection.data_setitem(stroke, 0)  # erased back to the run's masks
    qtbot.waitUntil(lambda: not results.is_edited(INFECTION_LAYER), timeout=TABLE_TIMEOUT_MS)

    infection.visible = False
    infection.undo()  # the erase goes: slice 3 is painted again
    infection.data_setitem(_new_infection(small_phantom, 6, 20), 1)
    qtbot.waitUntil(lambda: edited_slices(infection) == (3, 6), timeout=TABLE_TIMEOUT_MS)
