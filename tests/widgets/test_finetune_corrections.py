"""What the Fine-tune tab trains on and what it says afterwards, with the training replaced by a
stand-in that records its arguments: the run's own (edited) masks rather than ground truth opened
before the run, only edited slices (remembered by the layers, so a reopened panel knows them), the
masks as they were when Start was pressed, the Segment tab's device, and a result that improved
nothing told as such. Also the Segment tab's out-of-memory message."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from napari_chsnet.inference.versions import corrections_dir, user_weights_dir
from napari_chsnet.widgets.layer_facts import EDITED_KEY, EDITED_SLICES_KEY

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui
PANEL = ("napari-chsnet", "CHS-Net Segment")
VERSION = "20990101-000000"
TIMEOUT_MS = 30_000


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    return tmp_path


class RecordingFinetune:
    """Stands in for training.finetune.finetune: records each call's cases and options, waits for
    ``proceed`` (the test paints meanwhile), writes a version folder and returns a result whose
    fields ``outcome`` sets (Dice 0.5 → 0.6, improved, unless told otherwise)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, dict]] = []
        self.entered = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()
        self.outcome: dict = {}

    def __call__(self, base, model, cases, **options):
        from napari_chsnet.training.finetune import FinetuneResult

        self.calls.append((list(cases), options))
        self.entered.set()
        assert self.proceed.wait(30)
        folder = user_weights_dir() / model / VERSION
        folder.mkdir(parents=True)
        (folder / "version.json").write_text(json.dumps({"model": model, "cases": [c.name for c in cases]}))
        fields = {"dice_before": 0.5, "dice_after": 0.6, **self.outcome}
        return FinetuneResult(folder, folder / f"{model}.safetensors", **fields)


@pytest.fixture
def fake(monkeypatch) -> RecordingFinetune:
    import napari_chsnet.training.finetune as training

    stand_in = RecordingFinetune()
    monkeypatch.setattr(training, "finetune", stand_in)
    return stand_in


def _messages(notifications, severity: str) -> list[str]:
    return [str(n.message) for n in notifications if n.severity == severity]


def _inside_lung(phantom, index: int = 0) -> tuple[int, int, int]:
    z, y, x = np.argwhere(phantom.lungs > 0)[index]
    return int(z), int(y), int(x)


def _paint(layer, where: tuple[int, int, int], value: int) -> None:
    """One voxel through ``data_setitem`` (what a brush stroke records too: a paint event)."""
    layer.data_setitem(tuple(np.array([v]) for v in where), value)


def _start_and_wait(qtbot, tab) -> None:
    tab.start.clicked.emit()
    assert tab.running
    qtbot.waitUntil(lambda: not tab.running, timeout=TIMEOUT_MS)


# ---------------------------------------------------------------- which layers (flow1)
def test_the_runs_masks_replace_ground_truth_chosen_before_the_run(home, panel, small_phantom, fake, qtbot):
    """File → Open Sample adds ground-truth masks; segmenting and painting the run's masks then
    trained on the ground truth, which the pickers had kept since before the run."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    viewer.add_labels(small_phantom.lungs.copy(), name="lungs (ground truth)")
    viewer.add_labels(small_phantom.infection.copy(), name="infection (ground truth)")
    tab = widget.finetune
    assert (tab.lungs.value.name, tab.infection.value.name) == (
        "lungs (ground truth)",
        "infection (ground truth)",
    )

    show_known_result(widget, ct, small_phantom, infection=np.zeros_like(small_phantom.infection))

    assert (tab.lungs.value.name, tab.infection.value.name) == ("lungs", "infection")
    infection = viewer.layers["infection"]
    _paint(infection, _inside_lung(small_phantom), 1)
    _start_and_wait(qtbot, tab)
    case = fake.calls[0][0][0]
    np.testing.assert_array_equal(case.infection, infection.data)
    np.testing.assert_array_equal(case.lungs, viewer.layers["lungs"].data)


def test_a_layer_the_user_chose_is_kept_over_the_runs_masks(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    truth = viewer.add_labels(small_phantom.infection.copy(), name="infection (ground truth)")
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    assert tab.infection.value.name == "infection"
    tab.infection.value = truth  # the user's own choice, not a default
    show_known_result(widget, ct, small_phantom)  # a new run
    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)
    assert tab.infection.value.name == "infection (ground truth)" and tab.lungs.value.name == "lungs"


def test_a_fresh_mask_becomes_the_default_once_it_is_edited(panel, small_phantom, qtbot):
    """Renamed run masks stay chosen when a new run brings fresh ones (docs: rename to keep), until
    the fresh mask is the one corrected."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    viewer.layers["infection"].name = "infection kept"
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    assert tab.infection.value.name == "infection kept"

    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)

    qtbot.waitUntil(lambda: tab.infection.value.name == "infection", timeout=5000)


# ---------------------------------------------------------------- edited slices (flow3)
def test_start_without_an_edit_is_refused_and_says_what_to_do(
    home, panel, small_phantom, fake, notifications, qtbot
):
    """It trained on every slice of the model's own output, saved as a correction with no slice."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    tab = widget.finetune
    assert tab.only_edited.value

    tab.start.clicked.emit()

    errors = _messages(notifications, "error")
    assert errors and "was edited" in errors[-1] and "untick 'Only edited slices'" in errors[-1]
    assert "paint" in errors[-1] and "--" not in errors[-1]
    assert not tab.running and fake.calls == [] and not corrections_dir().exists()

    tab.only_edited.value = False  # masks corrected outside napari: every slice with lung
    _start_and_wait(qtbot, tab)
    cases, options = fake.calls[0]
    assert cases[0].edited_slices is None and options["only_edited_slices"] is False


def test_edited_slices_outlive_the_panel(home, make_napari_viewer, small_phantom, fake, qtbot):
    """They were kept in the panel only: closed and opened again, it trained on every slice."""
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs, infection = viewer.layers["lungs"], viewer.layers["infection"]
    z_lung, y, x = _inside_lung(small_phantom)
    _paint(lungs, (z_lung, y, x), 3 - int(lungs.data[z_lung, y, x]))  # right ↔ left
    z_inf = int(np.argwhere(small_phantom.lungs > 0)[-1][0])
    _paint(infection, _inside_lung(small_phantom, -1), 1)
    expected = tuple(sorted({z_lung, z_inf}))
    assert widget.finetune.edited_slices() == expected
    assert infection.metadata[EDITED_SLICES_KEY] == [z_inf] and infection.metadata[EDITED_KEY]

    dock.title.close_button.click()
    infection.name = "infection fixed"  # the slices follow the layer
    _dock, reopened = viewer.window.add_plugin_dock_widget(*PANEL)

    tab = reopened.finetune
    assert tab.infection.value.name == "infection fixed"
    assert tab.edited_slices() == expected
    _start_and_wait(qtbot, tab)
    case = fake.calls[0][0][0]
    assert case.edited_slices == expected and case.lungs_edited


# ---------------------------------------------------------------- what is saved (flow9)
def test_strokes_made_after_start_stay_out_of_the_case(home, panel, small_phantom, fake, qtbot):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom, infection=np.zeros_like(small_phantom.infection))
    infection = viewer.layers["infection"]
    _paint(infection, _inside_lung(small_phantom), 1)
    tab = widget.finetune
    fake.proceed.clear()
    tab.start.clicked.emit()
    assert fake.entered.wait(30)

    later = _inside_lung(small_phantom, -1)
    _paint(infection, later, 1)  # painted while the fine-tune runs
    fake.proceed.set()
    qtbot.waitUntil(lambda: not tab.running, timeout=TIMEOUT_MS)

    case = fake.calls[0][0][0]
    assert case.infection[later] == 0 and infection.data[later] == 1
    assert not np.shares_memory(case.infection, infection.data)
    assert not np.shares_memory(case.lungs, viewer.layers["lungs"].data)


# ---------------------------------------------------------------- device (review 6)
def test_the_fine_tune_runs_on_the_segment_tabs_device(home, panel, small_phantom, fake, qtbot):
    """A user who chose the CPU (the GPU is busy) had the fine-tune run on CUDA anyway."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)
    widget.segment.device.value = "cpu"

    _start_and_wait(qtbot, widget.finetune)

    assert fake.calls[0][1]["device"] == "cpu"


# ---------------------------------------------------------------- the result (flow8)
def test_a_fine_tune_that_improved_nothing_says_the_version_holds_the_starting_weights(
    home, panel, small_phantom, fake, qtbot, notifications
):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)
    fake.outcome = {"dice_before": 0.975, "dice_after": 0.975, "improved": False}

    _start_and_wait(qtbot, widget.finetune)

    infos = _messages(notifications, "info")
    assert infos and "no epoch improved on the corrected slices" in infos[-1]
    assert f"the new version {VERSION} holds the starting weights" in infos[-1]
    assert "Fine-tuned" not in infos[-1] and "Tune the lung stage" not in infos[-1]
    assert widget.finetune.status.value.startswith("no epoch improved")


def test_lung_only_corrections_hint_at_tuning_the_lung_stage(
    home, panel, small_phantom, fake, qtbot, notifications
):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs = viewer.layers["lungs"]
    z, y, x = _inside_lung(small_phantom)
    _paint(lungs, (z, y, x), 3 - int(lungs.data[z, y, x]))  # only the lungs corrected
    fake.outcome = {"dice_before": 0.975, "dice_after": 0.975, "improved": False}
    assert not widget.finetune.tune_lungs.value

    _start_and_wait(qtbot, widget.finetune)

    infos = _messages(notifications, "info")
    assert "no epoch improved" in infos[-1] and "tick 'Tune the lung stage too'" in infos[-1]


@pytest.mark.parametrize(
    ("model", "outcome", "lungs_only", "says", "never"),
    [
        ("chsnet", {}, False, ["Fine-tuned CHS-Net", "0.500 → 0.600", "New version"], ["no epoch"]),
        (
            "chsnet",
            {"lung_dice_before": 0.8, "lung_dice_after": 0.9, "improved": False, "lung_improved": True},
            False,
            ["Fine-tuned", "lungs 0.800 → 0.900", "No epoch improved the infection stage"],
            [],
        ),
        (
            "chsnet",
            {"lung_dice_before": 0.8, "lung_dice_after": 0.8, "improved": True, "lung_improved": False},
            False,
            ["Fine-tuned", "No epoch improved the lung stage"],
            [],
        ),
        (
            "rdunet",
            {"dice_after": 0.5, "improved": False},
            True,
            # an RD-UNet set keeps its own lung stage: a tuned CHS-Net's lungs are not used by it
            ["holds the starting weights", "own copy of CHS-Net's lung stage", "segmenting with CHS-Net"],
            [],
        ),
        (
            "chsnet",
            {"false_positive_before": 0.012, "false_positive_after": 0.004},
            False,
            ["infection predicted on 1.20 % → 0.40 %"],
            ["Dice"],
        ),
    ],
)
def test_result_message(tmp_path, model, outcome, lungs_only, says, never):
    from napari_chsnet.training.finetune import FinetuneResult
    from napari_chsnet.widgets.finetune import result_message

    result = FinetuneResult(tmp_path / VERSION, tmp_path / VERSION / "x.safetensors", 0.5, 0.6)
    for key, value in outcome.items():
        setattr(result, key, value)
    _status, message = result_message(result, model, tune_lungs=False, lungs_only=lungs_only)
    assert all(text in message for text in says), message
    assert not any(text in message for text in never), message


# ---------------------------------------------------------------- Segment: out of memory (review 7)
def test_out_of_memory_is_one_line_and_the_memory_is_given_back(
    panel, small_phantom, monkeypatch, qtbot, notifications
):
    import torch

    from napari_chsnet.inference import device, pipeline
    from napari_chsnet.report import case

    released = []
    monkeypatch.setattr(device, "release_device_memory", lambda: released.append(True))

    def out_of_memory(_volume, _settings):
        yield pipeline.Progress(0, 2, "lungs")
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB of which "
            "1.02 GiB is free. If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
        )

    monkeypatch.setattr(case, "iter_case", out_of_memory)
    viewer, widget = panel
    add_ct(viewer, small_phantom)

    widget.segment.run()
    qtbot.waitUntil(lambda: not widget.segment.running, timeout=TIMEOUT_MS)

    assert _messages(notifications, "error")[-1] == (
        "Segmentation ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); "
        "lower the Batch size or choose the CPU as Device."
    )
    assert released == [True]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RuntimeError("CUDA error: an illegal memory access was encountered"),
            "Segmentation failed (RuntimeError: CUDA error: an illegal memory access was encountered).",
        ),
        (
            MemoryError(
                "Unable to allocate 2.00 GiB for an array with shape (512, 512, 2048) and data type float32"
            ),
            "Segmentation ran out of memory (Unable to allocate 2.00 GiB for an array with shape (512, 512, 2048) "
            "and data type float32); lower the Batch size or choose the CPU as Device.",
        ),
    ],
    ids=["runtime-error", "host-memory"],
)
def test_a_failed_run_ends_with_its_reason(
    panel, small_phantom, monkeypatch, qtbot, notifications, error, expected
):
    """superqt's GeneratorWorker drops a RuntimeError (it takes it for a deleted worker): the panel
    stayed 'running' for ever, with no notification."""
    from napari_chsnet.inference import pipeline
    from napari_chsnet.report import case

    def failing(_volume, _settings):
        yield pipeline.Progress(0, 2, "lungs")
        raise error

    monkeypatch.setattr(case, "iter_case", failing)
    viewer, widget = panel
    add_ct(viewer, small_phantom)

    widget.segment.run()
    qtbot.waitUntil(lambda: not widget.segment.running, timeout=TIMEOUT_MS)

    assert _messages(notifications, "error")[-1] == expected
    assert widget.segment.segment.enabled
