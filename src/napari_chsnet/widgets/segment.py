"""Segment panel: choose a CT, model, device and weights; run the engine in a napari worker.

The engine (``report.case.iter_case``: the volume pipeline, then the report's figures) is a generator
yielding ``Progress`` and returning a ``CaseResult``; here it runs in ``napari.qt.threading.create_worker``, its
yields drive a progress bar, Cancel calls ``worker.quit()`` (the generator stops at its next
yield and nothing is shown), errors become ``show_error`` notifications. Layers are only
touched when a complete result comes back, on the GUI thread.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, ProgressBar, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning

from napari_chsnet.errors import CHSNetError, WeightsError
from napari_chsnet.inference.run_info import reduced_precision
from napari_chsnet.inference.versions import BUNDLED, active_choice, list_versions, weights_set_dir
from napari_chsnet.registry import DEFAULT_MODEL, MODELS
from napari_chsnet.report import DEFAULT_MIN_LESION_ML
from napari_chsnet.report.severity import shown_grade
from napari_chsnet.widgets.dialogs import Dialogs
from napari_chsnet.widgets.layer_facts import (
    ct_layer_choices,
    ct_volume_from_layer,
    intensity_converted,
    not_a_ct_because,
    opened_as_ct,
    spacing_warning,
)
from napari_chsnet.widgets.layout import end_with_stretch, paragraph, quoted_name, row
from napari_chsnet.widgets.lifetime import ClosablePanel
from napari_chsnet.widgets.results import ResultLayers
from napari_chsnet.widgets.tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import GeneratorWorker

    from napari_chsnet.inference.pipeline import Progress, SegmentationSettings
    from napari_chsnet.report.case import CaseResult


def _device_choices() -> list[str]:
    # Imported on first use: the device probe loads torch.
    from napari_chsnet.inference.device import available_devices

    devices = list(available_devices())
    return devices if "auto" in devices else ["auto", *devices]


NO_CT = (
    "No CT to segment: open a chest CT (File → Open) or the sample "
    "(File → Open Sample → CHS-Net Segment), then press Segment."
)


def no_ct_message(layers: Any) -> str:
    """Why there is nothing to segment, naming the open images that are not offered as a CT."""
    reasons = [
        f"'{layer.name}' {because}"
        for layer in layers
        if isinstance(layer, Image) and (because := not_a_ct_because(layer)) is not None
    ]
    if not reasons:
        return NO_CT
    return f"{NO_CT} A CT layer must be a 3-D greyscale image: {'; '.join(reasons)}."


OUT_OF_MEMORY_ADVICE = "lower the Batch size or choose the CPU as Device"


class _RuntimeFailure(Exception):
    """A RuntimeError of the run (torch's errors, out of memory among them), carried as its
    ``__cause__`` past superqt: its GeneratorWorker takes a RuntimeError for a deleted worker and
    drops it, with neither ``errored`` nor ``finished``, which left the panel running for ever."""


def _segmentation(volume: Any, settings: SegmentationSettings):
    """``iter_case`` as the worker runs it: a RuntimeError comes out as ``_RuntimeFailure``."""
    from napari_chsnet.report.case import iter_case

    try:
        return (yield from iter_case(volume, settings))
    except RuntimeError as exc:
        raise _RuntimeFailure(str(exc)) from exc


def _error_message(exc: BaseException) -> str:
    """One sentence for the notification: our own errors already say what to do."""
    if isinstance(exc, _RuntimeFailure) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, CHSNetError):
        return str(exc)
    from napari_chsnet.inference.device import is_out_of_memory, out_of_memory_error

    # torch's OutOfMemoryError, MPS's RuntimeError; any MemoryError (numpy's "Unable to allocate …")
    if is_out_of_memory(exc) or isinstance(exc, MemoryError):
        return f"{out_of_memory_error(exc, 'Segmentation', OUT_OF_MEMORY_ADVICE)}."
    text = str(exc) or type(exc).__name__
    return f"Segmentation failed ({type(exc).__name__}: {text.splitlines()[0]})."


def _check_weights_folder(model: str, weights: Path | None) -> None:
    """A weights folder must hold the model's own file (a WeightsError otherwise), checked before a
    run starts; files are only looked at, not loaded."""
    from napari_chsnet.inference.weights import check_weights_folder

    if weights is not None and weights.is_dir():
        check_weights_folder(weights, model)


def _counted(names: list[str]) -> tuple[str, bool]:
    """The quoted names, comma-separated, and whether there is more than one."""
    return ", ".join(f"'{name}'" for name in names), len(names) > 1


class SegmentPanel(ClosablePanel, Container):
    """The Segment tab.

    Its CT picker follows the scans the user opens: a CT that this plugin's reader or sample puts
    in the viewer (``opened_as_ct``: its grid and source in the metadata and ``not_a_ct_because``
    None, so never a probability map, a result, a Labels layer, nor a mask or a filtered copy that
    napari's reader or another plugin adds as an image) becomes the choice, so pressing Segment after opening a second scan segments that scan (magicgui would keep
    the old choice). One inserted while a run is on is chosen when the run ends (the picker is
    locked meanwhile). A choice the user makes afterwards stays until another CT is opened.
    """

    def __init__(self, viewer: napari.Viewer, results: ResultLayers, dialogs: Dialogs) -> None:
        self._viewer = viewer
        self._results = results
        self.dialogs = dialogs
        self._weight_paths: list[str] = []
        self._worker: GeneratorWorker | None = None
        self._closed = False  # the panel was closed: its Qt widgets are gone or about to be
        self._confirmed_edits = 0
        self._confirmed_names: set[str] = set()
        self._done_status = ""
        self._new_ct: Any = None  # unique_id of a CT opened during a run: the choice once it ends

        self.ct = ComboBox(label="CT", choices=self._ct_choices, tooltip=TOOLTIPS["ct"])
        self.model = ComboBox(
            label="Model",
            choices=[(info.title, key) for key, info in MODELS.items()],
            value=DEFAULT_MODEL,
            tooltip=TOOLTIPS["model"],
        )
        self.device = ComboBox(label="Device", choices=_device_choices(), tooltip=TOOLTIPS["device"])
        self.weights = ComboBox(label="Weights", choices=self._weights_choices, tooltip=TOOLTIPS["weights"])
        self.weights_folder = PushButton(text="Folder…", tooltip=TOOLTIPS["weights_folder"])
        self.weights_file = PushButton(text="File…", tooltip=TOOLTIPS["weights_file"])
        self.threshold = FloatSpinBox(
            label="Threshold", value=0.5, min=0.01, max=0.99, step=0.05, tooltip=TOOLTIPS["threshold"]
        )
        self.min_lesion_ml = FloatSpinBox(
            label="Min lesion (mL)",
            value=DEFAULT_MIN_LESION_ML,
            min=0.0,
            max=100.0,
            step=0.1,
            tooltip=TOOLTIPS["min_lesion_ml"],
        )
        self.mirror_averaging = CheckBox(
            text="Average with the mirrored slice",
            value=MODELS[DEFAULT_MODEL].mirror_averaging,
            tooltip=TOOLTIPS["mirror_averaging"],
        )
        self.overlapping_tiles = CheckBox(
            text="Overlapping tiles (EAMC)",
            value=bool(MODELS[DEFAULT_MODEL].overlapping_tiles),
            visible=MODELS[DEFAULT_MODEL].overlapping_tiles is not None,
            tooltip=TOOLTIPS["overlapping_tiles"],
        )
        self.batch_size = SpinBox(label="Batch size", value=4, min=1, max=64, tooltip=TOOLTIPS["batch_size"])
        self.segment = PushButton(text="Segment", tooltip=TOOLTIPS["segment"])
        self.cancel = PushButton(text="Cancel", enabled=False, tooltip=TOOLTIPS["cancel"])
        self.progress = ProgressBar(value=0, min=0, max=1, label="Progress", visible=False)
        # Status lines are kept short: the panel may be narrow and Qt clips wrapped labels in tabs.
        status_box, self.status = paragraph("")
        super().__init__(
            widgets=[
                self.ct,
                self.model,
                self.device,
                self.weights,
                row(self.weights_folder, self.weights_file),
                self.threshold,
                self.min_lesion_ml,
                self.mirror_averaging,
                self.overlapping_tiles,
                self.batch_size,
                row(self.segment, self.cancel),
                self.progress,
                status_box,
            ]
        )
        end_with_stretch(self)
        self.weights.value = self._default_weights()
        self.model.changed.connect(self._on_model_changed)
        self.weights_folder.changed.connect(self._choose_weights_folder)
        self.weights_file.changed.connect(self._choose_weights_file)
        self.segment.changed.connect(self.run)
        self.cancel.changed.connect(self.stop)
        self.min_lesion_ml.changed.connect(self._on_min_lesion_changed)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)

    # ------------------------------------------------------------------ choices
    def _ct_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return ct_layer_choices(self._viewer.layers)

    def _on_layer_inserted(self, event: Any) -> None:
        """A newly opened CT becomes the picker's choice (see the class docstring)."""
        layer = event.value
        if self._closed or not opened_as_ct(layer):
            return
        if self.running:
            self._new_ct = layer.unique_id
            return
        self._choose_ct(layer.unique_id)

    def _choose_ct(self, unique_id: Any) -> None:
        """Show the CT layer with this ``unique_id`` in the picker, if it is still offered (napari
        hands plugins proxies of its layers: the picker's own choice is found by id)."""
        self.ct.reset_choices()
        choice = next((c for c in self.ct.choices if c is not None and c.unique_id == unique_id), None)
        if choice is not None:
            self.ct.value = choice

    def _weights_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        """Bundled weights, the model's fine-tuned versions (newest first), then folders or files
        chosen in this session."""
        model = self.model.value
        choices = [("bundled (shipped with the plugin)", BUNDLED)]
        choices += [(f"fine-tuned {version.label()}", str(version.path)) for version in list_versions(model)]
        choices += [(Path(path).name, path) for path in self._weight_paths]
        return choices

    def _default_weights(self) -> str:
        """The model's active weights (``chsnet finetune`` may have chosen a version), else bundled."""
        model = self.model.value
        try:
            choice = active_choice(model)
            return BUNDLED if choice == BUNDLED else str(weights_set_dir(model, choice))
        except WeightsError:
            return BUNDLED

    def _on_model_changed(self) -> None:
        info = MODELS[self.model.value]
        self.mirror_averaging.value = info.mirror_averaging
        # only EAMC reads its crop in tiles; the box is hidden (and off) for the others
        self.overlapping_tiles.visible = info.overlapping_tiles is not None
        self.overlapping_tiles.value = bool(info.overlapping_tiles)
        self.weights.reset_choices()
        self.weights.value = self._default_weights()

    def _add_weights(self, path: Path | None) -> None:
        if path is None:
            return
        if str(path) not in self._weight_paths:
            self._weight_paths.insert(0, str(path))
        self.weights.reset_choices()
        self.weights.value = str(path)

    def _choose_weights_folder(self) -> None:
        folder = self.dialogs.folder("Folder with CHS-Net weights (.safetensors)")
        try:
            _check_weights_folder(self.model.value, folder)
        except WeightsError as exc:  # another model's set: it would not be used for this model
            show_error(str(exc))
            return
        self._add_weights(folder)

    def _choose_weights_file(self) -> None:
        self._add_weights(self.dialogs.open_file("CHS-Net weights file", "Weights (*.safetensors)"))

    def _on_min_lesion_changed(self, value: float) -> None:
        self._results.min_lesion_ml = float(value)
        self._results.changed.emit()

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._worker is not None

    def settings(self) -> SegmentationSettings:
        """The engine settings from the panel (validated by the engine's dataclass)."""
        from napari_chsnet.inference.pipeline import SegmentationSettings

        weights = None if self.weights.value == BUNDLED else Path(self.weights.value)
        return SegmentationSettings(
            model=self.model.value,
            device=self.device.value,
            weights=weights,
            batch_size=int(self.batch_size.value),
            threshold=float(self.threshold.value),
            min_lesion_ml=float(self.min_lesion_ml.value),
            mirror_averaging=bool(self.mirror_averaging.value),
            overlapping_tiles=(
                bool(self.overlapping_tiles.value)
                if MODELS[self.model.value].overlapping_tiles is not None
                else None
            ),
        )

    def run(self) -> None:
        """Start a segmentation of the chosen CT (does nothing while one runs)."""
        if self.running:
            return
        ct_layer = self.ct.value
        if ct_layer is None:
            show_error(no_ct_message(self._viewer.layers))
            return
        try:
            volume = ct_volume_from_layer(ct_layer)
            settings = self.settings()
            _check_weights_folder(settings.model, settings.weights)  # a folder chosen for another model
        except CHSNetError as exc:
            show_error(str(exc))
            return
        converted = intensity_converted(ct_layer, volume)
        if converted:
            show_warning(f"'{ct_layer.name}': {converted}")
        spacing = spacing_warning(ct_layer)
        if spacing:  # the table and the report say it again
            show_warning(f"'{ct_layer.name}': {spacing}")
        if not self._confirm_replacing(ct_layer):
            return
        worker = create_worker(
            _segmentation,
            volume,
            settings,
            _progress={"desc": f"{MODELS[settings.model].title} segmentation"},
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(partial(self._on_result, ct_layer))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._done_status = ""
        self._set_running(True, "Starting…")
        worker.start()

    def stop(self) -> None:
        """Ask the running segmentation to stop at its next step."""
        if self._worker is not None:
            self.status.value = "Cancelling…"
            self.cancel.enabled = False
            self._worker.quit()

    def release(self) -> None:
        """The panel is closed: cancel a running segmentation quietly. From now on the worker's
        callbacks touch no widget (napari deletes them once the dock is gone) and show nothing."""
        self._closed = True
        self._viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
        if self._worker is not None:
            self._worker.quit()

    def _work_at_risk_since_start(self) -> bool:
        """Whether the result would now replace work the user did not agree to lose when pressing
        Segment: a layer of a result name added or renamed, or a mask edited, while the network ran."""
        at_risk = set(self._results.would_lose_work())
        edited = self._results.edit_count != self._confirmed_edits
        return bool(at_risk - self._confirmed_names) or (edited and bool(at_risk))

    def _confirm_replacing(self, ct_layer: Image) -> bool:
        """Ask before a run replaces layers that hold the user's work or another CT's result."""
        at_risk = self._results.would_lose_work()
        other_ct_layers, other_ct = self._results.computed_on_another_ct(ct_layer)
        self._confirmed_edits = self._results.edit_count
        self._confirmed_names = set(at_risk)
        if not at_risk and not other_ct_layers:
            return True
        paragraphs = []
        if other_ct_layers:
            names, several = _counted(other_ct_layers)
            paragraphs.append(
                f"The layer{'s' if several else ''} {names} hold{'' if several else 's'} the result of "
                f"the CT '{other_ct}'. Segmenting '{ct_layer.name}' replaces {'them' if several else 'it'} "
                "with its own result."
            )
        if at_risk:
            names, several = _counted(at_risk)
            paragraphs.append(
                f"The layers {names} were edited or not made by this run. Segmenting again replaces them "
                "with the new result and their edits cannot be undone."
                if several
                else f"The layer {names} was edited or not made by this run. Segmenting again replaces "
                "it with the new result and its edits cannot be undone."
            )
        them = "them" if len({*at_risk, *other_ct_layers}) > 1 else "it"
        paragraphs.append(
            f"To keep {them}, press No and rename {them} (double-click the name in the layer list) first."
        )
        if at_risk:
            title = "Replace corrected layers?" if len(at_risk) > 1 else "Replace a corrected layer?"
        else:
            title = "Replace another CT's result?"
        return self.dialogs.confirm(title, "\n\n".join(paragraphs))

    def _set_running(self, running: bool, status: str) -> None:
        self.segment.enabled = not running
        self.cancel.enabled = running
        # Every input the run has read is locked until it ends: a value changed meanwhile would be
        # shown but not used (the result would silently undo it).
        for widget in (
            self.ct,
            self.model,
            self.device,
            self.weights,
            self.weights_folder,
            self.weights_file,
            self.threshold,
            self.min_lesion_ml,
            self.mirror_averaging,
            self.overlapping_tiles,
            self.batch_size,
        ):
            widget.enabled = not running
        self.progress.visible = running
        self.progress.value = 0
        self.status.value = status

    def _on_progress(self, progress: Progress) -> None:
        if self._gone():
            return
        total = max(int(progress.total), 1)
        self.progress.max = total
        self.progress.value = min(int(progress.done), total)
        self.status.value = f"{progress.stage} ({progress.done}/{progress.total})"
        bar = getattr(self._worker, "pbar", None)
        if bar is not None:
            if bar.total != total:
                bar.total = total
            bar.update(int(progress.done) - bar.n)
            bar.set_description(progress.stage)

    def _on_result(self, ct_layer: Image, result: CaseResult) -> None:
        if self._gone():  # cancelled by closing the panel: the result is not shown
            return
        if not self._results.contains(ct_layer):
            self._done_status = "CT closed: result not shown."
            show_warning(
                f"The CT layer '{ct_layer.name}' was closed during the run; the result was not shown."
            )
            return
        if self._work_at_risk_since_start() and not self._confirm_replacing(ct_layer):
            self._done_status = "Result discarded: layers kept."
            return
        self._results.show(result, ct_layer)
        device = result.device.split(" ")[0]  # "cuda:0 (NVIDIA ...)" → "cuda:0"
        precision = reduced_precision(result.run_info.inference_options)
        if precision:
            device = f"{device}, {precision}"
        # The CT and the model are named: with several scans open, or models compared, the figures
        # must say whose they are. One line each: labels do not wrap, a long line widens the panel.
        self._done_status = (
            f"Done ({device}, {result.run_info.runtime_s:.1f} s): grade {shown_grade(result.severity.to_dict()['overall'])}\n"
            f"of the CT {quoted_name(ct_layer.name)},\n"
            f"segmented with {MODELS[result.run_info.model].title}."
        )

    def _on_error(self, exc: BaseException) -> None:
        message = None if self._gone() else _error_message(exc)
        from napari_chsnet.inference.device import release_after_failure

        release_after_failure(exc)  # a closed panel's failed run too
        if message is None:
            return
        self._done_status = "Failed: see the notification."
        show_error(message)

    def _on_aborted(self) -> None:
        if self._gone():
            return
        self._done_status = "Cancelled: no layer changed."
        show_info("Segmentation cancelled; no layer was added or changed.")

    def _on_finished(self) -> None:
        self._worker = None
        if not self._gone():
            self._set_running(False, self._done_status)
            new_ct, self._new_ct = self._new_ct, None
            if new_ct is not None:  # a CT opened during the run: the next run's choice
                self._choose_ct(new_ct)
