"""A second scan opened beside a segmented one: the Segment tab's CT picker follows it, Segment runs
on it (asking before replacing the first scan's result), its result is shown on top of the stack,
and the status line and the severity table name the CT their figures belong to. Also the replace
question's grammar for one layer or several."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet.registry import INFECTION_LAYER, LUNGS_LAYER, PROBABILITY_LAYER
from napari_chsnet.widgets.layer_facts import CT_LAYER_KEY

from .conftest import add_ct, show_known_result
from .test_segment_panel import choose_weights, run_segmentation

pytestmark = pytest.mark.gui
RESULTS = [PROBABILITY_LAYER, LUNGS_LAYER, INFECTION_LAYER]
SEVERITY_TITLE = "Severity (current layers)"  # the title while no run's CT is known


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def _chosen(widget):
    value = widget.segment.ct.value
    return None if value is None else value.name


def test_a_newly_opened_ct_becomes_the_pickers_choice_and_an_explicit_choice_stays(panel, small_phantom):
    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    assert _chosen(widget) == "first CT"
    show_known_result(widget, first, small_phantom)  # a probability map and Labels: not a CT
    assert _chosen(widget) == "first CT"

    add_ct(viewer, small_phantom, name="second CT")
    assert _chosen(widget) == "second CT"  # magicgui kept 'first CT' on the refresh

    widget.segment.ct.value = next(c for c in widget.segment.ct.choices if c.name == "first CT")
    viewer.add_labels(np.zeros(small_phantom.ct.hu.shape, np.uint8), name="my mask")
    viewer.add_image(np.zeros((8, 8), np.float32), name="a 2-D picture")
    show_known_result(widget, first, small_phantom)  # new result layers inserted
    assert _chosen(widget) == "first CT"


def test_a_ct_opened_during_a_run_is_chosen_once_the_run_ends(
    panel, qtbot, tiny_weights, small_phantom, user
):
    viewer, widget = panel
    add_ct(viewer, small_phantom, name="first CT")
    choose_weights(widget, user, tiny_weights)
    widget.segment.segment.native.click()
    assert widget.segment.running
    add_ct(viewer, small_phantom, name="second CT")
    assert _chosen(widget) == "first CT"  # locked: the run reads the first CT
    qtbot.waitUntil(lambda: not widget.segment.running, timeout=180_000)

    assert viewer.layers[LUNGS_LAYER].metadata[CT_LAYER_KEY] == "first CT"
    assert _chosen(widget) == "second CT"


def test_segment_after_opening_a_second_scan_runs_on_it_and_names_it(
    panel, qtbot, tiny_weights, small_phantom, user
):
    """The review's walk: P001 segmented, normal001 opened, Segment pressed. It re-ran P001 without
    a question, left the new layers under normal001, and named no CT in the status or the table."""
    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    show_known_result(widget, first, small_phantom)
    add_ct(viewer, small_phantom, name="second CT")
    choose_weights(widget, user, tiny_weights)
    user.confirm_answers.append(True)

    run_segmentation(qtbot, widget)

    assert len(user.questions) == 2  # the weights folder, then: replace the first CT's result?
    assert "'first CT'" in user.questions[1] and "'second CT'" in user.questions[1]
    assert viewer.layers[LUNGS_LAYER].metadata[CT_LAYER_KEY] == "second CT"
    assert _names(viewer) == ["first CT", "second CT", *RESULTS]
    assert widget.segment.status.value.startswith("Done (cpu, ")
    assert "'second CT'" in widget.segment.status.value
    assert widget.severity_box.title() == "Severity — 'second CT'"

    # The first scan chosen again by hand: it and its new result become the top of the stack.
    widget.segment.ct.value = next(c for c in widget.segment.ct.choices if c.name == "first CT")
    user.confirm_answers.append(True)
    run_segmentation(qtbot, widget)

    assert _names(viewer) == ["second CT", "first CT", *RESULTS]
    assert "'first CT'" in widget.segment.status.value
    assert widget.severity_box.title() == "Severity — 'first CT'"


def test_the_tables_title_follows_the_cts_name_and_says_when_it_is_closed(panel, small_phantom):
    viewer, widget = panel
    assert widget.severity_box.title() == SEVERITY_TITLE
    ct = add_ct(viewer, small_phantom, name="scan")
    show_known_result(widget, ct, small_phantom)
    assert widget.severity_box.title() == "Severity — 'scan'"

    ct.name = "scan renamed"
    assert widget.severity_box.title() == "Severity — 'scan renamed'"
    viewer.layers.remove(ct)
    assert widget.severity_box.title() == "Severity — 'scan' (closed)"
    for name in RESULTS:
        viewer.layers.remove(name)
    assert widget.severity_box.title() == SEVERITY_TITLE


def test_a_long_ct_name_is_cut_short_in_the_tables_title(panel, small_phantom):
    viewer, widget = panel
    name = "a CT layer whose name is far longer than any dock is wide"
    ct = add_ct(viewer, small_phantom, name=name)
    show_known_result(widget, ct, small_phantom)
    title = widget.severity_box.title()
    assert title.startswith("Severity — 'a CT layer") and title.endswith("…'") and name not in title
    assert name in widget.severity_box.toolTip()


def test_the_replace_question_speaks_of_one_layer_in_the_singular(panel, small_phantom, user):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    infection = viewer.layers[INFECTION_LAYER]
    infection.data_setitem((np.array([0]), np.array([0]), np.array([0])), 1)  # a correction
    user.confirm_answers.append(False)

    assert not widget.segment._confirm_replacing(ct)
    question = user.questions[-1]
    assert "The layer 'infection' was edited or not made by this run." in question
    assert "replaces it with the new result and its edits cannot be undone" in question
    assert "To keep it, press No and rename it" in question
    assert "layers" not in question and "them" not in question

    viewer.layers[LUNGS_LAYER].data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)
    user.confirm_answers.append(False)
    assert not widget.segment._confirm_replacing(ct)
    question = user.questions[-1]
    assert "The layers 'lungs', 'infection' were edited" in question
    assert "To keep them, press No and rename them" in question


def test_another_cts_single_layer_is_named_in_the_singular(panel, small_phantom, user):
    viewer, widget = panel
    first = add_ct(viewer, small_phantom, name="first CT")
    show_known_result(widget, first, small_phantom)
    for name in (LUNGS_LAYER, INFECTION_LAYER):  # kept under other names: only the map is at stake
        viewer.layers[name].name = f"{name} kept"
    second = add_ct(viewer, small_phantom, name="second CT")
    user.confirm_answers.append(False)

    assert not widget.segment._confirm_replacing(second)
    question = user.questions[-1]
    assert "The layer 'infection probability' holds the result of the CT 'first CT'" in question
    assert "replaces it with its own result" in question
    assert "To keep it, press No" in question


def test_the_picker_follows_only_cts_this_plugin_opens(panel, small_phantom):
    """A mask napari's own reader opens as an image, or a filtered copy another plugin adds, is a
    3-D single-channel image too: it must not take the picker from the CT the user chose."""
    viewer, widget = panel
    add_ct(viewer, small_phantom, name="first CT")
    assert _chosen(widget) == "first CT"
    viewer.add_image(small_phantom.lungs.astype(np.uint8), name="lungs_mask.tif")  # napari's reader
    assert _chosen(widget) == "first CT"
    viewer.add_image(small_phantom.ct.hu.astype(np.float32) * 0.5, name="gaussian of first CT")
    assert _chosen(widget) == "first CT"
    assert "gaussian of first CT" in [c.name for c in widget.segment.ct.choices]  # still offered

    add_ct(viewer, small_phantom, name="second CT")  # the plugin's reader: followed
    assert _chosen(widget) == "second CT"
