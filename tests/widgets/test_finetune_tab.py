"""The Fine-tune tab as napari docks it (its viewer and layers are proxies): default layers, the
user's own choice of layers, and a version folder deleted by hand."""

from __future__ import annotations

import json

import pytest

from napari_chsnet.training.versions import BUNDLED, active_choice, user_weights_dir

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui


def test_the_ct_picker_defaults_to_the_ct_the_masks_belong_to(panel, small_phantom):
    viewer, widget = panel
    add_ct(viewer, small_phantom, name="other CT")
    ct = add_ct(viewer, small_phantom, name="segmented CT")
    show_known_result(widget, ct, small_phantom)
    widget.reset_choices()
    assert widget.finetune.ct.value.name == "segmented CT"


def test_the_users_choice_of_layers_survives_other_layer_changes(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    viewer.layers["lungs"].name = "lungs fixed"  # docs: rename corrected layers to keep them
    viewer.layers["infection"].name = "infection fixed"
    show_known_result(widget, ct, small_phantom)  # a new run: fresh lungs and infection
    tab = widget.finetune
    assert (tab.lungs.value.name, tab.infection.value.name) == ("lungs", "infection")  # the defaults

    tab.lungs.value = viewer.layers["lungs fixed"]
    tab.infection.value = viewer.layers["infection fixed"]
    viewer.add_points(name="a note")
    viewer.layers.remove("a note")
    assert (tab.lungs.value.name, tab.infection.value.name) == ("lungs fixed", "infection fixed")

    viewer.layers.remove("lungs fixed")  # a chosen layer that is gone: back to the default
    assert tab.lungs.value.name == "lungs" and tab.infection.value.name == "infection fixed"


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
