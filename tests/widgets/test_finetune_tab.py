"""The Fine-tune tab as napari docks it (its viewer and layers are proxies): default layers, the
user's own choice of layers, and a version folder deleted by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_chsnet.inference.versions import BUNDLED, active_choice, user_weights_dir

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui


def test_the_ct_picker_defaults_to_the_ct_the_masks_belong_to(panel, small_phantom):
    viewer, widget = panel
    add_ct(viewer, small_phantom, name="other CT")
    ct = add_ct(viewer, small_phantom, name="segmented CT")
    show_known_result(widget, ct, small_phantom)
    widget.reset_choices()
    assert widget.finetune.ct.value.name == "segmented CT"


def test_the_model_follows_the_run_that_made_the_masks_until_the_user_chooses_one(panel, small_phantom):
    """The Model stayed CHS-Net for an RD-UNet's masks: the correction trained CHS-Net, and
    "Re-segment with it" switched the Segment tab to CHS-Net."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    tab = widget.finetune
    show_known_result(widget, ct, small_phantom, model="rdunet")
    assert tab.model.value == "rdunet"
    assert tab.tune_lungs.enabled is False  # the model's own settings follow too

    show_known_result(widget, ct, small_phantom, model="eamc")  # a new run of another model
    assert tab.model.value == "eamc"

    tab.model.value = "chsnet"  # the user's pick is kept
    show_known_result(widget, ct, small_phantom, model="rdunet")
    assert tab.model.value == "chsnet"


def test_renamed_corrected_layers_stay_in_their_own_pickers(panel, small_phantom):
    """docs/workflow.md: rename the corrected layers to keep them. Renaming `lungs` then `infection`
    had put "lungs corrected" under Infection too (Start trained the infection stage on the lungs)."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    viewer.layers["lungs"].name = "lungs corrected"
    viewer.layers["infection"].name = "infection corrected"
    assert (tab.lungs.value.name, tab.infection.value.name) == ("lungs corrected", "infection corrected")
    tab.only_edited.value = False  # nothing was painted: train on every slice with lung
    case = tab.corrected_case()
    np.testing.assert_array_equal(case.infection, viewer.layers["infection corrected"].data)
    np.testing.assert_array_equal(case.lungs, viewer.layers["lungs corrected"].data)


def test_the_pickers_keep_their_layers_through_renames_runs_and_other_layers(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    viewer.layers["lungs"].name = "lungs fixed"  # docs: rename corrected layers to keep them
    viewer.layers["infection"].name = "infection fixed"
    show_known_result(widget, ct, small_phantom)  # a new run: fresh lungs and infection
    tab = widget.finetune
    # the corrected layers stay chosen, not the new run's uncorrected output
    assert (tab.lungs.value.name, tab.infection.value.name) == ("lungs fixed", "infection fixed")
    assert tab.ct.value.name == ct.name

    tab.lungs.value = viewer.layers["lungs"]  # the user's own choice
    tab.infection.value = viewer.layers["infection"]
    viewer.add_points(name="a note")
    viewer.layers.remove("a note")
    viewer.layers["infection"].name = "infection 2"
    assert (tab.lungs.value.name, tab.infection.value.name) == ("lungs", "infection 2")

    viewer.layers.remove("lungs")  # a chosen layer that is gone: a layer that looks like lungs
    assert tab.lungs.value.name == "lungs fixed" and tab.infection.value.name == "infection 2"


def test_a_mask_picker_the_user_empties_stays_empty_until_they_choose(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    assert tab.infection.value.name == "infection"
    tab.infection.value = None  # e.g. to pick the corrected mask once it is opened
    viewer.add_points(name="a note")  # any change of the layer list refills the pickers
    show_known_result(widget, ct, small_phantom)
    assert tab.infection.value is None and tab.lungs.value.name == "lungs"
    tab.infection.value = viewer.layers["infection"]
    assert tab.infection.value.name == "infection"


def test_masks_opened_from_files_are_never_put_in_both_pickers(panel, small_phantom):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    tab = widget.finetune
    viewer.add_labels(small_phantom.lungs.copy(), name="P001_lungs")
    assert tab.lungs.value.name == "P001_lungs" and tab.infection.value is None
    viewer.add_labels(small_phantom.infection.copy(), name="P001_inf")
    assert (tab.lungs.value.name, tab.infection.value.name) == ("P001_lungs", "P001_inf")

    viewer.layers.remove("P001_lungs")
    viewer.layers.remove("P001_inf")
    viewer.add_labels(small_phantom.lungs.copy(), name="mask A")  # names that say nothing
    viewer.add_labels(small_phantom.infection.copy(), name="mask B")
    assert tab.lungs.value is None and tab.infection.value is None


def test_a_run_layer_is_known_by_its_metadata_under_any_name(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    viewer.layers["lungs"].name = "A"
    viewer.layers["infection"].name = "B"
    from napari_chsnet.widgets.layer_facts import mask_kind

    assert (mask_kind(viewer.layers["A"]), mask_kind(viewer.layers["B"])) == ("lungs", "infection")
    # a fresh panel (reopened) finds them by kind, each in its own picker
    from napari_chsnet.widgets.finetune import FinetunePanel

    fresh = FinetunePanel(viewer, widget.results)
    assert (fresh.lungs.value.name, fresh.infection.value.name, fresh.ct.value.name) == ("A", "B", ct.name)
    fresh.disconnect_viewer()


def test_start_refuses_the_same_layer_in_both_pickers(
    panel, small_phantom, monkeypatch, tmp_path, notifications
):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    tab.infection.value = viewer.layers["lungs"]

    tab.start.clicked.emit()

    errors = [str(n.message) for n in notifications if n.severity == "error"]
    assert errors and "both 'lungs'" in errors[-1] and "Infection" in errors[-1]
    assert not tab.running and not (tmp_path / "corrections").exists()


def test_a_version_deleted_by_hand_is_a_notification_not_a_traceback(
    panel, monkeypatch, tmp_path, notifications
):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    viewer, widget = panel
    folder = user_weights_dir() / "chsnet" / "20240101-120000"
    folder.mkdir(parents=True)
    (folder / "version.json").write_text(json.dumps({"model": "chsnet", "cases": ["P1"]}))
    tab = widget.finetune
    tab.versions.reset_choices()
    tab.versions.value = folder.name
    (folder / "version.json").unlink()
    folder.rmdir()

    tab.resegment_with_version()

    errors = [str(n.message) for n in notifications if n.severity == "error"]
    assert errors and "20240101-120000" in errors[-1]
    assert active_choice("chsnet") == BUNDLED and not widget.segment.running
    assert folder.name not in tab.versions.choices
