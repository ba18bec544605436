"""Fine-tune tab: train the chosen model on the corrected ``lungs``/``infection`` layers.

The panel gathers the CT, the corrected masks and the slices the user edited (read from the
Labels layers' ``paint`` events, which both brush strokes and ``data_setitem`` corrections emit),
saves the case into the user's corrections folder (later fine-tunes replay it), and runs
``training.finetune.finetune`` in a napari worker: progress and loss on a bar, Cancel through
``should_stop`` (nothing is written), Dice before/after when done. New versions land in the
user's weights folder and are listed here; "Re-segment with this version" hands the version to
the Segment tab, "Revert to bundled weights" chooses the shipped set again (nothing deleted).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from napari_chsnet.errors import CHSNetError, WeightsError
from napari_chsnet.registry import DEFAULT_MODEL, INFECTION_LAYER, LUNGS_LAYER, MODELS
from napari_chsnet.training.versions import BUNDLED, active_choice, list_versions, set_active, weights_set_dir
from napari_chsnet.widgets.results import ResultLayers, ct_layer_choices, ct_volume_from_layer

if TYPE_CHECKING:
    import napari

    from napari_chsnet.training.finetune import FinetuneResult
    from napari_chsnet.widgets.segment import SegmentPanel


def edited_slices_of(atoms: Iterable[Any], n_slices: int) -> set[int]:
    """Axial indices touched by a Labels ``paint`` event's history atoms.

    An atom is napari's ``_MaskedPaintAtom`` (brush, fill, polygon: a bounding-box ``slice_key``
    and an optional mask inside it) or the ``(indices, old_values, new_values)`` tuple that
    ``data_setitem`` records (indices: a tuple of index arrays, or slices).
    """
    touched: set[int] = set()
    for atom in atoms:
        if hasattr(atom, "slice_key"):
            z_range = range(*atom.slice_key[0].indices(n_slices))
            if atom.mask is not None:
                touched.update(
                    z_range.start + int(z)
                    for z in np.nonzero(atom.mask.reshape(atom.mask.shape[0], -1).any(1))[0]
                )
            else:
                touched.update(z_range)
            continue
        index = atom[0]
        first = index[0] if isinstance(index, tuple) else index
        if isinstance(first, slice):
            touched.update(range(*first.indices(n_slices)))
        elif isinstance(first, (int, np.integer)):
            touched.add(int(first))
        else:
            array = np.asarray(first)
            if array.dtype == bool:  # a boolean mask over the whole volume
                touched.update(int(z) for z in np.nonzero(array.reshape(array.shape[0], -1).any(1))[0])
            else:
                touched.update(int(z) for z in np.unique(array))
    return {z for z in touched if 0 <= z < n_slices}


def _choice_with_id(picker: ComboBox, unique_id: Hashable | None) -> Layer | None:
    """The picker's choice that is the layer ``unique_id`` (napari hands plugins proxies of its
    layers, so a layer is recognised by its id, not by identity)."""
    if unique_id is None:
        return None
    return next((layer for layer in picker.choices if getattr(layer, "unique_id", None) == unique_id), None)


class _Progress(QObject):
    """Carries fit's ``on_step`` from the worker thread to the GUI thread (queued connection)."""

    step = Signal(int, int, float)


class FinetunePanel(Container):
    """The Fine-tune tab.

    Args:
        viewer: the napari viewer.
        results: the shared result layers (to find the CT behind the masks).
        segment: the Segment tab, when present: "Re-segment with this version" sets its model and
            weights and starts it.
    """

    def __init__(
        self, viewer: napari.Viewer, results: ResultLayers, segment: SegmentPanel | None = None
    ) -> None:
        self._viewer = viewer
        self._results = results
        self._segment = segment
        self._edits: dict[int, set[int]] = {}  # id(Labels layer) -> edited axial slices
        self._worker = None
        self._cancel = threading.Event()
        self._bridge = _Progress()
        self._bridge.step.connect(self._on_step)
        self.last_result: FinetuneResult | None = None
        self._chosen: dict[str, Hashable | None] = {}  # picker -> unique_id of the layer the user chose
        self._filling = False

        self.ct = ComboBox(
            label="CT", choices=self._image_choices, tooltip="The CT the masks were corrected on"
        )
        self.lungs = ComboBox(
            label="Lungs", choices=self._labels_choices, tooltip="Corrected lung labels (1 right, 2 left)"
        )
        self.infection = ComboBox(
            label="Infection", choices=self._labels_choices, tooltip="Corrected infection mask"
        )
        self.model = ComboBox(
            label="Model", choices=[(info.title, key) for key, info in MODELS.items()], value=DEFAULT_MODEL
        )
        self.base = ComboBox(
            label="Start from", choices=self._base_choices, tooltip="Weights the fine-tune starts from"
        )
        self.epochs = SpinBox(label="Epochs", value=5, min=1, max=200)
        self.only_edited = CheckBox(
            text="Only edited slices",
            value=True,
            tooltip="Train on the slices you painted (all slices with lung when none was)",
        )
        self.tune_lungs = CheckBox(text="Tune the lung stage too (CHS-Net)", value=False)
        self.replay = FloatSpinBox(
            label="Replay",
            value=0.25,
            min=0.0,
            max=0.9,
            step=0.05,
            tooltip="Share of training slices from earlier corrections and training data",
        )
        self.start = PushButton(text="Start fine-tuning")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = Label(value="")
        self.versions = ComboBox(label="Versions", choices=self._version_choices, nullable=True)
        self.use_version = PushButton(text="Re-segment with this version")
        self.revert = PushButton(text="Revert to bundled weights")
        super().__init__(
            widgets=[
                self.ct,
                self.lungs,
                self.infection,
                self.model,
                self.base,
                self.epochs,
                self.only_edited,
                self.tune_lungs,
                self.replay,
                Container(widgets=[self.start, self.cancel], layout="horizontal", labels=False),
                self.progress,
                self.status,
                self.versions,
                Container(widgets=[self.use_version, self.revert], layout="horizontal", labels=False),
            ]
        )
        self.reset_choices()
        for key, picker in self._pickers().items():
            picker.changed.connect(partial(self._on_pick, key))
        self.model.changed.connect(self._on_model_changed)
        self.start.changed.connect(self.run)
        self.cancel.changed.connect(self.stop)
        self.use_version.changed.connect(self.resegment_with_version)
        self.revert.changed.connect(self.revert_to_bundled)
        for layer in viewer.layers:
            self._watch(layer)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        self._on_model_changed()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return ct_layer_choices(self._viewer.layers)

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Labels]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and layer.ndim == 3
        ]

    def _base_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        model = self.model.value if hasattr(self, "model") else DEFAULT_MODEL
        return [("bundled", BUNDLED), *((f"fine-tuned {v.label()}", v.name) for v in list_versions(model))]

    def _version_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        model = self.model.value if hasattr(self, "model") else DEFAULT_MODEL
        return [(v.label(), v.name) for v in list_versions(model)]

    def _pickers(self) -> dict[str, ComboBox]:
        return {"ct": self.ct, "lungs": self.lungs, "infection": self.infection}

    def _defaults(self) -> dict[str, Layer | None]:
        """The layers a picker offers first: the run's masks and the CT they were computed on."""
        return {
            "ct": self._results.ct_layer(),
            "lungs": self._results.layer(LUNGS_LAYER),
            "infection": self._results.layer(INFECTION_LAYER),
        }

    def _on_pick(self, key: str, layer: Layer | None) -> None:
        if not self._filling:  # the user's own choice, not a default or a refresh
            self._chosen[key] = None if layer is None else layer.unique_id

    def _select_defaults(self) -> None:
        """Fill each picker the user has not set (or whose chosen layer is gone) with its default;
        a layer added or removed elsewhere must not undo the user's choice."""
        defaults = self._defaults()
        for key, picker in self._pickers().items():
            chosen = _choice_with_id(picker, self._chosen.get(key))
            if chosen is None:
                self._chosen.pop(key, None)
                chosen = _choice_with_id(picker, getattr(defaults[key], "unique_id", None))
            if chosen is not None:
                picker.value = chosen

    def reset_choices(self, *_args: Any) -> None:
        self._filling = True
        try:
            super().reset_choices()
            self._select_defaults()
        finally:
            self._filling = False

    def _on_model_changed(self, *_args: Any) -> None:
        model = self.model.value
        self.tune_lungs.enabled = model == "chsnet"
        if model != "chsnet":
            self.tune_lungs.value = False
        self.base.reset_choices()
        choice = active_choice(model)
        self.base.value = choice if choice in [c[1] for c in self._base_choices()] else BUNDLED
        self.versions.reset_choices()

    # ------------------------------------------------------------------ edited slices
    def _watch(self, layer: Any) -> None:
        if isinstance(layer, Labels):
            self._edits.setdefault(id(layer), set())
            layer.events.paint.connect(self._on_paint)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self.reset_choices()

    def _on_removed(self, event: Any) -> None:
        if isinstance(event.value, Labels):
            event.value.events.paint.disconnect(self._on_paint)
            self._edits.pop(id(event.value), None)
        self.reset_choices()

    def disconnect_viewer(self) -> None:
        """Stop listening to the viewer (the panel is being closed)."""
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        self._viewer.layers.events.removed.disconnect(self._on_removed)
        for layer in self._viewer.layers:
            if isinstance(layer, Labels):
                layer.events.paint.disconnect(self._on_paint)

    def _on_paint(self, event: Any) -> None:
        layer = event.source
        self._edits.setdefault(id(layer), set()).update(edited_slices_of(event.value, layer.data.shape[0]))

    def edited_slices(self) -> tuple[int, ...]:
        """Slices edited in the chosen lungs or infection layer (empty when none was)."""
        touched: set[int] = set()
        for picker in (self.lungs, self.infection):
            if picker.value is not None:
                touched |= self._edits.get(id(picker.value), set())
        return tuple(sorted(touched))

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._worker is not None

    def corrected_case(self):
        """The CorrectedCase of the chosen layers (edited slices included)."""
        from napari_chsnet.training.corrections import CorrectedCase

        if self.ct.value is None or self.lungs.value is None or self.infection.value is None:
            raise CHSNetError("choose the CT and the corrected lungs and infection layers first")
        volume = ct_volume_from_layer(self.ct.value)
        edited = self.edited_slices()
        return CorrectedCase(
            volume,
            np.asarray(self.lungs.value.data),
            np.asarray(self.infection.value.data),
            self.ct.value.name,
            edited or None,
            lungs_edited=bool(self._edits.get(id(self.lungs.value))),
        )

    def run(self, *_args: Any) -> None:
        """Save the corrected case and start fine-tuning it in a worker (no-op while one runs)."""
        if self.running:
            return
        model = self.model.value
        try:
            case = self.corrected_case()
            # a version folder deleted by hand since the list was filled: WeightsError
            base = None if self.base.value == BUNDLED else weights_set_dir(model, self.base.value)
        except (CHSNetError, ValueError) as exc:
            show_error(f"Fine-tune: {exc}")
            return
        options = dict(
            epochs=int(self.epochs.value),
            only_edited_slices=bool(self.only_edited.value),
            replay=float(self.replay.value),
            tune_lungs=bool(self.tune_lungs.value),
        )
        self._cancel.clear()
        worker = create_worker(
            self._work, case, base, model, options, _start_thread=False, _ignore_errors=True
        )
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_running(True, "saving the corrected case…")
        worker.start()

    def _work(self, case, base, model, options):
        """Worker thread: no Qt here except the queued progress signal. ``None`` = cancelled."""
        from napari_chsnet.training.corrections import save_correction
        from napari_chsnet.training.finetune import finetune
        from napari_chsnet.training.loop import Cancelled

        folder = save_correction(case)
        # Another CT of the same name is saved beside it ("<name>-2"): replay skips this case by
        # its folder, and version.json names the folder the correction is in.
        case = dataclasses.replace(case, name=folder.name)
        try:
            return finetune(
                base,
                model,
                [case],
                on_step=self._bridge.step.emit,
                should_stop=self._cancel.is_set,
                **options,
            )
        except Cancelled:
            return None

    def stop(self, *_args: Any) -> None:
        """Cancel: the fit stops after its current step and nothing is written."""
        if self._worker is not None:
            self._cancel.set()
            self.status.value = "cancelling…"

    def _set_running(self, running: bool, status: str) -> None:
        for widget in (
            self.start,
            self.ct,
            self.lungs,
            self.infection,
            self.model,
            self.base,
            self.epochs,
            self.only_edited,
            self.replay,
            self.use_version,
            self.revert,
        ):
            widget.enabled = not running
        self.tune_lungs.enabled = not running and self.model.value == "chsnet"
        self.cancel.enabled = running
        self.progress.visible = running
        if running:
            self.progress.value = 0
        self.status.value = status

    def _on_step(self, step: int, total: int, loss: float) -> None:
        self.progress.max = max(1, total)
        self.progress.value = min(step, total)
        self.status.value = f"step {step}/{total} — loss {loss:.4f}"

    def _on_result(self, result: FinetuneResult | None) -> None:
        if result is None:
            self.status.value = "cancelled; the weights are unchanged"
            return
        self.last_result = result
        self.versions.reset_choices()
        self.base.reset_choices()
        if result.weights_dir.name in [c[1] for c in self._version_choices()]:
            self.versions.value = result.weights_dir.name
        message = f"Dice on the corrected slices {result.dice_before:.3f} → {result.dice_after:.3f}"
        if result.lung_dice_before is not None:
            message += f"; lungs {result.lung_dice_before:.3f} → {result.lung_dice_after:.3f}"
        self.status.value = message
        show_info(
            f"Fine-tuned {MODELS[self.model.value].title}: {message}. New version {result.weights_dir.name}."
        )

    def _on_error(self, exc: BaseException) -> None:
        text = (
            str(exc)
            if isinstance(exc, CHSNetError)
            else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        self.status.value = "failed"
        show_error(f"Fine-tuning failed: {text}")

    def _on_finished(self) -> None:
        self._worker = None
        status = self.status.value
        self._set_running(False, status)

    # ------------------------------------------------------------------ versions
    def resegment_with_version(self, *_args: Any) -> None:
        """Make the chosen version the model's weights and re-segment with it (Segment tab)."""
        name = self.versions.value
        if not name:
            show_error("Fine-tune: no fine-tuned version to use yet; run a fine-tune first")
            return
        model = self.model.value
        try:
            folder = set_active(model, name)
        except WeightsError as exc:  # its folder was deleted by hand since the list was filled
            show_error(f"Fine-tune: {exc}")
            self.versions.reset_choices()
            self.base.reset_choices()
            return
        self.status.value = f"{MODELS[model].title} now uses {name}"
        if self._segment is not None:
            self._segment.model.value = model
            self._segment.weights.reset_choices()
            self._segment.weights.value = str(folder)
            self._segment.run()

    def revert_to_bundled(self, *_args: Any) -> None:
        """Choose the bundled weights again; fine-tuned versions stay on disk."""
        model = self.model.value
        set_active(model, BUNDLED)
        self.base.value = BUNDLED
        self.status.value = f"{MODELS[model].title} uses the bundled weights again"
        if self._segment is not None and self._segment.model.value == model:
            self._segment.weights.reset_choices()
            self._segment.weights.value = BUNDLED
