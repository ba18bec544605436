"""The Fine-tune tab's layer pickers (CT, Lungs, Infection) and the Model that follows them.

The pickers hold the layers the user chose by ``unique_id``: a layer stays chosen through renames
(the docs advise renaming corrected masks to keep them), new layers and new runs until it is
closed. Defaults: a layer that looks like the mask (``mask_kind``: a run's layers by their
metadata, others by name), never the other mask picker's, an edited one first, then a run's; none
when no layer fits; the CT the chosen lungs were computed on. A default stays through renames and
new runs too, until a layer with more evidence of being the correction comes (``_evidence``: an
edited layer, then a run's): a ground-truth file opened with the sample gives way to the run's
masks, a renamed run's masks stay chosen when the next run brings fresh ones. The Model follows
the model of the run that made the chosen masks (their ``RUN_KEY`` metadata) until the user
chooses one.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from magicgui.widgets import ComboBox
from napari.layers import Layer

from napari_chsnet.registry import INFECTION_LAYER, LUNGS_LAYER, MODELS
from napari_chsnet.widgets.layer_facts import CT_ID_KEY, RUN_KEY, mask_kind, was_edited
from napari_chsnet.widgets.lifetime import widget_deleted


def _evidence(layer: Layer) -> tuple[bool, bool]:
    """How surely a mask-like layer holds the user's correction: edited (in this session or an
    earlier panel's), then made by a run (rather than only named like a mask). Compared as a tuple."""
    return was_edited(layer), RUN_KEY in layer.metadata


def _choice_with_id(picker: ComboBox, unique_id: Hashable | None) -> Layer | None:
    """The picker's choice that is the layer ``unique_id`` (napari hands plugins proxies of its
    layers, so a layer is recognised by its id, not by identity)."""
    if unique_id is None:
        return None
    return next((layer for layer in picker.choices if getattr(layer, "unique_id", None) == unique_id), None)


class LayerPickers:
    """What ``FinetunePanel`` does to choose its layers, kept apart from training. The panel provides
    the pickers ``ct``, ``lungs``, ``infection``, ``model``, ``_results``, ``running`` and the state
    below, set in its ``__init__`` before the first ``reset_choices``."""

    _chosen: dict[str, Hashable | None]  # picker -> unique_id of the layer the user chose
    _held: dict[str, Hashable | None]  # picker -> unique_id of the default it shows
    _cleared: set[str]  # mask pickers the user emptied (kept empty, no default)
    _filling: bool  # a default or a refresh is being set, not the user's own choice
    _model_picked: bool  # the user chose the Model: it no longer follows the masks' run
    _following: bool  # the Model is being set to the masks' run model, not by the user
    _closed: bool

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
        """The first layer that looks like ``kind``'s mask (edited ones first, then a run's, then
        the one named ``kind``), never one in ``exclude``."""
        candidates = [
            layer
            for layer in self.lungs.choices
            if layer is not None and layer.unique_id not in exclude and mask_kind(layer) == kind
        ]
        candidates.sort(key=lambda layer: (*(not e for e in _evidence(layer)), layer.name != kind))
        return candidates[0] if candidates else None

    def _fill_mask(self, key: str, other: str) -> None:
        picker = self._pickers()[key]
        if key in self._cleared:
            self._put(key, picker, None)
            return
        layer = self._present(picker, self._chosen, key)
        if layer is None:  # a default is never the other mask picker's layer (Start refuses that)
            exclude = {self._chosen.get(other), self._held.get(other)} - {None}
            layer = self._mask_default(key, exclude)
            held = self._present(picker, self._held, key)
            # The default shown so far stays (renamed, or a new run's fresh masks beside it) unless
            # the new default is likelier the correction: a run's or an edited layer replaces one
            # that only matched by name (the sample's ground truth, opened before the run). It stays
            # when the user puts it in the other picker too: Start then says both show one layer.
            if held is not None and (layer is None or _evidence(layer) <= _evidence(held)):
                layer = held
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
        self._follow_run_model()

    def _run_model(self) -> str | None:
        """The model of the run that made the chosen infection layer, else the chosen lungs layer."""
        for layer in (self.infection.value, self.lungs.value):
            run = layer.metadata.get(RUN_KEY) if layer is not None else None
            model = run.get("model") if isinstance(run, dict) else None
            if model in MODELS:
                return model
        return None

    def _follow_run_model(self) -> None:
        """Tune the model that made the chosen masks (an RD-UNet's corrections train RD-UNet, and
        "Re-segment with it" runs RD-UNet), unless the user chose the Model, as the pickers keep theirs."""
        model = self._run_model()
        if self._model_picked or self.running or model is None or model == self.model.value:
            return
        self._following = True
        try:
            self.model.value = model
        finally:
            self._following = False

    def _on_model_picked(self, *_args: Any) -> None:
        if not self._following:
            self._model_picked = True

    def _refill_defaults(self) -> None:
        """Choose the defaults again (a layer was edited for the first time: it may now be one)."""
        if self._closed or widget_deleted(self.native):
            return
        self._filling = True
        try:
            self._select_defaults()
        finally:
            self._filling = False
