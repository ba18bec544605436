"""Correct panel: one-click fixes of the lungs and infection masks, each ONE undo step.

Each helper computes the corrected mask off the GUI thread from a snapshot, then writes only the
voxels it changed, and only where the layer still holds the snapshot's value, through
``Labels.data_setitem`` inside ``Labels.block_history()``: Ctrl+Z in napari reverts the whole
helper at once, and paint strokes made meanwhile are kept. A result that arrives during a brush
stroke waits for the stroke to end, so that it stays its own undo step. Painting, filling and
erasing by hand are napari's own Labels tools.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from scipy import ndimage as ndi

from napari_chsnet.inference.postprocess import (
    fill_holes_per_slice,
    remove_small_components,
    restrict_to_lungs,
)
from napari_chsnet.registry import INFECTION_LAYER, LEFT_LUNG, LUNG_LABEL_NAMES, LUNGS_LAYER, RIGHT_LUNG
from napari_chsnet.widgets.layer_facts import layer_geometry
from napari_chsnet.widgets.layout import end_with_stretch, paragraph, row
from napari_chsnet.widgets.results import ResultLayers
from napari_chsnet.widgets.tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari

# Lines kept short: the panel is as wide as its widest line (no word wrap, see layout.paragraph).
HOW_TO_PAINT = (
    "By hand: select the 'lungs' or 'infection'\n"
    "layer; P paint, E erase, F fill, [ ] brush size.\n"
    "Lungs: label 1 = right, 2 = left; infection: 1.\n"
    "Any other label shows magenta.\n"
    "Ctrl+Z undoes, Ctrl+Shift+Z redoes."
)
RELABEL_HINT = "Relabel the lung part under the cursor:"
CURSOR_HINT = "Put the mouse cursor on a lung in the canvas, then press Shift+R (right) or Shift+L (left)."
STROKE_RETRY_MS = 50  # how often a finished helper checks whether the brush stroke has ended


# ---------------------------------------------------------------- the corrections (numpy only)
def restricted_infection(infection: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Infection with every voxel outside both lungs cleared."""
    return np.where(restrict_to_lungs(infection, lungs), infection, 0).astype(infection.dtype)


def without_islands(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Each label's 3-D components (26-connected) smaller than ``min_voxels`` set to background."""
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        region = labels == value
        out[region & ~remove_small_components(region, min_voxels)] = 0
    return out


def with_holes_filled(labels: np.ndarray) -> np.ndarray:
    """Background holes inside each label filled with that label, slice by slice (axial)."""
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        out[fill_holes_per_slice(labels == value) & (out == 0)] = value
    return out


def relabelled_component(labels: np.ndarray, voxel: tuple[int, int, int], new_label: int) -> np.ndarray:
    """The 3-D component (26-connected, same label) containing ``voxel`` set to ``new_label``."""
    value = labels[voxel]
    out = labels.copy()
    if value == 0:
        return out
    components, _ = ndi.label(labels == value, structure=np.ones((3, 3, 3), dtype=bool))
    out[components == components[voxel]] = new_label
    return out


def min_voxels_for(volume_ml: float, voxel_volume_ml: float) -> int:
    """Smallest voxel count whose volume reaches ``volume_ml`` (so smaller islands go)."""
    # Rounded first so that e.g. 0.1 mL of 0.001 mL voxels is 100 voxels, not 101 by float error.
    return max(1, math.ceil(round(volume_ml / voxel_volume_ml, 6)))


def first_label_along(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[int, ...] | None:
    """The first non-zero voxel on the segment from ``start`` to ``end`` (data coordinates), or None:
    in 3-D, the voxel the user sees under the cursor (as napari's own hover and paint find it)."""
    steps = int(np.ceil(np.linalg.norm(np.asarray(end) - np.asarray(start)))) + 1
    points = np.linspace(start, end, steps * 2)  # half-voxel steps: no voxel on the ray is skipped
    voxels = np.clip(np.round(points), 0, np.array(data.shape) - 1).astype(int)
    hits = np.flatnonzero(data[tuple(voxels.T)])
    return tuple(int(v) for v in voxels[hits[0]]) if hits.size else None


def in_stroke(layer: Labels) -> bool:
    """Whether a brush stroke (or another grouped edit) is open on ``layer``.

    napari's paint/erase/fill keep ``block_history()`` open from mouse press to release and have
    no public flag for it; writing meanwhile would merge the helper into the stroke's undo step.
    The flag is read on the layer itself: through napari's plugin proxy it would warn.
    """
    return bool(getattr(getattr(layer, "__wrapped__", layer), "_block_history", False))


def apply_as_one_step(layer: Labels, before: np.ndarray, after: np.ndarray) -> int:
    """Write the voxels where ``after`` differs from ``before`` into ``layer`` as one undo step,
    except those the user changed since ``before`` was taken (their edit wins).

    Returns:
        The number of voxels written.
    """
    changed = np.nonzero((before != after) & (np.asarray(layer.data) == before))
    if changed[0].size == 0:
        return 0
    with layer.block_history():
        layer.data_setitem(changed, after[changed])
    return int(changed[0].size)


# ---------------------------------------------------------------- the panel
class CorrectPanel(Container):
    """The Correct tab."""

    def __init__(self, viewer: napari.Viewer, results: ResultLayers) -> None:
        self._viewer = viewer
        self._results = results
        self._busy = False
        self._closed = False  # the panel was closed: its Qt widgets are gone or about to be
        self._deferred: Callable[[], None] | None = None  # a result waiting for a stroke to end

        self.restrict = PushButton(text="Restrict infection to lungs", tooltip=TOOLTIPS["restrict"])
        self.target = ComboBox(
            label="Mask",
            choices=[INFECTION_LAYER, LUNGS_LAYER],
            value=INFECTION_LAYER,
            tooltip=TOOLTIPS["islands_target"],
        )
        self.islands_ml = FloatSpinBox(
            label="Islands below (mL)",
            value=0.1,
            min=0.001,
            max=500.0,
            step=0.1,
            tooltip=TOOLTIPS["islands_ml"],
        )
        self.remove_islands = PushButton(text="Remove islands", tooltip=TOOLTIPS["remove_islands"])
        self.fill_holes = PushButton(text="Fill holes", tooltip=TOOLTIPS["fill_holes"])
        self.relabel_right = PushButton(text="Right lung (Shift+R)", tooltip=TOOLTIPS["relabel_right"])
        self.relabel_left = PushButton(text="Left lung (Shift+L)", tooltip=TOOLTIPS["relabel_left"])
        super().__init__(
            widgets=[
                paragraph(HOW_TO_PAINT)[0],
                self.restrict,
                self.target,
                self.islands_ml,
                row(self.remove_islands, self.fill_holes),
                paragraph(RELABEL_HINT)[0],
                row(self.relabel_right, self.relabel_left),
            ]
        )
        end_with_stretch(self)
        self._buttons = (
            self.restrict,
            self.remove_islands,
            self.fill_holes,
            self.relabel_right,
            self.relabel_left,
        )
        self.restrict.changed.connect(self.restrict_infection)
        self.remove_islands.changed.connect(self.remove_small_islands)
        self.fill_holes.changed.connect(self.fill_mask_holes)
        self.relabel_right.changed.connect(partial(self.relabel_under_cursor, RIGHT_LUNG))
        self.relabel_left.changed.connect(partial(self.relabel_under_cursor, LEFT_LUNG))
        # A child of the panel (deleted with it): a closed panel retries with QTimer.singleShot.
        self._stroke_wait = QTimer(self.native)
        self._stroke_wait.setSingleShot(True)
        self._stroke_wait.setInterval(STROKE_RETRY_MS)
        self._stroke_wait.timeout.connect(self._retry_deferred)

    @property
    def busy(self) -> bool:
        return self._busy

    def release(self) -> None:
        """The panel is closed: a running helper still writes its result into the layer (as
        Ctrl+Z-able as ever), but touches no widget of the panel from now on."""
        self._closed = True
        self._stroke_wait.stop()
        if self._deferred is not None:
            QTimer.singleShot(STROKE_RETRY_MS, self._retry_deferred)

    @property
    def waiting_for_stroke(self) -> bool:
        """A helper's result is ready and waits for the brush stroke on its layer to end."""
        return self._deferred is not None

    # ------------------------------------------------------------------ helpers
    def _mask_layer(self, name: str) -> Labels | None:
        layer = self._results.layer(name)
        if layer is None:
            show_error(
                f"There is no '{name}' Labels layer; press Segment first (or name a Labels layer '{name}')."
            )
        return layer  # type: ignore[return-value]

    def restrict_infection(self) -> None:
        infection, lungs = self._mask_layer(INFECTION_LAYER), self._mask_layer(LUNGS_LAYER)
        if infection is None or lungs is None:
            return
        if lungs.data.shape != infection.data.shape:
            show_error(
                f"'{LUNGS_LAYER}' {lungs.data.shape} and '{INFECTION_LAYER}' {infection.data.shape} are not on the "
                "same grid; segment again to get matching layers."
            )
            return
        lungs_snapshot = np.array(lungs.data, copy=True)
        self._run(
            "Infection restricted to the lungs",
            infection,
            partial(restricted_infection, lungs=lungs_snapshot),
        )

    def remove_small_islands(self) -> None:
        layer = self._mask_layer(self.target.value)
        if layer is None:
            return
        min_voxels = min_voxels_for(float(self.islands_ml.value), layer_geometry(layer).voxel_volume_ml)
        self._run(
            f"Islands below {self.islands_ml.value:g} mL removed from '{layer.name}'",
            layer,
            partial(without_islands, min_voxels=min_voxels),
        )

    def fill_mask_holes(self) -> None:
        layer = self._mask_layer(self.target.value)
        if layer is not None:
            self._run(f"Holes filled in '{layer.name}'", layer, with_holes_filled)

    def relabel_under_cursor(self, new_label: int, *_args: Any) -> None:
        """Relabel the lung component under the viewer's cursor (its last position on the canvas)."""
        lungs = self._mask_layer(LUNGS_LAYER)
        if lungs is None:
            return
        voxel = self._lung_voxel_under_cursor(lungs)
        if voxel is None:
            show_warning(CURSOR_HINT)
            return
        self._run(
            f"Component relabelled as {LUNG_LABEL_NAMES[new_label]}",
            lungs,
            partial(relabelled_component, voxel=voxel, new_label=new_label),  # type: ignore[arg-type]
        )

    def _lung_voxel_under_cursor(self, lungs: Labels) -> tuple[int, ...] | None:
        """The lung voxel the user points at: in 2-D the one at the cursor; in 3-D the first lung
        voxel along the view ray (the cursor's depth is only the camera-centre plane)."""
        position = self._viewer.cursor.position
        if self._viewer.dims.ndisplay == 3:
            start, end = lungs.get_ray_intersections(
                position, self._view_direction(), list(self._viewer.dims.displayed), world=True
            )
            if start is None or end is None:
                return None
            return first_label_along(np.asarray(lungs.data), start[-3:], end[-3:])
        voxel = tuple(int(round(float(v))) for v in lungs.world_to_data(position)[-3:])
        inside = len(voxel) == 3 and all(0 <= v < n for v, n in zip(voxel, lungs.data.shape, strict=True))
        return voxel if inside and lungs.data[voxel] != 0 else None

    def _view_direction(self) -> np.ndarray:
        """The ray through the cursor: the one napari's hover uses (set on each mouse move; right
        for a perspective camera too), else the camera's (the same for every pixel when orthographic)."""
        cursor = getattr(self._viewer.cursor, "__wrapped__", self._viewer.cursor)  # no proxy warning
        direction = getattr(cursor, "_view_direction", None)
        if direction is None:
            dims = self._viewer.dims
            camera = getattr(self._viewer, "scene", self._viewer).camera  # viewer.scene since napari 0.9
            direction = camera.calculate_nd_view_direction(dims.ndim, dims.displayed)
        return np.asarray(direction)

    # ------------------------------------------------------------------ worker plumbing
    def _run(self, description: str, layer: Labels, correction: Callable[[np.ndarray], np.ndarray]) -> None:
        if self._busy:
            show_info("A correction is still running; try again when it is done.")
            return
        snapshot = np.array(layer.data, copy=True)
        worker = create_worker(correction, snapshot, _ignore_errors=True)
        worker.returned.connect(partial(self._apply, layer, snapshot, description))
        worker.errored.connect(lambda exc: show_error(f"{description} failed: {exc}"))
        worker.finished.connect(self._on_worker_finished)
        self._set_busy(True)
        worker.start()

    def _on_worker_finished(self) -> None:
        # A result waiting for a brush stroke to end keeps the panel busy until it is written: a
        # second helper would start from a snapshot without it.
        if self._deferred is None:
            self._set_busy(False)

    def _apply(self, layer: Labels, snapshot: np.ndarray, description: str, corrected: np.ndarray) -> None:
        if self._results.contains(layer) and in_stroke(layer):
            self._deferred = partial(self._apply, layer, snapshot, description, corrected)
            if self._closed:  # the panel's timer is deleted with it
                QTimer.singleShot(STROKE_RETRY_MS, self._retry_deferred)
            else:
                self._stroke_wait.start()
            return
        was_deferred, self._deferred = self._deferred is not None, None
        self._write(layer, snapshot, description, corrected)
        if was_deferred:  # the worker has finished meanwhile: nothing else ends the busy state
            self._set_busy(False)

    def _retry_deferred(self) -> None:
        if self._deferred is not None:
            self._deferred()

    def _write(self, layer: Labels, snapshot: np.ndarray, description: str, corrected: np.ndarray) -> None:
        if not self._results.contains(layer):
            show_warning(f"'{layer.name}' was closed before the correction finished; nothing was changed.")
            return
        changed = apply_as_one_step(layer, snapshot, corrected)
        if changed == 0:  # no undo step was added: Ctrl+Z would undo the edit before it
            show_info(f"{description}: nothing to change.")
            return
        volume_ml = changed * layer_geometry(layer).voxel_volume_ml
        show_info(f"{description}: {changed} voxels ({volume_ml:.2f} mL) changed; Ctrl+Z undoes it.")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if self._closed:
            return
        for button in self._buttons:
            button.enabled = not busy
