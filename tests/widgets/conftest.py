"""Fixtures of the widget tests: tiny random-init weights, a small CT, the docked panel, and a
stand-in user who answers the panel's dialogs from lists given by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_chsnet.io.phantom import Phantom, make_phantom
from napari_chsnet.napari_hooks import ct_layer

SMALL_SHAPE = (12, 96, 96)
PREPROCESSING = {
    "window_hu": [-1110, 255],
    "lung_input_size": 64,
    "infection_input_size": 64,
    "crop": "lungs",
}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights set of toy-width, random-init CHS-Net, EAMC and RD-UNet (masks are meaningless, fast;
    EAMC's 3 members read 32² patches of a 64² crop, where the bundled ones take minutes on a CPU)."""
    import torch

    from napari_chsnet.models.checkpoints import save_checkpoint
    from napari_chsnet.models.factory import build_model

    folder = tmp_path_factory.mktemp("tiny_weights")
    torch.manual_seed(0)
    save_checkpoint(
        folder / "chsnet.safetensors",
        build_model("chsnet", base_channels=4),
        "chsnet",
        metadata={"preprocessing": PREPROCESSING},
    )
    save_checkpoint(
        folder / "eamc.safetensors",
        build_model("eamc", n_members=3, base_channels=4),
        "eamc",
        metadata={"preprocessing": {**PREPROCESSING, "patch_size": 32}},
    )
    save_checkpoint(
        folder / "rdunet.safetensors",
        build_model("rdunet", base_channels=4, se_reduction=2),
        "rdunet",
        metadata={"preprocessing": PREPROCESSING},
    )
    return folder


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    return make_phantom(shape=SMALL_SHAPE, seed=1)


class ScriptedUser:
    """Answers the panel's questions in order from the lists a test fills; records each question.

    An unexpected question (an empty list) fails the test with IndexError.
    """

    def __init__(self) -> None:
        self.confirm_answers: list[bool] = []
        self.choices: list[str | None] = []  # answers to ``choose``: one of its choices, None = Cancel
        self.save_paths: list[Path | None] = []
        self.open_paths: list[Path | None] = []
        self.folders: list[Path | None] = []
        self.questions: list[str] = []
        self.suggested: list[Path] = []  # the paths the save dialogs proposed

    def confirm(self, title: str, text: str) -> bool:
        self.questions.append(text)
        return self.confirm_answers.pop(0)

    def choose(self, title: str, text: str, choices) -> str | None:
        self.questions.append(text)
        answer = self.choices.pop(0)
        assert answer is None or answer in choices, f"{answer!r} is not among {choices}"
        return answer

    def save_file(self, title: str, suggested: Path, file_filter: str) -> Path | None:
        self.questions.append(title)
        self.suggested.append(suggested)
        return self.save_paths.pop(0)

    def open_file(self, title: str, file_filter: str) -> Path | None:
        self.questions.append(title)
        return self.open_paths.pop(0)

    def folder(self, title: str, start: Path | None = None) -> Path | None:
        self.questions.append(title)
        self.suggested.append(start)
        return self.folders.pop(0)


@pytest.fixture
def user() -> ScriptedUser:
    return ScriptedUser()


@pytest.fixture
def notifications() -> list:
    """Every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def add_ct(viewer, phantom: Phantom, name: str = "small CT"):
    """Add a phantom's CT through the plugin's own layer builder (as the reader does)."""
    data, kwargs, _ = ct_layer(phantom.ct, name=name)
    return viewer.add_image(data, **kwargs)


@pytest.fixture
def panel(make_napari_viewer, user: ScriptedUser):
    """A viewer with the panel docked by its manifest name; dialogs answered by ``user``."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-chsnet", "CHS-Net Segment")
    widget.use_dialogs(user)
    return viewer, widget


def show_known_result(
    widget, ct, phantom: Phantom, lungs=None, infection=None, probability=None, model: str = "chsnet"
) -> None:
    """Put known masks on screen through the panel's own result display (as a finished run does)."""
    from napari_chsnet.report import RunInfo, compute_severity
    from napari_chsnet.report.case import CaseResult

    lungs = phantom.lungs.copy() if lungs is None else lungs
    infection = phantom.infection.copy() if infection is None else infection
    if probability is None:
        probability = np.where(infection > 0, 0.9, 0.0).astype(np.float32)
    result = CaseResult(
        lungs=lungs,
        infection=infection,
        probability=probability,
        severity=compute_severity(lungs, infection, phantom.ct.geometry),
        run_info=RunInfo(
            model=model, device="cpu", runtime_s=1.0, input=ct.metadata.get("chsnet_source", "")
        ),
        device="cpu",
        timings_s={"predict": 1.0},
    )
    widget.results.show(result, ct)
