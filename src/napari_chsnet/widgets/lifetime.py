"""How long the panel's Qt widgets live, for the code that outlives them (workers' callbacks).

napari deletes the panel with its main window (``WA_DeleteOnClose``) when the user closes the
window, with neither a ParentChange nor a closeEvent for the panel: ``WindowCloseWatch`` tells the
panel, which then lets go as it does when its dock is closed. A callback queued before that and
delivered after it still checks ``widget_deleted`` before it touches a widget.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


def widget_deleted(widget: Any) -> bool:
    """Whether the Qt object behind ``widget`` (a QWidget, or a magicgui widget's ``native``) is
    gone: any call on a deleted wrapper raises RuntimeError, in PyQt and PySide alike."""
    try:
        getattr(widget, "native", widget).objectName()
    except RuntimeError:
        return True
    return False


class WindowCloseWatch(QObject):
    """Calls ``on_close`` when the top-level window that holds ``widget`` (napari's main window)
    closes: the close was accepted (a Hide follows the Close; napari may ask first and be told
    No), or the window is about to be deleted (a hidden window closes without a Hide). It may come
    more than once (Hide, then the deletion): ``on_close`` must not mind.

    napari deletes its main window on close (``WA_DeleteOnClose``) and with it the docked panel,
    with neither a ParentChange nor a closeEvent for the panel. The watch follows the widget's
    ancestors (the dock is put into the main window after the panel is put into the dock), so
    call ``watch_ancestors`` when the widget's own parent changes. A floating dock's window is not
    watched: hiding or closing it only hides the panel.

    Only weak references are kept (to the widget, ``on_close``'s object and the ancestors): a strong
    one kept napari's window, and its viewer, alive after the window was closed.
    """

    def __init__(self, widget: QWidget, on_close: Callable[[], None]) -> None:
        super().__init__(widget)
        self._widget = weakref.ref(widget)
        self._on_close = weakref.WeakMethod(on_close) if hasattr(on_close, "__self__") else lambda: on_close
        self._watched: list[weakref.ref[QObject]] = []
        self._closing = False
        self.watch_ancestors()

    def watch_ancestors(self) -> None:
        for ref in self._watched:
            watched = ref()
            if watched is not None:
                with contextlib.suppress(RuntimeError):  # deleted meanwhile
                    watched.removeEventFilter(self)
        self._watched = []
        widget = self._widget()
        ancestor = widget.parentWidget() if widget is not None else None
        while ancestor is not None:
            ancestor.installEventFilter(self)
            self._watched.append(weakref.ref(ancestor))
            ancestor = ancestor.parentWidget()

    def _closed(self) -> None:
        on_close = self._on_close()
        if on_close is not None:
            on_close()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        kind = event.type()
        if kind == QEvent.Type.ParentChange:
            self.watch_ancestors()
        elif kind == QEvent.Type.DeferredDelete:  # an ancestor goes, and the widget with it
            self._closed()
        elif isinstance(watched, QWidget) and watched.parentWidget() is None:
            if kind == QEvent.Type.Close:
                # Accepted or not is only known after the filter: Qt hides a window whose close
                # was accepted before the close returns (the Hide below). The flag is not reset by
                # a timer: napari processes events inside its closeEvent (File → Exit closes every
                # viewer there), which would fire it before the Hide. A window shown again resets it.
                self._closing = True
            elif kind == QEvent.Type.Show:
                self._closing = False
            elif kind == QEvent.Type.Hide and self._closing and not event.spontaneous():
                self._closed()
        return False


class ClosablePanel:
    """For a panel (``native``, ``release()``, a ``_closed`` flag that ``release`` sets) whose workers'
    callbacks may arrive after napari deleted its widgets: ``_gone`` tells them to touch nothing."""

    _closed: bool
    native: Any

    def release(self) -> None:
        raise NotImplementedError

    def _gone(self) -> bool:
        """Whether the panel is closed or its widgets deleted (napari's window closed with it): a
        callback then touches nothing. Deleted widgets release the panel, cancelling the run."""
        if not self._closed and widget_deleted(self.native):
            self.release()
        return self._closed
