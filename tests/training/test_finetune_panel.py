"""The Fine-tune tab under pytest-qt: edited slices tracked, cancel writes nothing, a version appears."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_chsnet.inference.versions import (
    BUNDLED,
    active_choice,
    corrections_dir,
    list_versions,
    user_weights_dir,
)
from napari_chsnet.models.checkpoints import file_sha256
from napari_chsnet.napari_hooks import ct_layer
from napari_chsnet.resources_path import resources_dir

pytestmark = pytest.mark.gui


def _resource_hashes():
    return {str(p): file_sha256(p) for p in sorted(resources_dir().rglob("*")) if p.is_file()}


def test_edited_slices_of_both_history_atom_kinds(phantom):
    from napari.layers import Labels

    from napari_chsnet.widgets.layer_facts import edited_slices_of

    layer = Labels(np.zeros(phantom.lungs.shape, dtype=np.uint8))
    seen = []
    layer.events.paint.connect(lambda event: seen.append(edited_slices_of(event.value, layer.data.shape[0])))
    layer.data_setitem((np.array([2, 2, 6]), np.array([10, 11, 12]), np.array([10, 10, 10])), 1)
    layer.paint((5, 32, 32), 1)  # brush: a masked atom
    assert seen == [{2, 6}, {5}]


def test_finetune_panel_cancels_then_writes_a_version(make_napari_viewer, qtbot, phantom, tiny_set):
    from napari_chsnet.widgets.finetune import FinetunePanel
    from napari_chsnet.widgets.results import ResultLayers

    base = user_weights_dir() / "chsnet" / "20000101-000000"
    shutil.copytree(tiny_set, base)
    (base / "version.json").write_text(json.dumps({"model": "chsnet", "cases": ["training"]}))
    bundled = _resource_hashes()

    viewer = make_napari_viewer()
    data, kwargs, _ = ct_layer(phantom.ct, name="phantom CT")
    viewer.add_image(data, **kwargs)
    lungs = viewer.add_labels(
        phantom.lungs.copy(), name="lungs", scale=kwargs["scale"], translate=kwargs["translate"]
    )
    infection = viewer.add_labels(
        np.zeros_like(phantom.infection),
        name="infection",
        scale=kwargs["scale"],
        translate=kwargs["translate"],
    )
    panel = FinetunePanel(viewer, ResultLayers(viewer))
    assert panel.lungs.value is lungs and panel.infection.value is infection

    # the radiologist paints the lesions of slices 3 and 4
    for z in (3, 4):
        where = np.nonzero(phantom.infection[z])
        infection.data_setitem((np.full(where[0].size, z), *where), 1)
    assert panel.edited_slices() == (3, 4)
    panel.ct.value = viewer.layers["phantom CT"]
    panel.base.value = base.name
    panel.replay.value = 0.0

    panel.epochs.value = 200
    panel.start.clicked.emit()
    qtbot.waitUntil(lambda: panel.status.value.startswith("step"), timeout=60_000)
    panel.cancel.clicked.emit()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.status.value == "cancelled; the weights are unchanged"
    assert [v.path for v in list_versions("chsnet")] == [base]
    assert (corrections_dir() / "phantom_CT" / "edited_slices.json").is_file()  # saved for replay

    panel.epochs.value = 1
    panel.start.clicked.emit()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    result = panel.last_result
    assert result is not None and result.corrected_slices == 2
    # one epoch may not beat the starting weights: the status says which it was
    expected = (
        "Dice on the corrected slices" if result.improved else "no epoch improved (Dice on the corrected"
    )
    assert panel.status.value.startswith(expected)
    assert [v.path for v in list_versions("chsnet")] == [result.weights_dir, base]
    assert panel.versions.value == result.weights_dir.name

    panel.resegment_with_version()
    assert active_choice("chsnet") == result.weights_dir.name
    panel.revert_to_bundled()
    assert active_choice("chsnet") == BUNDLED and result.weights_dir.exists()
    assert _resource_hashes() == bundled


def test_a_second_ct_of_the_same_name_is_saved_beside_the_first(make_napari_viewer, phantom, monkeypatch):
    """Two patients' scans both opened from a ct.nii.gz: the second correction gets its own folder,
    and the fine-tune is told that folder (so replay skips this case, not the other patient's)."""
    import dataclasses

    import napari_chsnet.training.finetune as training
    from napari_chsnet.training.corrections import CorrectedCase
    from napari_chsnet.widgets.finetune import FinetunePanel
    from napari_chsnet.widgets.results import ResultLayers

    tuned = []
    monkeypatch.setattr(
        training, "finetune", lambda base, model, cases, **options: tuned.append(cases[0].name)
    )
    viewer = make_napari_viewer()
    panel = FinetunePanel(viewer, ResultLayers(viewer))
    other_ct = dataclasses.replace(phantom.ct, hu=phantom.ct.hu + 7)
    for ct in (phantom.ct, other_ct, phantom.ct):
        panel._work(CorrectedCase(ct, phantom.lungs, phantom.infection, "ct"), None, "rdunet", {})

    assert tuned == ["ct", "ct-2", "ct"]
    assert sorted(p.name for p in corrections_dir().iterdir()) == ["ct", "ct-2"]
