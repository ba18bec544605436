"""Coronal and sagittal views with the head at the top.

This plugin's volumes are ``(z, y, x)`` with z growing toward the patient's head (superior; see
``io/volume.py``), and napari draws a 2-D view's vertical axis downward: a coronal
(``viewer.dims.order == (1, 0, 2)``) or sagittal (``(2, 0, 1)``) view showed the feet at the top.
While a layer whose grid this plugin knows (a CT or mask this plugin's reader opened, the sample's
CT: ``metadata["chsnet_geometry"]`` with ``metadata["chsnet_source"]``; a run's result on such a
CT: ``metadata["chsnet_plugin_grid"]``) is open and the 2-D view's vertical axis is that z axis,
the camera's vertical orientation (``camera.orientation2d``, napari ≥ 0.6) is turned "up". A scan
opened by another reader (and its result) keeps napari's orientation: its z direction is unknown.

The camera is touched only when that wanted state changes: turning up saves the orientation the
view had, and leaving (the axial or 3-D view, where flipping one axis would mirror the rendering;
the last such layer closed; the panel closed) gives that saved orientation back. An orientation
the user sets meanwhile is left alone: opening or closing layers does not undo it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_chsnet.napari_hooks import GEOMETRY_KEY, SOURCE_KEY

if TYPE_CHECKING:
    import napari

UP = "up"
PLUGIN_GRID_KEY = "chsnet_plugin_grid"  # result-layer metadata: True when its CT's grid is this plugin's


def on_plugin_grid(metadata: dict[str, Any]) -> bool:
    """Whether a layer's grid came from this plugin (its reader or sample, or a run on such a CT)
    rather than being guessed from another reader's scale and translate."""
    if GEOMETRY_KEY not in metadata:
        return False
    return SOURCE_KEY in metadata or bool(metadata.get(PLUGIN_GRID_KEY))


def _default_vertical() -> str:
    """napari's own vertical orientation (its Preferences; "down" unless the user changed it)."""
    try:
        from napari.settings import get_settings

        return str(get_settings().application.vertical_axis_orientation)
    except Exception:  # noqa: BLE001 (settings unreadable: napari's default)
        return "down"


def _camera(viewer: napari.Viewer) -> Any:
    return getattr(viewer, "scene", viewer).camera  # viewer.scene since napari 0.9


class UprightViews:
    """Keeps the superior end at the top of coronal and sagittal 2-D views (see the module
    docstring) while the panel is open."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self._viewer = viewer
        self._turned = False  # this object turned the vertical axis "up" (and must turn it back)
        self._saved: str | None = None  # the vertical orientation the view had before it was turned
        self._emitters = (
            viewer.dims.events.order,
            viewer.dims.events.ndisplay,
            viewer.dims.events.ndim,
            viewer.layers.events.inserted,
            viewer.layers.events.removed,
        )
        for emitter in self._emitters:
            emitter.connect(self.update)
        self.update()

    def _wanted(self) -> bool:
        """Whether the view's vertical axis is the z axis of a layer on a CHS-Net grid, in 2-D."""
        dims = self._viewer.dims
        if dims.ndisplay != 2 or not hasattr(_camera(self._viewer), "orientation2d"):
            return False
        vertical = dims.order[-2]
        return any(
            on_plugin_grid(layer.metadata) and layer.ndim == 3 and vertical == dims.ndim - layer.ndim
            for layer in self._viewer.layers
        )

    def update(self, *_args: Any) -> None:
        """Turn the vertical axis up when a coronal or sagittal view of a CHS-Net volume begins, and
        give the view its earlier orientation back when it ends; nothing while neither happens."""
        wanted = self._wanted()
        if wanted and not self._turned:
            self._saved = self._vertical()
            self._set_vertical(UP)
            self._turned = True
        elif not wanted and self._turned:
            self._turn_back()

    def _vertical(self) -> str:
        return str(_camera(self._viewer).orientation2d[0])

    def _turn_back(self) -> None:
        self._set_vertical(self._saved if self._saved is not None else _default_vertical())
        self._turned = False
        self._saved = None

    def _set_vertical(self, vertical: str) -> None:
        camera = _camera(self._viewer)
        current_vertical, horizontal = camera.orientation2d
        if str(current_vertical) != vertical:
            camera.orientation2d = (vertical, horizontal)

    def release(self) -> None:
        """The panel is closed: stop following the view, and give it napari's orientation back."""
        for emitter in self._emitters:
            emitter.disconnect(self.update)
        if self._turned:
            self._turn_back()
