"""Coronal and sagittal views with the head at the top.

This plugin's volumes are ``(z, y, x)`` with z growing toward the patient's head (superior; see
``io/volume.py``), and napari draws a 2-D view's vertical axis downward: a coronal
(``viewer.dims.order == (1, 0, 2)``) or sagittal (``(2, 0, 1)``) view showed the feet at the top.
While a layer on a CHS-Net grid (a CT this plugin's reader opened, the sample, a run's result:
``metadata["chsnet_geometry"]``) is open and the 2-D view's vertical axis is that z axis, the
camera's vertical orientation (``camera.orientation2d``, napari ≥ 0.6) is turned "up"; the axial
view and the 3-D view (where flipping one axis would mirror the rendering) get napari's own
setting back (Preferences → Application → vertical axis orientation, "down" by default). The same
happens when the last such layer is closed, or the panel is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_chsnet.napari_hooks import GEOMETRY_KEY

if TYPE_CHECKING:
    import napari

UP = "up"


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
            GEOMETRY_KEY in layer.metadata and layer.ndim == 3 and vertical == dims.ndim - layer.ndim
            for layer in self._viewer.layers
        )

    def update(self, *_args: Any) -> None:
        """Turn the vertical axis up for a coronal or sagittal view of a CHS-Net volume, and back to
        napari's setting for any other view once it was turned."""
        if self._wanted():
            self._set_vertical(UP)
            self._turned = True
        elif self._turned:
            self._set_vertical(_default_vertical())
            self._turned = False

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
            self._set_vertical(_default_vertical())
            self._turned = False
