"""The layers a segmentation run produces, and what the user has done to them since.

A run writes three layers named as in ``registry`` (``lungs``, ``infection``,
``infection probability``), aligned with the CT (its scale, translate and affine, and its
``metadata["chsnet_geometry"]`` so napari's File → Save Layers writes them on the CT's grid).

Re-running replaces these layers with fresh ones (so the new layers start with an empty undo
history), stacked directly above the CT they were computed on and keeping the old layers' display
settings (visibility, opacity, blending, contour). That CT is first moved above any other scan
(image layer) lying over it, so the result is never drawn under another scan opened since; labels,
points or shapes the user keeps above stay above. All three are swapped together: the layers on
screen always come from one run. Before that, the Segment panel asks for confirmation when a layer
it would replace was edited since the run that wrote it (any paint, fill, erase or correction
helper), was not written by a run at all (a file opened under that name), or holds the result of
another CT: a correction is never lost silently. An edit marks the layer itself
(``metadata["chsnet_edited"]``), so the mark follows it through renames (the docs advise renaming
a corrected layer to keep it), and so do the axial slices it touched
(``metadata["chsnet_edited_slices"]``, what the Fine-tune tab trains on: a panel closed and opened
again still knows them; edits made while no panel is open are not recorded). A run also stores a
checksum of each layer's data (``metadata["chsnet_checksum"]``): a panel opened later takes the
result layers whose data still match it as its own, unedited ones. Its masks also get one CRC-32 per
axial slice (``metadata["chsnet_slice_checksums"]``): for them the marks are not read but computed
when asked (``layer_facts.edited_slices`` and ``was_edited``, which every reader goes through): the
slices that differ from the run's. So an undo, a redo (on a hidden layer too: napari refreshes only
a visible one) or a stroke painted back counts as soon as the data change, with no event to follow;
the handlers only notify. Masks without them (opened from files, drawn by hand) keep the marks their
events set, which an undo does not clear.

The Labels layers carry ``features`` (the lung's name shown on hover) only in the 2-D view and only
while a panel is open (it watches the view's ndisplay; a closed panel takes them off). In 3-D,
before the mouse has moved over the canvas, napari (0.9.2) has no view direction and
``Labels.get_status`` hands ``np.asarray(None)`` to ``get_value`` for a layer with features:
``_world_to_data_ray`` raises ``TypeError: len() of unsized object`` whenever such a layer becomes
active (the same ``array(None)`` traceback is in napari PR #8135's thread; napari#7848 is another
3-D features crash). That broke a run finishing in 3-D half-way through replacing its layers.

The masks remember the CT they were computed on by its ``unique_id`` (a renamed CT is still found)
and its source file (a same-named CT of another scan is not taken for it). Masks that record no CT
(opened from the plugin's exported files, drawn by hand) belong to the one open CT on their grid
(``on_one_grid``), when exactly one lies there.

Volumes use the grid in ``chsnet_geometry`` (this plugin's reader), else the layer's scale; a CT
layer without the former (another reader's, an array) gets ``spacing_warning``, which its masks
carry (``SPACING_KEY``) into the table's note and the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QObject, Signal

from napari_chsnet.napari_hooks import (
    GEOMETRY_KEY,
    PROBABILITY_OPACITY,
    SOURCE_KEY,
    physical_axes,
    widen_contrast_range,
)
from napari_chsnet.registry import (
    INFECTION_LAYER,
    LEFT_LUNG,
    LUNG_LABEL_NAMES,
    LUNGS_LAYER,
    PROBABILITY_LAYER,
    RIGHT_LUNG,
)
from napari_chsnet.report import DEFAULT_MIN_LESION_ML
from napari_chsnet.widgets.colormaps import CHSNET_JET, infection_colormap, lung_colormap
from napari_chsnet.widgets.layer_facts import (
    CHECKSUM_KEY,
    CT_ID_KEY,
    CT_LAYER_KEY,
    CT_SOURCE_KEY,
    EDITED_KEY,
    EDITED_SLICES_KEY,
    LABEL_NAMES_KEY,
    MASK_LAYERS,
    RESULT_LAYERS,
    RUN_KEY,
    SLICE_CHECKSUMS_KEY,
    SPACING_KEY,
    data_checksum,
    edited_slices_of,
    layer_geometry,
    mask_kind,
    not_a_ct_because,
    on_one_grid,
    records_a_ct,
    slice_checksums,
    source_of,
    spacing_warning,
    was_edited,
)
from napari_chsnet.widgets.views import PLUGIN_GRID_KEY, on_plugin_grid

if TYPE_CHECKING:
    import napari

    from napari_chsnet.report.case import CaseResult


_LAYER_TYPES: dict[str, type[Layer]] = {
    LUNGS_LAYER: Labels,
    INFECTION_LAYER: Labels,
    PROBABILITY_LAYER: Image,
}
# Lungs as outlines (as in the PDF report) so the CT and the infection stay visible; set the
# layer's contour to 0 in napari's layer controls to see them filled.
LUNGS_CONTOUR_PX = 2
LUNGS_OPACITY = 0.9
INFECTION_OPACITY = 0.6


def _hover_features(layer: Layer) -> dict[str, list[Any]] | None:
    """The features a run gives its Labels layer (the status bar names the label under the mouse),
    or None for any other layer."""
    if not isinstance(layer, Labels) or RUN_KEY not in layer.metadata:
        return None
    if LABEL_NAMES_KEY in layer.metadata:
        return {
            "index": [RIGHT_LUNG, LEFT_LUNG],
            "lung": [LUNG_LABEL_NAMES[RIGHT_LUNG], LUNG_LABEL_NAMES[LEFT_LUNG]],
        }
    return {"index": [1], "finding": ["infection"]}


def _announce_history_replays(layer: Labels) -> None:
    """Make an undo or redo on a hidden Labels layer emit ``set_data``, as it does on a visible one.

    napari (0.9.2) replays its history and then calls ``refresh()``, which does nothing while the layer
    is hidden, and Labels has no event of its own for it (napari#4194): a Ctrl+Z on a hidden mask left
    the severity table on the figures from before it while the exports read the restored data. Ctrl+Z
    calls ``layer.undo()``, so the layer's own ``undo``/``redo`` are shadowed once, for every listener.
    """
    if getattr(layer, "_chsnet_announces_history", False):
        return

    def announcing(replay: Callable[[], None]) -> Callable[[], None]:
        def replay_and_announce() -> None:
            replay()
            if not layer.visible:
                layer.events.set_data()

        return replay_and_announce

    layer.undo, layer.redo = announcing(layer.undo), announcing(layer.redo)
    layer._chsnet_announces_history = True


def _widen_ct_contrast(layer: Layer) -> None:
    """A CT this plugin read opens in the lung window; its contrast slider must still reach soft
    tissue and bone (napari caps the slider at the limits a layer is made with)."""
    if isinstance(layer, Image) and SOURCE_KEY in layer.metadata and not layer.rgb:
        widen_contrast_range(layer)


def _computed_on(result: Layer, ct_layer: Layer) -> bool:
    """Whether a run's layer was computed on ``ct_layer``: that very layer, or one of its name opened
    again from the same file on the same grid."""
    meta = result.metadata
    if meta.get(CT_ID_KEY) == str(ct_layer.unique_id):
        return True
    return (
        meta.get(CT_LAYER_KEY) == ct_layer.name
        and meta.get(CT_SOURCE_KEY) == source_of(ct_layer)
        and tuple(result.data.shape) == tuple(ct_layer.data.shape)
    )


def _keep_display(old: Layer, new: Layer) -> None:
    """Give ``new`` the display settings the user chose for the layer it replaces."""
    new.visible, new.opacity, new.blending = old.visible, old.opacity, old.blending
    if isinstance(old, Labels) and isinstance(new, Labels):
        new.contour = old.contour


class ResultLayers(QObject):
    """Finds the result layers in a viewer, writes new ones, and tracks user edits.

    Signals:
        changed: the content of the ``lungs`` or ``infection`` layer may have changed (a run,
            a paint stroke, a correction, undo/redo, a layer added or removed); listeners
            debounce it.
    """

    changed = Signal()

    def __init__(self, viewer: napari.Viewer, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        # unique_id of the layer each name was last written with (napari hands plugins proxies of
        # the viewer and its layers, so identity tests would fail).
        self._written: dict[str, Hashable] = {}
        self._quiet_depth = 0
        self.edit_count = 0  # grows with every user edit of lungs/infection
        self.min_lesion_ml = DEFAULT_MIN_LESION_ML
        for layer in viewer.layers:
            self._watch(layer)
            _widen_ct_contrast(layer)
        self._adopt_unedited_results()
        self._sync_hover_features()
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        # A rename can change which layer is 'lungs' or 'infection' (the event has no names).
        viewer.layers.events.renamed.connect(self._emit)
        viewer.dims.events.ndisplay.connect(self._sync_hover_features)

    def disconnect_viewer(self) -> None:
        """Stop listening to the viewer (the panel is being closed). The hover features go too: with
        no panel watching ndisplay, a switch to 3-D would leave them on (napari crash, see the module
        docstring); a panel opened later restores them in 2-D."""
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        self._viewer.layers.events.removed.disconnect(self._on_removed)
        self._viewer.layers.events.renamed.disconnect(self._emit)
        self._viewer.dims.events.ndisplay.disconnect(self._sync_hover_features)
        for layer in self._viewer.layers:
            self._unwatch(layer)
            if _hover_features(layer) is not None and layer.features.shape[1] > 0:
                layer.features = {}

    def _adopt_unedited_results(self) -> None:
        """Take the result layers an earlier panel wrote as this panel's own while their data match
        the checksum stored when they were written; mark them edited when not (painted while no
        panel was open)."""
        for name in RESULT_LAYERS:
            layer = self.layer(name)
            if layer is None or RUN_KEY not in layer.metadata or was_edited(layer):
                continue
            stored = layer.metadata.get(CHECKSUM_KEY)
            if stored is not None and stored == data_checksum(layer.data):
                self._written[name] = layer.unique_id
            elif stored is not None:
                layer.metadata[EDITED_KEY] = True

    def _sync_hover_features(self, *_args: Any) -> None:
        """Give a run's Labels layers their hover features in 2-D, none in 3-D (napari crash, see
        the module docstring)."""
        for layer in self._viewer.layers:
            self._sync_features_of(layer)

    def _sync_features_of(self, layer: Layer) -> None:
        features = _hover_features(layer)
        if features is None:
            return
        has_features = layer.features.shape[1] > 0
        if self._viewer.dims.ndisplay == 3 and has_features:
            layer.features = {}
        elif self._viewer.dims.ndisplay != 3 and not has_features:
            layer.features = features

    # ------------------------------------------------------------------ finding layers
    def layer(self, name: str) -> Layer | None:
        """The layer called ``name`` if it has the type a run gives it (Labels or Image)."""
        if name in self._viewer.layers:
            layer = self._viewer.layers[name]
            if isinstance(layer, _LAYER_TYPES[name]):
                return layer
        return None

    def named(self, name: str) -> Layer | None:
        """The layer called ``name``, whatever its type."""
        return next((layer for layer in self._viewer.layers if layer.name == name), None)

    def labels_layers(self) -> list[Labels]:
        """The Labels layers in the viewer."""
        return [layer for layer in self._viewer.layers if isinstance(layer, Labels)]  # type: ignore[misc]

    def renamed_results(self) -> list[str]:
        """Names of a run's lungs and infection layers that now go by another name."""
        return [
            layer.name
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and RUN_KEY in layer.metadata and layer.name not in RESULT_LAYERS
        ]

    @property
    def lungs(self) -> Labels | None:
        return self.layer(LUNGS_LAYER)  # type: ignore[return-value]

    @property
    def infection(self) -> Labels | None:
        return self.layer(INFECTION_LAYER)  # type: ignore[return-value]

    @property
    def probability(self) -> Image | None:
        return self.layer(PROBABILITY_LAYER)  # type: ignore[return-value]

    def ct_layer(self) -> Image | None:
        """The CT image layer the current masks were computed on, if it is still open: that very
        layer (even renamed), else a layer of its name opened again from the same source file
        on the same grid (never a same-named CT of another scan). Masks that record no CT (opened
        from files, drawn by hand) belong to the one open CT on their grid, if only one lies there."""
        lungs = self.lungs
        if lungs is None:
            return None
        if not records_a_ct(lungs):
            matches = self.cts_on_the_masks_grid()
            return matches[0] if len(matches) == 1 else None
        meta = lungs.metadata
        images = [layer for layer in self._viewer.layers if isinstance(layer, Image)]
        same = [layer for layer in images if str(layer.unique_id) == meta.get(CT_ID_KEY)]
        if not same:
            same = [
                layer
                for layer in images
                if layer.name == meta.get(CT_LAYER_KEY)
                and source_of(layer) == meta.get(CT_SOURCE_KEY)
                and layer.data.shape == lungs.data.shape
            ]
        return same[0] if same else None  # type: ignore[return-value]

    def cts_on_the_masks_grid(self) -> list[Image]:
        """The open CTs (``not_a_ct_because``) that the ``lungs`` and ``infection`` layers on screen
        lie on, voxel for voxel (``on_one_grid``)."""
        masks = [layer for layer in (self.lungs, self.infection) if layer is not None]
        if not masks:
            return []
        return [
            layer  # type: ignore[misc]
            for layer in self._viewer.layers
            if not_a_ct_because(layer) is None and all(on_one_grid(mask, layer) for mask in masks)
        ]

    def spacing_warning(self) -> str | None:
        """Why the volumes of the masks on screen may not use the scan's voxel size (see the function
        ``spacing_warning``); None for a mask drawn on the grid of a CT this plugin's reader opened
        (napari's New Labels layer copies that CT's scale, not its metadata)."""
        lungs = self.lungs
        if lungs is None:
            return None
        warning = spacing_warning(lungs)
        if warning is None or SPACING_KEY in lungs.metadata:
            return warning
        shape, scale = lungs.data.shape[-3:], np.asarray(lungs.scale)[-3:]
        on_a_read_grid = any(
            isinstance(layer, Image)
            and GEOMETRY_KEY in layer.metadata
            and tuple(layer.data.shape[-3:]) == tuple(shape)
            and np.allclose(np.asarray(layer.scale)[-3:], scale)
            for layer in self._viewer.layers
        )
        return None if on_a_read_grid else warning

    def recorded_ct_name(self) -> str | None:
        """Name of the CT the masks were computed on when the masks record one (a run's masks)."""
        lungs = self.lungs
        return lungs.metadata.get(CT_LAYER_KEY) if lungs is not None else None

    def would_lose_work(self) -> list[str]:
        """Names of layers a new run would replace that hold work of the user's: edited since the
        run that wrote them, or not written by this panel."""
        return [
            layer.name
            for layer in self._viewer.layers
            if layer.name in RESULT_LAYERS
            and (self._written.get(layer.name) != layer.unique_id or was_edited(layer))
        ]

    def computed_on_another_ct(self, ct_layer: Layer) -> tuple[list[str], str]:
        """Names of the run's result layers on screen that were computed on a CT other than
        ``ct_layer`` (same layer, or the same file opened again on the same grid, counts as the
        same CT), and that other CT's name ("" when none)."""
        names, other = [], ""
        for name in RESULT_LAYERS:
            layer = self.layer(name)
            if layer is None or RUN_KEY not in layer.metadata or _computed_on(layer, ct_layer):
                continue
            names.append(name)
            other = other or self._ct_name_of(layer)
        return names, other

    def _ct_name_of(self, layer: Layer) -> str:
        """The current name of the CT a result layer was computed on (it may have been renamed), else
        the name it had then."""
        ct_id = layer.metadata.get(CT_ID_KEY)
        same = [other.name for other in self._viewer.layers if str(other.unique_id) == ct_id]
        return same[0] if same else str(layer.metadata.get(CT_LAYER_KEY) or "another CT")

    def contains(self, layer: Layer) -> bool:
        """Whether ``layer`` is still in the viewer."""
        return any(other.unique_id == layer.unique_id for other in self._viewer.layers)

    def is_edited(self, name: str) -> bool:
        """Whether the layer now called ``name`` was edited by the user (under any name)."""
        return any(layer.name == name and was_edited(layer) for layer in self._viewer.layers)

    # ------------------------------------------------------------------ writing a result
    def show(self, result: CaseResult, ct_layer: Image) -> None:
        """Put a run's lungs, infection and probability on top of ``ct_layer``, raised above any other
        scan, replacing any previous result layers (the caller has asked the user if they held edits)."""
        geometry = ct_layer.metadata.get(GEOMETRY_KEY) or layer_geometry(ct_layer).to_metadata()
        plugin_grid = on_plugin_grid(ct_layer.metadata)  # the views head up only on this plugin's grids
        spacing = spacing_warning(ct_layer)  # the masks' stored geometry no longer tells
        run = dataclasses.asdict(result.run_info)
        common: dict[str, Any] = {
            "scale": tuple(ct_layer.scale),
            "translate": tuple(ct_layer.translate),
            "affine": ct_layer.affine,
        }
        if physical_axes():  # napari with layer units: the masks read in the CT's units and axes
            common.update(units=tuple(ct_layer.units), axis_labels=tuple(ct_layer.axis_labels))

        def metadata() -> dict[str, Any]:
            return {
                GEOMETRY_KEY: dict(geometry),
                RUN_KEY: dict(run),
                CT_LAYER_KEY: ct_layer.name,
                CT_ID_KEY: str(ct_layer.unique_id),
                CT_SOURCE_KEY: source_of(ct_layer),
                **({PLUGIN_GRID_KEY: True} if plugin_grid else {}),
                **({SPACING_KEY: spacing} if spacing else {}),
            }

        lungs_data = np.asarray(result.lungs, dtype=np.uint8)
        infection_data = np.asarray(result.infection, dtype=np.uint8)
        probability_data = np.asarray(result.probability, dtype=np.float32)
        # Made without features: ``_on_inserted`` gives each its hover features as it joins the
        # viewer, in 2-D only (see the module docstring), and ``_swap`` checks them once all are in.
        lungs = Labels(
            lungs_data,
            name=LUNGS_LAYER,
            colormap=lung_colormap(),
            opacity=LUNGS_OPACITY,
            metadata={
                **metadata(),
                LABEL_NAMES_KEY: {str(k): v for k, v in LUNG_LABEL_NAMES.items()},
                CHECKSUM_KEY: data_checksum(lungs_data),
                SLICE_CHECKSUMS_KEY: slice_checksums(lungs_data),
            },
            **common,
        )
        infection = Labels(
            infection_data,
            name=INFECTION_LAYER,
            colormap=infection_colormap(),
            opacity=INFECTION_OPACITY,
            metadata={
                **metadata(),
                CHECKSUM_KEY: data_checksum(infection_data),
                SLICE_CHECKSUMS_KEY: slice_checksums(infection_data),
            },
            **common,
        )
        probability = Image(
            probability_data,
            name=PROBABILITY_LAYER,
            colormap=CHSNET_JET,
            blending="additive",
            opacity=PROBABILITY_OPACITY,
            contrast_limits=(0.0, 1.0),
            metadata={**metadata(), CHECKSUM_KEY: data_checksum(probability_data)},
            **common,
        )
        lungs.contour = LUNGS_CONTOUR_PX
        # Stacked CT < probability < lungs < infection: the red mask stays on top of the JET map.
        # Signals from the swap are one change for the listeners.
        with self._quiet():
            error = self._swap((probability, lungs, infection), ct_layer)
        # min_lesion_ml stays the Segment panel's setting (it keeps it in sync): the table and the
        # exports use the value the panel shows, not a copy taken when the run started.
        self.changed.emit()
        if error is not None:
            raise error

    def _swap(self, new: tuple[Layer, ...], ct_layer: Layer) -> Exception | None:
        """Replace the result layers by ``new`` (bottom to top), directly above ``ct_layer``, each
        keeping the display settings of the layer it replaces. ``ct_layer`` is first moved above
        the topmost other scan over it (an image ``not_a_ct_because`` accepts): the result is never
        hidden under another scan (a CT opened later is inserted above the layers already there).
        Overlays directly over the CT (a probability map, an earlier result renamed: layers up to the
        next scan) move with it and stay over it.

        All-or-nothing as the user sees it: every step is done even if one raises (an exception
        from a napari event handler, before or after napari changed its list), and the list is then
        checked: an old result layer still there (its removal refused) is removed again, renamed
        out of the way first if need be, and a new layer napari renamed (``lungs [1]`` beside an
        old ``lungs``) gets its name back. ``_written`` records only the layers that are in the list
        under their names. Returns the first error, for ``show`` to raise once done.
        """
        layers = self._viewer.layers
        errors: list[Exception] = []

        def step(action: Any, *args: Any) -> None:
            try:
                action(*args)
            except Exception as exc:  # noqa: BLE001 (raised by show once the swap is complete)
                errors.append(exc)

        for layer in new:
            old = next((o for o in layers if o.name == layer.name), None)
            if old is not None:
                _keep_display(old, layer)
        intended = {layer.unique_id: layer.name for layer in new}
        old_ids = [layer.unique_id for layer in layers if layer.name in RESULT_LAYERS]
        for old in [layer for layer in layers if layer.name in RESULT_LAYERS]:
            step(layers.remove, old)
        ct_index = next((i for i, layer in enumerate(layers) if layer.unique_id == ct_layer.unique_id), None)
        if ct_index is not None:
            scans_above = [
                i for i, layer in enumerate(layers) if i > ct_index and not_a_ct_because(layer) is None
            ]
            if scans_above:  # a move, above the top scan: no layer leaves the list
                # with the overlays directly over the CT (up to the next scan), so they stay over it
                group = list(range(ct_index, scans_above[0]))
                step(layers.move_multiple, group, scans_above[-1] + 1)
                ct_index = scans_above[-1] + 1 - len(group)
        for offset, layer in enumerate(new, start=1):
            if ct_index is None:
                step(layers.append, layer)
            else:
                step(layers.insert, ct_index + offset, layer)
        self._clear_stragglers(old_ids, step)
        for layer in new:
            if self._find(layer.unique_id) is not None and layer.name != intended[layer.unique_id]:
                step(setattr, layer, "name", intended[layer.unique_id])
        for layer in new:
            name = intended[layer.unique_id]
            present = self._find(layer.unique_id)
            if present is not None and present.name == name:
                self._written[name] = layer.unique_id
            else:
                self._written.pop(name, None)
        for layer in new:
            if self._find(layer.unique_id) is not None:
                step(self._sync_features_of, layer)
        return errors[0] if errors else None

    def _clear_stragglers(self, old_ids: list[Hashable], step: Any) -> None:
        """Remove the old result layers a failed removal left in the list: again as they are, then
        (a handler may refuse a layer by its name) under a name no run uses. One that still cannot
        be removed keeps that other name, marked edited, so it is never taken for a run's result."""
        for old_id in old_ids:
            straggler = self._find(old_id)
            if straggler is None:
                continue
            step(self._viewer.layers.remove, straggler)
            straggler = self._find(old_id)
            if straggler is None:
                continue
            step(setattr, straggler, "name", f"{straggler.name} (previous run)")
            straggler.metadata[EDITED_KEY] = True  # for good: no slice checksums to clear it
            straggler.metadata.pop(SLICE_CHECKSUMS_KEY, None)
            step(self._viewer.layers.remove, straggler)

    def _find(self, unique_id: Hashable) -> Layer | None:
        """The layer in the viewer with this ``unique_id``, if any."""
        return next((layer for layer in self._viewer.layers if layer.unique_id == unique_id), None)

    # ------------------------------------------------------------------ edit tracking
    @contextmanager
    def _quiet(self) -> Iterator[None]:
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def _emit(self) -> None:
        if not self._quiet_depth:
            self.changed.emit()

    def _watch(self, layer: Layer) -> None:
        if isinstance(layer, Labels):
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)
            # Undo and redo only refresh the layer, which emits set_data (so does moving the
            # slider, hence the listeners' debounce); on a hidden layer only once announced.
            _announce_history_replays(layer)
            layer.events.set_data.connect(self._on_refresh)

    def _unwatch(self, layer: Layer) -> None:
        if isinstance(layer, Labels):
            layer.events.paint.disconnect(self._on_edit)
            layer.events.data.disconnect(self._on_edit)
            layer.events.set_data.disconnect(self._on_refresh)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        _widen_ct_contrast(event.value)
        self._sync_features_of(event.value)
        if event.value.name in RESULT_LAYERS or self._looks_like_a_mask(event.value):
            self._emit()

    def _on_removed(self, event: Any) -> None:
        self._unwatch(event.value)
        if event.value.name in RESULT_LAYERS or self._looks_like_a_mask(event.value):
            self._emit()

    @staticmethod
    def _looks_like_a_mask(layer: Layer) -> bool:
        """A Labels layer named like a mask: the table's note names it while no 'lungs' and
        'infection' layers are open."""
        return isinstance(layer, Labels) and mask_kind(layer) is not None

    def _on_edit(self, event: Any) -> None:
        layer = event.source
        # Marked whatever its name now: a mask edited while renamed is still a corrected mask.
        layer.metadata[EDITED_KEY] = True
        if getattr(event, "type", None) == "paint":  # brush, fill, erase, data_setitem, a helper
            # Kept on the layer, not in a panel: a panel opened again knows them (Fine-tune tab's
            # "Only edited slices"). A new list each time: never a list another layer shares.
            touched = edited_slices_of(event.value, layer.data.shape[0])
            known = set(layer.metadata.get(EDITED_SLICES_KEY, ()))
            if not touched <= known:
                layer.metadata[EDITED_SLICES_KEY] = sorted(known | touched)
        if layer.name in MASK_LAYERS:
            self.edit_count += 1
            self._emit()

    def _on_refresh(self, event: Any) -> None:
        if event.source.name in MASK_LAYERS:
            self._emit()
