"""Fine-tune tab: train the chosen model on the corrected ``lungs``/``infection`` layers.

The panel gathers the CT, copies of the corrected masks (taken when Start is pressed: later
strokes are not in the saved case) and the slices the user edited (``ResultLayers`` reads them
from the Labels layers' ``paint`` events, which both brush strokes and ``data_setitem``
corrections emit, and keeps them in the layer's metadata, so a panel opened again knows them),
checks the case (``corrected_case``: two different masks on the CT's grid, lungs, an edited slice
unless "Only edited slices" is off, a slice to train on), saves it into the user's corrections
folder (later fine-tunes replay it), and runs ``training.finetune.finetune`` in a napari worker on
the Segment tab's Device: progress and loss on a bar, Cancel through ``should_stop`` (nothing is
written), Dice before/after when done (and when no epoch beat the starting weights, that the new
version holds them). New versions land in the user's weights folder and are listed here and in the
Segment tab's Weights; "Re-segment with it" hands the version to the Segment tab, "Revert to
bundled" chooses the shipped set again (nothing deleted).

Which layers the pickers show, and keep, is ``widgets/finetune_pickers.py``.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Hashable
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
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Signal

from napari_chsnet.errors import CHSNetError, WeightsError
from napari_chsnet.inference.versions import (
    BUNDLED,
    VERSION_FILE,
    active_choice,
    list_versions,
    set_active,
    user_weights_dir,
    weights_set_dir,
)
from napari_chsnet.registry import DEFAULT_MODEL, MODELS
from napari_chsnet.widgets.finetune_pickers import LayerPickers
from napari_chsnet.widgets.layer_facts import (
    ct_layer_choices,
    ct_volume_from_layer,
    edited_slices,
)
from napari_chsnet.widgets.lifetime import ClosablePanel
from napari_chsnet.widgets.results import ResultLayers

if TYPE_CHECKING:
    import napari

    from napari_chsnet.training.finetune import FinetuneResult
    from napari_chsnet.widgets.segment import SegmentPanel


def _discard_version(folder: Path) -> None:
    """Delete a version a cancelled fine-tune wrote anyway (only a fine-tune's own folder in the
    user's weights folder)."""
    weights = user_weights_dir().resolve()
    if folder.resolve().parent.parent == weights and (folder / VERSION_FILE).is_file():
        shutil.rmtree(folder, ignore_errors=True)


def _improved(result: FinetuneResult, stage: str) -> bool | None:
    """Whether an epoch beat the starting weights of ``stage`` ("infection" or "lungs"; None for
    lungs not tuned): the result says so (``improved``, ``lung_improved``); a result without those
    fields is judged by its Dice as version.json rounds it (4 places)."""
    if stage == "lungs":
        if result.lung_dice_before is None:
            return None
        said, before, after = (
            getattr(result, "lung_improved", None),
            result.lung_dice_before,
            result.lung_dice_after,
        )
    else:
        said, before, after = getattr(result, "improved", None), result.dice_before, result.dice_after
    if said is not None:
        return bool(said)
    return after is not None and round(after, 4) > round(before, 4)


def _score(result: FinetuneResult) -> str:
    """The scores on the corrected slices, before → after."""
    fp_before = getattr(result, "false_positive_before", None)
    fp_after = getattr(result, "false_positive_after", None)
    if fp_before is not None and fp_after is not None:  # erase-only: no infection left to score by Dice
        text = f"infection predicted on {100 * fp_before:.2f} % → {100 * fp_after:.2f} % of the corrected slices' lung"
    else:
        text = f"Dice on the corrected slices {result.dice_before:.3f} → {result.dice_after:.3f}"
    if result.lung_dice_before is not None:
        text += f"; lungs {result.lung_dice_before:.3f} → {result.lung_dice_after:.3f}"
    return text


def result_message(
    result: FinetuneResult, model: str, tune_lungs: bool = False, lungs_only: bool = False
) -> tuple[str, str]:
    """(the tab's status line, the notification) for a finished fine-tune.

    A fine-tune keeps a stage's starting weights when no epoch beats them on the corrected slices,
    and still writes a version: the user is told so rather than that the model was fine-tuned, and,
    when only the lungs were corrected and the lung stage was not tuned, how to have them learnt.
    """
    title, name, score = MODELS[model].title, result.weights_dir.name, _score(result)
    infection, lungs = _improved(result, "infection"), _improved(result, "lungs")
    hint = ""
    if lungs_only and not tune_lungs:  # the lung corrections were not trained on
        hint = (
            " Only the lungs were corrected: tick 'Tune the lung stage too' to train the lung stage on them."
            if model == "chsnet"
            else f" Only the lungs were corrected, and {title} keeps its own copy of CHS-Net's lung stage, "
            "which is not tuned: fine-tune CHS-Net with 'Tune the lung stage too' to have them learnt; they "
            "are used when segmenting with CHS-Net."
        )
    if not infection and not lungs:
        return (
            f"no epoch improved ({score}); {name} holds the starting weights",
            f"Fine-tuning {title}: no epoch improved on the corrected slices ({score}); the new version "
            f"{name} holds the starting weights.{hint}",
        )
    if not infection:
        kept = " No epoch improved the infection stage: it keeps its starting weights."
    elif lungs is False:
        kept = " No epoch improved the lung stage: it keeps its starting weights."
    else:
        kept = ""
    return score, f"Fine-tuned {title}: {score}. New version {name}.{kept}{hint}"


class _Progress(QObject):
    """Carries fit's ``on_step`` from the worker thread to the GUI thread (queued connection)."""

    step = Signal(int, int, float)


class FinetunePanel(LayerPickers, ClosablePanel, Container):
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
        self._known_edited: set[Hashable] = set()  # unique_id of Labels layers seen edited
        self._worker = None
        self._closed = False  # the panel was closed: its Qt widgets are gone or about to be
        self._cancel = threading.Event()
        self._bridge = _Progress()
        self._bridge.step.connect(self._on_step)
        self.last_result: FinetuneResult | None = None
        self._chosen: dict[str, Hashable | None] = {}  # picker -> unique_id of the layer the user chose
        self._held: dict[str, Hashable | None] = {}  # picker -> unique_id of the default it shows
        self._run_facts: dict[str, Any] = {}  # what the running fine-tune was given (its messages)
        self._saved_case: Path | None = None  # where the running fine-tune saved the corrected case
        self._cleared: set[str] = set()  # mask pickers the user emptied (kept empty, no default)
        self._filling = False
        self._model_picked = False  # the user chose the Model: it no longer follows the masks' run
        self._following = False  # the Model is being set to the masks' run model, not by the user

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
            label="Model",
            choices=[(info.title, key) for key, info in MODELS.items()],
            value=DEFAULT_MODEL,
            tooltip="The model to fine-tune; follows the model that made the chosen masks unless you choose one",
        )
        self.base = ComboBox(
            label="Start from", choices=self._base_choices, tooltip="Weights the fine-tune starts from"
        )
        self.epochs = SpinBox(label="Epochs", value=5, min=1, max=200)
        self.only_edited = CheckBox(
            text="Only edited slices",
            value=True,
            tooltip=(
                "Train on the slices you painted or corrected in the chosen layers; untick to train on "
                "every slice with lung (masks corrected outside napari)"
            ),
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
        self.start = PushButton(
            text="Start fine-tuning", tooltip="Trains on the Device chosen in the Segment tab"
        )
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
        self.model.changed.connect(self._on_model_picked)
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
            layer.events.paint.connect(self._on_paint)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self.reset_choices()

    def _on_removed(self, event: Any) -> None:
        if isinstance(event.value, Labels):
            event.value.events.paint.disconnect(self._on_paint)
            self._known_edited.discard(event.value.unique_id)
        self.reset_choices()

    def disconnect_viewer(self) -> None:
        """Stop listening to the viewer (the panel is being closed)."""
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        self._viewer.layers.events.removed.disconnect(self._on_removed)
        for layer in self._viewer.layers:
            if isinstance(layer, Labels):
                layer.events.paint.disconnect(self._on_paint)

    def _on_paint(self, event: Any) -> None:
        """A layer's first edit may make it a mask picker's default (``_evidence``): choose them
        again once every handler of this edit has run (``ResultLayers`` marks the layer)."""
        unique_id = event.source.unique_id
        if unique_id not in self._known_edited:
            self._known_edited.add(unique_id)
            QTimer.singleShot(0, self._refill_defaults)

    def edited_slices(self) -> tuple[int, ...]:
        """Slices edited in the chosen lungs or infection layer (empty when none was): kept in the
        layers' metadata (``ResultLayers``), so they outlive this panel."""
        return tuple(sorted({*self._edited_in(self.lungs), *self._edited_in(self.infection)}))

    @staticmethod
    def _edited_in(picker: ComboBox) -> tuple[int, ...]:
        return edited_slices(picker.value) if picker.value is not None else ()

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
            # napari places a layer by scale and translate (mm): the same shape elsewhere is another grid
            if not (
                np.allclose(layer.scale, ct.scale, rtol=1e-4, atol=1e-6)
                and np.allclose(layer.translate, ct.translate, rtol=0, atol=0.01)
            ):
                raise CHSNetError(
                    f"the chosen {label} layer '{layer.name}' lies elsewhere than the CT '{ct.name}' (voxel size "
                    f"or position differ); choose masks drawn on this CT"
                )
        # Copies, taken on the GUI thread: strokes made while the case is saved stay out of it.
        lung_labels = np.array(lungs.data, copy=True)
        if not lung_labels.any():
            raise CHSNetError(
                f"the chosen Lungs layer '{lungs.name}' is empty; choose the layer with the lung labels "
                "(or draw the lungs in it)"
            )
        edited = self.edited_slices()
        only_edited = bool(self.only_edited.value)
        if only_edited and not edited:
            raise CHSNetError(
                f"no slice of '{lungs.name}' or '{infection.name}' was edited, so there is no correction to "
                "train on: correct the slices the model got wrong (paint, erase or a Correct-tab helper) "
                "and press Start again, or untick 'Only edited slices' to train on every slice with lung "
                "(masks corrected outside napari)"
            )
        case = CorrectedCase(
            volume,
            lung_labels,
            np.array(infection.data, copy=True),
            ct.name,
            edited or None,
            lungs_edited=bool(edited_slices(lungs)),
            infection_edited=bool(edited_slices(infection)) if edited else None,  # None: unknown
        )
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
            # the Segment tab's choice: a user who chose the CPU (the GPU is busy) trains there too
            device=self._segment.device.value if self._segment is not None else "auto",
        )
        self._run_facts = {
            "model": model,
            "tune_lungs": options["tune_lungs"],
            # only the lungs were corrected: the infection stage has nothing new to learn
            "lungs_only": bool(self._edited_in(self.lungs)) and not self._edited_in(self.infection),
        }
        self._cancel.clear()
        self._saved_case = None
        cancel, workers = self._cancel, []

        def should_stop() -> bool:
            # Cancel, the panel closed, or napari quitting: File → Exit asks every worker to quit
            # and waits for them inside the window's close, before the panel can hear of it.
            return cancel.is_set() or any(w.abort_requested for w in workers)

        worker = create_worker(
            self._work, case, base, model, options, should_stop, _start_thread=False, _ignore_errors=True
        )
        workers.append(worker)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_running(True, f"saving the corrected case… (then training on {options['device']})")
        worker.start()

    def _work(self, case, base, model, options, should_stop=None):
        """Worker thread: no Qt here except the queued progress signal. ``None`` = cancelled
        (``should_stop``: when to stop; default Cancel's flag)."""
        from napari_chsnet.training.corrections import save_correction
        from napari_chsnet.training.finetune import finetune
        from napari_chsnet.training.loop import Cancelled

        folder = save_correction(case)
        self._saved_case = folder  # read on the GUI thread once the worker has returned
        # Another CT of the same name is saved beside it ("<name>-2"): replay skips this case by
        # its folder, and version.json names the folder the correction is in.
        case = dataclasses.replace(case, name=folder.name)
        try:
            return finetune(
                base,
                model,
                [case],
                on_step=self._bridge.step.emit,
                should_stop=should_stop or self._cancel.is_set,
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
        if self._gone():
            return
        self.progress.max = max(1, total)
        self.progress.value = min(step, total)
        self.status.value = f"step {step}/{total} — loss {loss:.4f}"

    def _on_result(self, result: FinetuneResult | None) -> None:
        if result is not None and self._cancel.is_set():
            # Cancel pressed after the last check in finetune(): the version it just wrote goes too
            _discard_version(result.weights_dir)
            result = None
        if self._gone():
            return
        if result is None:
            self.status.value = "cancelled; the weights are unchanged"
            self._refresh_weights_lists()
            kept = (
                f" The corrected case stays in {self._saved_case} for later fine-tunes to replay."
                if self._saved_case is not None
                else ""
            )
            show_info(f"Fine-tuning cancelled; the weights are unchanged.{kept}")
            return
        self.last_result = result
        self._refresh_weights_lists()
        if result.weights_dir.name in [c[1] for c in self._version_choices()]:
            self.versions.value = result.weights_dir.name
        status, message = result_message(result, **self._run_facts)
        self.status.value = status
        show_info(message)

    def _on_error(self, exc: BaseException) -> None:
        from napari_chsnet.inference.device import (
            is_out_of_memory,
            out_of_memory_error,
            release_after_failure,
        )

        gone = self._gone()
        if is_out_of_memory(exc) or isinstance(exc, MemoryError):
            # One line, not torch's paragraph on allocator settings. The fine-tune trains on the Segment
            # tab's Device with a batch of its own (that tab's Batch size does not change it).
            advice = "choose the CPU as Device on the Segment tab (the fine-tune trains there)"
            message = f"{out_of_memory_error(exc, 'Fine-tuning', advice)}."
        elif isinstance(exc, CHSNetError):
            message = f"Fine-tuning failed: {exc}"
        else:
            message = (
                f"Fine-tuning failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
        release_after_failure(exc)  # the failed step's tensors and torch's cache, a closed panel's run too
        if gone:
            return
        self.status.value = "failed"
        show_error(message)

    def _on_finished(self) -> None:
        self._worker = None
        if self._gone():
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
