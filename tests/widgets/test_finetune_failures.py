"""The Fine-tune tab on a gantry-tilted CT (a skewed grid kept in an .mha/.nrrd) and when the training
runs out of memory."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from napari_chsnet.inference.versions import corrections_dir

from .conftest import add_ct, show_known_result
from .test_finetune_corrections import RecordingFinetune, _inside_lung, _messages, _paint, _start_and_wait

pytestmark = pytest.mark.gui


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake(monkeypatch) -> RecordingFinetune:
    import napari_chsnet.training.finetune as training

    stand_in = RecordingFinetune()
    monkeypatch.setattr(training, "finetune", stand_in)
    return stand_in


def test_the_finetune_tab_trains_on_a_gantry_tilted_ct(
    home, panel, small_phantom, fake, qtbot, notifications
):
    """Saving the correction (NIfTI) was refused for the skewed grid: the tab always failed."""
    tilt = math.radians(15)
    geometry = dataclasses.replace(
        small_phantom.ct.geometry, direction=(1, 0, 0, 0, 1, math.sin(tilt), 0, 0, math.cos(tilt))
    )
    tilted = dataclasses.replace(small_phantom, ct=dataclasses.replace(small_phantom.ct, geometry=geometry))
    viewer, widget = panel
    ct = add_ct(viewer, tilted)
    show_known_result(widget, ct, small_phantom)
    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)
    _start_and_wait(qtbot, widget.finetune)
    assert _messages(notifications, "error") == []
    assert len(fake.calls) == 1
    [saved] = [p for p in corrections_dir().iterdir() if not p.name.startswith(".")]
    straightened = json.loads((saved / "edited_slices.json").read_text())["grid_straightened"]
    assert straightened["skew_deg"] == pytest.approx(15)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "cuda",
            "Fine-tuning ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); "
            "choose the CPU as Device on the Segment tab (the fine-tune trains there).",
        ),
        (
            "host",
            "Fine-tuning ran out of memory (Unable to allocate 2.00 GiB for an array with shape (512, 512, 2048) "
            "and data type float32); choose the CPU as Device on the Segment tab (the fine-tune trains there).",
        ),
    ],
)
def test_out_of_memory_while_fine_tuning_is_one_line_and_the_memory_is_given_back(
    home, panel, small_phantom, monkeypatch, qtbot, notifications, error, expected
):
    """The tab showed torch's whole paragraph on allocator settings and kept torch's cache."""
    import torch

    import napari_chsnet.training.finetune as training
    from napari_chsnet.inference import device

    released = []
    monkeypatch.setattr(device, "release_device_memory", lambda: released.append(True))

    def out_of_memory(*_args, **_kwargs):
        if error == "host":
            raise MemoryError(
                "Unable to allocate 2.00 GiB for an array with shape (512, 512, 2048) and data type float32"
            )
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB of which "
            "1.02 GiB is free. If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
        )

    monkeypatch.setattr(training, "finetune", out_of_memory)
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)
    _start_and_wait(qtbot, widget.finetune)
    assert _messages(notifications, "error")[-1] == expected
    assert widget.finetune.status.value == "failed"
    assert released == [True]


def test_another_failure_keeps_its_one_line(home, panel, small_phantom, monkeypatch, qtbot, notifications):
    import napari_chsnet.training.finetune as training

    def broken(*_args, **_kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(training, "finetune", broken)
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    _paint(viewer.layers["infection"], _inside_lung(small_phantom), 1)
    _start_and_wait(qtbot, widget.finetune)
    assert _messages(notifications, "error")[-1] == (
        "Fine-tuning failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    )
