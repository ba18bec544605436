"""The Fine-tune tab as napari docks it, with the training replaced by a stand-in: a case that
cannot be trained on is refused before anything is saved, a Cancel that comes as the fine-tune
finishes leaves no version, and a new version shows in the Segment tab's Weights list."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from napari_chsnet.inference.versions import corrections_dir, list_versions, user_weights_dir

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui

VERSION = "20990101-000000"


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    return tmp_path


class FakeFinetune:
    """Stands in for training.finetune.finetune: writes a version folder and returns its result,
    after waiting for ``proceed`` (the test presses buttons meanwhile); it never polls
    ``should_stop``, like a fine-tune past its last check when Cancel is pressed."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()
        self.calls = 0

    def __call__(self, base, model, cases, **options):
        from napari_chsnet.training.finetune import FinetuneResult

        self.calls += 1
        self.entered.set()
        assert self.proceed.wait(30)
        folder = user_weights_dir() / model / VERSION
        folder.mkdir(parents=True)
        info = {"model": model, "cases": [c.name for c in cases], "dice_before": 0.5, "dice_after": 0.6}
        (folder / "version.json").write_text(json.dumps(info))
        return FinetuneResult(folder, folder / f"{model}.safetensors", 0.5, 0.6)


@pytest.fixture
def fake(monkeypatch) -> FakeFinetune:
    import napari_chsnet.training.finetune as training

    stand_in = FakeFinetune()
    monkeypatch.setattr(training, "finetune", stand_in)
    return stand_in


def _errors(notifications) -> list[str]:
    return [str(n.message) for n in notifications if n.severity == "error"]


def _correct_a_slice(viewer, phantom) -> int:
    """Paint one voxel of infection inside the lungs (a correction, so Start has a slice to train on)."""
    z, y, x = np.argwhere(phantom.lungs > 0)[0]
    viewer.layers["infection"].data_setitem((np.array([z]), np.array([y]), np.array([x])), 1)
    return int(z)


def test_a_new_version_is_listed_in_the_segment_tabs_weights(home, panel, small_phantom, fake, qtbot):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    assert widget.segment.weights.choices == ("bundled",)
    _correct_a_slice(viewer, small_phantom)

    tab.start.clicked.emit()
    qtbot.waitUntil(lambda: not tab.running, timeout=30_000)

    folder = str(user_weights_dir() / "chsnet" / VERSION)
    assert tab.status.value.startswith("Dice on the corrected slices")
    assert folder in widget.segment.weights.choices
    assert widget.segment.weights.value == "bundled"  # listed, not chosen: "Re-segment" chooses it

    folder_path = user_weights_dir() / "chsnet" / VERSION
    (folder_path / "version.json").unlink()  # deleted by hand, then Revert refreshes the list too
    folder_path.rmdir()
    tab.revert_to_bundled()
    assert widget.segment.weights.choices == ("bundled",) and widget.segment.weights.value == "bundled"


def test_cancel_pressed_as_the_fine_tune_finishes_leaves_no_version(
    home, panel, small_phantom, fake, qtbot, notifications
):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    _correct_a_slice(viewer, small_phantom)
    fake.proceed.clear()

    tab.start.clicked.emit()
    assert fake.entered.wait(30)
    tab.cancel.clicked.emit()  # the user cancels during the last step...
    fake.proceed.set()  # ...and the fine-tune, past its last check, writes its version anyway
    qtbot.waitUntil(lambda: not tab.running, timeout=30_000)

    assert tab.status.value == "cancelled; the weights are unchanged"
    assert tab.last_result is None
    assert list_versions("chsnet") == [] and not (user_weights_dir() / "chsnet" / VERSION).exists()
    assert tab.versions.choices == (None,) and widget.segment.weights.choices == ("bundled",)
    # Said as a cancelled segmentation is: the weights are unchanged, the saved correction is kept.
    (saved,) = list(corrections_dir().iterdir())
    cancelled = [
        str(n.message) for n in notifications if n.severity == "info" and "cancelled" in str(n.message)
    ]
    assert cancelled == [
        f"Fine-tuning cancelled; the weights are unchanged. The corrected case stays in {saved} for later "
        "fine-tunes to replay."
    ]


def test_an_empty_lungs_layer_is_refused_before_anything_is_saved(
    home, panel, small_phantom, fake, notifications
):
    """s4: an image and an empty Labels layer; the fine-tune failed with CLI words (--all-slices)
    after saving a whole CT copy with empty masks into the corrections folder."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom, name="mr")
    on_ct = {"scale": ct.scale, "translate": ct.translate}  # as napari's New Labels button places them
    empty = viewer.add_labels(np.zeros(small_phantom.lungs.shape, np.uint8), name="lab", **on_ct)
    other = viewer.add_labels(small_phantom.infection.copy(), name="other", **on_ct)
    tab = widget.finetune
    tab.lungs.value, tab.infection.value = empty, other

    tab.start.clicked.emit()

    errors = _errors(notifications)
    assert errors and "the chosen Lungs layer 'lab' is empty" in errors[-1]
    assert "--" not in errors[-1]
    assert not tab.running and fake.calls == 0 and not corrections_dir().exists()


def test_edited_slices_without_lung_are_refused_in_the_tabs_words(
    home, panel, small_phantom, fake, notifications
):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    no_lung = int(np.flatnonzero(~small_phantom.lungs.reshape(small_phantom.lungs.shape[0], -1).any(1))[0])
    viewer.layers["infection"].data_setitem((np.array([no_lung]), np.array([3]), np.array([3])), 1)
    assert tab.edited_slices() == (no_lung,)

    tab.start.clicked.emit()

    errors = _errors(notifications)
    assert errors and f"slices you edited ({no_lung})" in errors[-1]
    assert "untick 'Only edited slices'" in errors[-1] and "--all-slices" not in errors[-1]
    assert not tab.running and fake.calls == 0 and not corrections_dir().exists()


def test_masks_on_another_grid_are_refused_before_anything_is_saved(
    home, panel, small_phantom, fake, notifications
):
    viewer, widget = panel
    add_ct(viewer, small_phantom)
    lungs = viewer.add_labels(small_phantom.lungs[:, :48].copy(), name="lungs")
    viewer.add_labels(small_phantom.infection[:, :48].copy(), name="infection")
    tab = widget.finetune
    assert tab.lungs.value is lungs

    tab.start.clicked.emit()

    errors = _errors(notifications)
    assert (
        errors
        and "the chosen Lungs layer 'lungs'" in errors[-1]
        and "choose masks drawn on this CT" in errors[-1]
    )
    assert not tab.running and fake.calls == 0 and not corrections_dir().exists()


def test_masks_of_the_same_shape_placed_elsewhere_are_refused_too(
    home, panel, small_phantom, fake, notifications
):
    """Same voxel count, another voxel size and position (another scan's masks): refused, not trained on."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    lungs = viewer.add_labels(small_phantom.lungs.copy(), name="lungs", scale=np.asarray(ct.scale) * 1.2)
    viewer.add_labels(
        small_phantom.infection.copy(),
        name="infection",
        scale=ct.scale,
        translate=np.asarray(ct.translate) + 40,
    )
    tab = widget.finetune
    assert tab.lungs.value is lungs

    tab.start.clicked.emit()

    errors = _errors(notifications)
    assert errors and "'lungs' lies elsewhere than the CT" in errors[-1]
    assert not tab.running and fake.calls == 0 and not corrections_dir().exists()
