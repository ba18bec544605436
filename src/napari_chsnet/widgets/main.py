"""The dock widget behind Plugins → CHS-Net Segment (``napari.yaml``: ``CHSNetWidget``).

Thin: tabs for the panels (Segment, Correct, Report), the severity table under them (visible
from every tab; its title names the CT the masks were computed on, as several scans may be open),
all in a scroll area so the panel stays usable on a 1366×768 screen. While it is open, coronal and
sagittal views of a CHS-Net volume are shown head up (``views.UprightViews``). The panels
share one ``ResultLayers`` (the run's layers and the user's edits) and one ``Dialogs``.

Adding a tab is one entry in ``CHSNetWidget._tabs``: a title and a magicgui ``Container`` (or
anything with ``.native``), built from what it needs of ``self.viewer``, ``self.results``,
``self.dialogs`` and the other panels.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_warning
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QGroupBox,
    QLabel,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.widgets.correct import CorrectPanel
from napari_chsnet.widgets.dialogs import Dialogs
from napari_chsnet.widgets.finetune import FinetunePanel
from napari_chsnet.widgets.layout import quoted_name
from napari_chsnet.widgets.lifetime import WindowCloseWatch
from napari_chsnet.widgets.report_panel import ReportPanel, SeverityTable
from napari_chsnet.widgets.results import ResultLayers
from napari_chsnet.widgets.segment import SegmentPanel
from napari_chsnet.widgets.views import UprightViews

if TYPE_CHECKING:
    import napari

PANEL_MIN_WIDTH_PX = 340  # the least the panel gets; wider when a page needs it (``_fit_width``)
PANEL_MAX_MIN_WIDTH_PX = 600  # ... but never forced wider than this: the content scrolls sideways
COMBO_MIN_CHARS = 12  # layer and weights pickers: this many characters wide at least, longer names elide
SHORT_DISCLAIMER = "Research tool — not for clinical diagnosis."
SEVERITY_TITLE = "Severity (current layers)"  # the table's title when no run's CT is known


class CHSNetWidget(QWidget):
    """Segment a chest CT, correct the masks, read the severity and export it.

    Args:
        napari_viewer: the viewer (napari passes it when docking from the Plugins menu).
        dialogs: the questions asked of the user (file choosers, confirmations); tests pass
            their own answers, the default shows Qt dialogs.
    """

    def __init__(self, napari_viewer: napari.Viewer, dialogs: Dialogs | None = None) -> None:
        super().__init__()
        self._docked = False  # set when napari puts the panel in a dock (see ``event``)
        self._released = False
        self.viewer = napari_viewer
        self.dialogs = dialogs or Dialogs(self)
        self.results = ResultLayers(napari_viewer, parent=self)
        self.segment = SegmentPanel(napari_viewer, self.results, self.dialogs)
        self.correct = CorrectPanel(napari_viewer, self.results)
        self.report = ReportPanel(napari_viewer, self.results, self.dialogs)
        self.finetune = FinetunePanel(napari_viewer, self.results, self.segment)
        self.severity = SeverityTable(self.results)

        self.panels = dict(self._tabs())
        self.tabs = QTabWidget()
        for title, panel in self.panels.items():
            self.tabs.addTab(panel.native, title)

        self.severity_box = severity_box = QGroupBox(SEVERITY_TITLE)
        box_layout = QVBoxLayout(severity_box)
        box_layout.addWidget(self.severity)
        disclaimer = QLabel(SHORT_DISCLAIMER)
        disclaimer.setStyleSheet("color: #e05050;")
        disclaimer.setWordWrap(True)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self.tabs)
        layout.addWidget(severity_box)
        layout.addWidget(disclaimer)
        layout.addStretch(1)
        for combo in content.findChildren(QComboBox):
            # A long layer name or weights label would otherwise set the panel's width.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_MIN_CHARS)
        self._scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        # The panel is never narrower than its widest page (``_fit_width``), so nothing is clipped
        # on the right; a sideways scrollbar is left for a window too narrow to grant that width.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        content.installEventFilter(self)  # its LayoutRequest: a page's minimum width may have changed
        self.tabs.currentChanged.connect(self._fit_width)
        self._fit_width()
        self.results.changed.connect(self._name_the_ct)
        self._name_the_ct()
        self.upright_views = UprightViews(napari_viewer)

        self.shortcuts = self._bind_keys()
        # Closing napari's window deletes the panel with no ParentChange nor closeEvent: the window's
        # close is watched too (``WindowCloseWatch``), and a panel deleted any other way still stops
        # its workers as it goes (``destroyed``: only the workers, its Qt children are going).
        self._window_watch = WindowCloseWatch(self, self.release)
        self.destroyed.connect(partial(_cancel_workers, (self.segment, self.finetune)))

    def _fit_width(self, *_args: Any) -> None:
        """Keep the panel at least as wide as its content's minimum (every page, the table) plus a
        vertical scrollbar, so a narrow dock never cuts off the right-hand controls. Past
        ``PANEL_MAX_MIN_WIDTH_PX`` (a long unwrapped line) the content scrolls sideways instead of
        taking the canvas's room."""
        scroll = self._scroll
        needed = (
            scroll.widget().minimumSizeHint().width()
            + scroll.verticalScrollBar().sizeHint().width()
            + 2 * scroll.frameWidth()
        )
        width = min(max(PANEL_MIN_WIDTH_PX, needed), PANEL_MAX_MIN_WIDTH_PX)
        if width != self.minimumWidth():
            self.setMinimumWidth(width)

    def _name_the_ct(self, *_args: Any) -> None:
        """Title the table with the CT the masks on screen were computed on (several scans may be
        open: the figures must say whose they are); "(closed)" once it is closed. Masks that record
        no CT (drawn or opened by hand) are titled with the one open CT on their grid, if any, else
        keep the plain title."""
        if self._released:
            return
        ct = self.results.ct_layer()
        recorded = self.results.recorded_ct_name()
        name = ct.name if ct is not None else recorded
        if not name:
            title, tooltip = SEVERITY_TITLE, ""
        else:
            title = f"Severity — {quoted_name(name)}{'' if ct is not None else ' (closed)'}"
            how = "computed on" if recorded is not None else "drawn on the grid of"
            tooltip = f"The figures of the masks {how} the CT '{name}'."
        if title != self.severity_box.title():
            self.severity_box.setTitle(title)
        self.severity_box.setToolTip(tooltip)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.LayoutRequest and watched is self._scroll.widget():
            self._fit_width()
        return super().eventFilter(watched, event)

    def _tabs(self) -> list[tuple[str, Any]]:
        """The tabs, in order: (title, panel). A new tab is one more line here."""
        return [
            ("Segment", self.segment),
            ("Correct", self.correct),
            ("Report", self.report),
            ("Fine-tune", self.finetune),
        ]

    def use_dialogs(self, dialogs: Dialogs) -> None:
        """Ask the user through ``dialogs`` from now on (tests answer in advance this way)."""
        self.dialogs = dialogs
        self.segment.dialogs = dialogs
        self.report.dialogs = dialogs

    # ------------------------------------------------------------------ keyboard
    def _key_actions(self) -> dict[str, tuple[str, Callable[[], None]]]:
        """Viewer shortcuts (none is bound by napari by default; see docs/workflow.md)."""
        return {
            "Shift-S": ("Segment the chosen CT", self.segment.run),
            "Shift-R": (
                "Relabel the lung under the cursor as right",
                partial(self.correct.relabel_under_cursor, RIGHT_LUNG),
            ),
            "Shift-L": (
                "Relabel the lung under the cursor as left",
                partial(self.correct.relabel_under_cursor, LEFT_LUNG),
            ),
            "Shift-J": ("Show/hide the infection probability (JET)", self._toggle_probability),
        }

    def _bind_keys(self) -> dict[str, str]:
        """Bind the shortcuts that are still free; returns {key: description} of those bound."""
        bound = {}
        for key, (description, action) in self._key_actions().items():
            try:
                self.viewer.bind_key(key, _ignore_viewer(action))
            except ValueError:  # already bound by the user or another plugin: keep theirs
                show_warning(
                    f"CHS-Net: {key} is already bound in this viewer; '{description}' has no shortcut."
                )
                continue
            bound[key] = description
        return bound

    def _toggle_probability(self) -> None:
        layer = self.results.probability
        if layer is not None:
            layer.visible = not layer.visible

    # ------------------------------------------------------------------ napari hooks
    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer pickers (napari calls this when layers are added, removed or renamed)."""
        for panel in self.panels.values():
            reset = getattr(panel, "reset_choices", None)
            if reset is not None:
                reset()
        self._name_the_ct()  # the CT may have been renamed or closed

    def event(self, event: QEvent) -> bool:
        # The dock's title-bar ✕ (napari's remove_dock_widget) only takes the panel out of its dock
        # (setParent(None)); no closeEvent comes, so losing the dock is the moment to let go.
        if event.type() == QEvent.Type.ParentChange:
            self._window_watch.watch_ancestors()
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.release()
        return super().event(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        self.release()
        super().closeEvent(event)

    def release(self) -> None:
        """Let go of the viewer (the panel was closed): cancel a running segmentation or fine-tune
        quietly (a correction or an export finishes), keep every worker callback away from the
        widgets napari is about to delete, unbind the shortcuts (a re-opened panel binds them
        again) and stop listening to layer events. Idempotent."""
        if self._released:
            return
        self._released = True
        # Workers still running call back later, when napari may have deleted the widgets.
        for part in (self.segment, self.finetune, self.correct, self.report, self.severity):
            part.release()
        for key in self.shortcuts:
            self.viewer.bind_key(key, None)
        self.shortcuts = {}
        self.results.disconnect_viewer()
        self.finetune.disconnect_viewer()
        self.upright_views.release()
        # napari connected these when docking and never disconnects them
        for name in ("inserted", "removed", "reordered", "renamed"):
            getattr(self.viewer.layers.events, name).disconnect(self.reset_choices)


def _cancel_workers(parts: tuple[Any, ...], *_args: Any) -> None:
    """The panel's Qt object is being deleted: its running workers stop and never call back."""
    for part in parts:
        part.release()


def _ignore_viewer(action: Callable[[], None]) -> Callable[[Any], None]:
    """napari calls a key binding with the viewer; our actions already know it."""

    def on_key(_viewer: Any) -> None:
        action()

    return on_key
