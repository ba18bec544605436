"""Fine-tune tab: train the chosen model on the corrected ``lungs``/``infection`` layers.

The panel gathers the CT, the corrected masks and the slices the user edited (read from the
Labels layers' ``paint`` events, which both brush strokes and ``data_setitem`` corrections emit),
checks the case (``corrected_case``: two different masks on the CT's grid, lungs, a slice to train
on), saves it into the user's corrections folder (later fine-tunes replay it), and runs
``training.finetune.finetune`` in a napari worker: progress and loss on a bar, Cancel through
``should_stop`` (nothing is written), Dice before/after when done. New versions land in the
user's weights folder and are listed here and in the Segment tab's Weights; "Re-segment with it"
hands the version to the Segment tab, "Revert to bundled" chooses the shipped set
again (nothing deleted).

The pickers hold layers by ``unique_id``: a layer stays chosen through renames (the docs advise
renaming corrected masks to keep them), new layers and new runs until it is closed. Defaults: a
layer that looks like the mask (``mask_kind``: a run's layers by their metadata, others by name),
never the other mask picker's; none when no layer fits; the CT the chosen lungs were computed on.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import threading
from collections.abc import Hashable, Iterable
from functools import partial
from pathlib import Path
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
from napari_chsnet.training.versions import (
    BUNDLED,
    VERSION_FILE,
    active_choice,
    list_versions,
    set_active,
    user_weights_dir,
    weights_set_dir,
)
from napari_chsnet.widgets.results import (
    CT_ID_KEY,
    EDITED_KEY,
    RUN_KEY,
    ResultLayers,
    ct_layer_choices,
    ct_volume_from_layer,
)

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


# A mask's name says what it holds: "infection corrected", "P1_inf", "lesions"; "lungs fixed".
_INFECTION_NAME = re.compile(r"infect|lesion|(?<![a-z])inf(?![a-z])", re.IGNORECASE)
_LUNGS_NAME = re.compile(r"lung", re.IGNORECASE)
_LUNG_LABEL_NAMES_KEY = "label_names"  # a run's lungs layer carries its labels' names (results.py)


def mask_kind(layer: Layer) -> str | None:
    """``"lungs"``, ``"infection"`` or None: what a Labels layer looks like it holds. A run's own
    layers are known by their metadata under any name (only the lungs carry label names), others
    by their name (infection first: "lung lesions" is an infection mask)."""
    if RUN_KEY in layer.metadata:
        return LUNGS_LAYER if _LUNG_LABEL_NAMES_KEY in layer.metadata else INFECTION_LAYER
    if _INFECTION_NAME.search(layer.name):
        return INFECTION_LAYER
    if _LUNGS_NAME.search(layer.name):
        return LUNGS_LAYER
    return None


def _choice_with_id(picker: ComboBox, unique_id: Hashable | None) -> Layer | None:
    """The picker's choice that is the layer ``unique_id`` (napari hands plugins proxies of its
    layers, so a layer is recognised by its id, not by identity)."""
    if unique_id is None:
        return None
    return next((layer for layer in picker.choices if getattr(layer, "unique_id", None) == unique_id), None)


def _discard_version(folder: Path) -> None:
    """Delete a version a cancelled fine-tune wrote anyway (only a fine-tune's own folder in the
    user's weights folder)."""
    weights = user_weights_dir().resolve()
    if folder.resolve().parent.parent == weights and (folder / VERSION_FILE).is_file():
        shutil.rmtree(folder, ignore_errors=True)


class _Progress(QObject):
    """Carries fit's ``on_step`` from the worker thread to the GUI thread (queued connection)."""

    step = Signal(int, int, float)


class FinetunePanel(Container):
    """The Fine-tune tab.

    Args:
        viewer: the napari viewer.
        results: the shared result layers (to find the CT behind the masks).
        segment: the Segment tab, when present: "Re-segment with it" sets its model and
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
        self._closed = False  # the panel was closed: its Qt widgets are gone or about to be
        self._cancel = threading.Event()
        self._bridge = _Progress()
        self._bridge.step.connect(self._on_step)
        self.last_result: FinetuneResult | None = None
        self._chosen: dict[str, Hashable | None] = {}  # picker -> unique_id of the layer the user chose
        self._held: dict[str, Hashable | None] = {}  # picker -> unique_id of the layer it was given
        self._cleared: set[str] = set()  # mask pickers the user emptied (kept empty, no default)
        self._filling = False

        self.ct = ComboBox(
            label="CT", choices=self._image_choices, tooltip="The CT the masks were corrected on"
        )
        self.lungs = ComboBox(
            label="Lungs",
            choices=self._labels_choices,
            nullable=True,
            tooltip="Corrected lung labels (1 right, 2 left)",
        )
        self.infection = ComboBox(
            label="Infection", choices=self._labels_choices, nullable=True, tooltip="Corrected infection mask"
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
        # Short labels: this row sets the panel's minimum width (tests/widgets/test_panel_layout.py).
        self.use_version = PushButton(
            text="Re-segment with it",
            tooltip="Make the chosen version this model's weights and segment the CT again (Segment tab)",
        )
        self.revert = PushButton(
            text="Revert to bundled",
            tooltip="Use the weights shipped with the plugin again (no version is deleted)",
        )
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

    def _on_pick(self, key: str, layer: Layer | None) -> None:
        if self._filling:  # a default or a refresh, not the user's own choice
            return
        if layer is None:
            self._chosen.pop(key, None)
            self._held.pop(key, None)
            if key != "ct":  # emptied by the user: no default comes back until they choose a layer
                self._cleared.add(key)
        else:
            self._chosen[key] = layer.unique_id
            self._cleared.discard(key)
        # the CT follows newly chosen lungs (unless the user chose the CT too)
        self._filling = True
        try:
            self._select_defaults()
        finally:
            self._filling = False

    def _present(self, picker: ComboBox, ids: dict[str, Hashable | None], key: str) -> Layer | None:
        """The layer ``ids[key]`` if the picker still offers it (it may have been renamed); forgets a
        layer that is gone."""
        layer = _choice_with_id(picker, ids.get(key))
        if layer is None:
            ids.pop(key, None)
        return layer

    def _put(self, key: str, picker: ComboBox, layer: Layer | None) -> None:
        """Show ``layer`` in the picker and remember it by id, so renames and other layers coming and
        going keep it; ``None`` empties a mask picker (the CT picker keeps whatever Qt shows)."""
        if layer is None:
            self._held.pop(key, None)
            if key != "ct":
                picker.value = None
            return
        self._held[key] = layer.unique_id
        picker.value = layer

    def _mask_default(self, kind: str, exclude: set[Hashable]) -> Layer | None:
        """The first layer that looks like ``kind``'s mask (edited ones first, then the one named
        ``kind``), never one in ``exclude``."""
        candidates = [
            layer
            for layer in self.lungs.choices
            if layer is not None and layer.unique_id not in exclude and mask_kind(layer) == kind
        ]
        candidates.sort(key=lambda layer: (not layer.metadata.get(EDITED_KEY), layer.name != kind))
        return candidates[0] if candidates else None

    def _fill_mask(self, key: str, other: str) -> None:
        picker = self._pickers()[key]
        if key in self._cleared:
            self._put(key, picker, None)
            return
        layer = self._present(picker, self._chosen, key)
        if layer is None:
            layer = self._present(picker, self._held, key)
        if layer is None:  # a default is never the other mask picker's layer (Start refuses that)
            layer = self._mask_default(key, {self._chosen.get(other), self._held.get(other)} - {None})
        self._put(key, picker, layer)

    def _fill_ct(self) -> None:
        layer = self._present(self.ct, self._chosen, "ct")
        if layer is None:  # the CT the chosen lungs were computed on (a run's masks record it)
            lungs = self.lungs.value
            ct_id = lungs.metadata.get(CT_ID_KEY) if lungs is not None else None
            layer = next((c for c in self.ct.choices if ct_id and str(c.unique_id) == ct_id), None)
        if layer is None:
            layer = self._present(self.ct, self._held, "ct")
        if layer is None:
            layer = _choice_with_id(self.ct, getattr(self._results.ct_layer(), "unique_id", None))
        self._put("ct", self.ct, layer)

    def _select_defaults(self) -> None:
        """Keep each picker's layer (the user's choice, else the default it was given) while it is
        open, under whatever name; fill the others with their defaults: a layer that looks like
        the mask (``mask_kind``) and is not in the other mask picker, and the CT the lungs belong to."""
        self._fill_mask(LUNGS_LAYER, INFECTION_LAYER)
        self._fill_mask(INFECTION_LAYER, LUNGS_LAYER)
        self._fill_ct()

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
        """The CorrectedCase of the chosen layers (edited slices included), checked before anything
        is saved or trained: both masks chosen and different, on the CT's grid, lungs that are not
        empty, and a slice to train on.

        Raises:
            CHSNetError: what is wrong, in the tab's words.
        """
        from napari_chsnet.training.corrections import MIN_LUNG_FRACTION, CorrectedCase

        ct, lungs, infection = self.ct.value, self.lungs.value, self.infection.value
        if ct is None or lungs is None or infection is None:
            raise CHSNetError("choose the CT and the corrected Lungs and Infection layers first")
        if lungs.unique_id == infection.unique_id:
            raise CHSNetError(
                f"Lungs and Infection are both '{lungs.name}'; choose the corrected infection mask under "
                "Infection and the lung labels under Lungs"
            )
        volume = ct_volume_from_layer(ct)
        for label, layer in (("Lungs", lungs), ("Infection", infection)):
            if tuple(layer.data.shape) != tuple(volume.shape):
                raise CHSNetError(
                    f"the chosen {label} layer '{layer.name}' has {tuple(layer.data.shape)} voxels but the CT "
                    f"'{ct.name}' has {tuple(volume.shape)}; choose masks drawn on this CT"
                )
        lung_labels = np.asarray(lungs.data)
        if not lung_labels.any():
            raise CHSNetError(
                f"the chosen Lungs layer '{lungs.name}' is empty; choose the layer with the lung labels "
                "(or draw the lungs in it)"
            )
        edited = self.edited_slices()
        case = CorrectedCase(
            volume,
            lung_labels,
            np.asarray(infection.data),
            ct.name,
            edited or None,
            lungs_edited=bool(self._edits.get(id(lungs))),
        )
        only_edited = bool(self.only_edited.value)
        if not case.training_slice_indices(only_edited):
            if only_edited and edited:
                shown = ", ".join(str(z) for z in edited[:8]) + (", …" if len(edited) > 8 else "")
                raise CHSNetError(
                    f"none of the slices you edited ({shown}) has lung in the Lungs layer '{lungs.name}'; "
                    "untick 'Only edited slices' to train on every slice with lung, or correct the lungs there"
                )
            raise CHSNetError(
                f"no slice of the Lungs layer '{lungs.name}' has enough lung to train on (at least "
                f"{MIN_LUNG_FRACTION:.1%} of the slice); choose the layer with the lung labels"
            )
        return case

    def run(self, *_args: Any) -> None:
        """Check the chosen layers, then save the corrected case and fine-tune on it in a worker
        (no-op while one runs; a case that cannot be trained on is a notification, nothing saved)."""
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

    def release(self) -> None:
        """The panel is closed: cancel a running fine-tune quietly (nothing is written). From now on
        the worker's callbacks touch no widget and show nothing."""
        self._closed = True
        self._cancel.set()

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
        if self._closed:
            return
        self.progress.max = max(1, total)
        self.progress.value = min(step, total)
        self.status.value = f"step {step}/{total} — loss {loss:.4f}"

    def _on_result(self, result: FinetuneResult | None) -> None:
        if result is not None and self._cancel.is_set():
            # Cancel pressed after the last check in finetune(): the version it just wrote goes too
            _discard_version(result.weights_dir)
            result = None
        if self._closed:
            return
        if result is None:
            self.status.value = "cancelled; the weights are unchanged"
            self._refresh_weights_lists()
            return
        self.last_result = result
        self._refresh_weights_lists()
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
        if self._closed:
            return
        text = (
            str(exc)
            if isinstance(exc, CHSNetError)
            else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        self.status.value = "failed"
        show_error(f"Fine-tuning failed: {text}")

    def _on_finished(self) -> None:
        self._worker = None
        if self._closed:
            return
        status = self.status.value
        self._set_running(False, status)

    # ------------------------------------------------------------------ versions
    def _refresh_weights_lists(self) -> None:
        """This tab's "Start from" and Versions lists and the Segment tab's Weights list (each
        keeps its choice while that is still listed)."""
        self.versions.reset_choices()
        self.base.reset_choices()
        if self._segment is not None:
            self._segment.weights.reset_choices()

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
        self._refresh_weights_lists()
        if self._segment is not None and self._segment.model.value == model:
            self._segment.weights.value = BUNDLED
