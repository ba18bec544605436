"""The docked panel at its narrowest: every page and the severity table fit the dock (nothing cut off
on the right), measured with Qt's own geometry in a shown window (Xvfb)."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication, QScrollArea, QWidget

from napari_chsnet.widgets.main import PANEL_MIN_WIDTH_PX

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui
TABLE_TIMEOUT_MS = 5_000


@pytest.fixture
def narrowest_panel(make_napari_viewer, qtbot, small_phantom):
    """A shown viewer whose panel dock was dragged as narrow as it goes, with a result on screen
    (figures in the table, layers in every picker)."""
    viewer = make_napari_viewer(show=True)
    # Opened before the panel: Qt sizes a picker to the items it holds when first shown.
    ct = add_ct(viewer, small_phantom, name="a CT layer whose name is far longer than any dock is wide")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-chsnet", "CHS-Net Segment")
    show_known_result(widget, ct, small_phantom)
    widget.reset_choices()
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    window = viewer.window._qt_window
    window.resizeDocks([dock], [1], Qt.Orientation.Horizontal)  # as narrow as the dock allows
    QApplication.processEvents()
    return widget


def _overflow(page_name: str, scroll: QScrollArea) -> list[str]:
    """Shown widgets of the scroll area's content whose right edge lies beyond its viewport."""
    viewport = scroll.viewport()
    content = scroll.widget()
    beyond = []
    for child in [content, *content.findChildren(QWidget)]:
        if not child.isVisibleTo(content) or child.width() <= 0:
            continue
        right = child.mapTo(viewport, QPoint(child.width() - 1, 0)).x()
        if right >= viewport.width():
            beyond.append(
                f"{page_name}: {type(child).__name__} {child.objectName() or getattr(child, 'text', lambda: '')()!r} "
                f"right edge {right} >= viewport width {viewport.width()}"
            )
    return beyond


def test_every_page_and_the_table_fit_the_panel_at_its_minimum_width(narrowest_panel):
    widget = narrowest_panel
    scroll = widget.findChild(QScrollArea)
    assert widget.width() == widget.minimumWidth() >= PANEL_MIN_WIDTH_PX, "the dock is at its narrowest"

    overflow = []
    for index in range(widget.tabs.count()):
        widget.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        overflow += _overflow(widget.tabs.tabText(index), scroll)
        assert scroll.widget().width() <= scroll.viewport().width()
    assert not overflow, "\n".join(overflow)

    # Each column at least as wide as its header and figures (none elided), within the table.
    table = widget.severity.table
    header = table.horizontalHeader()
    for column in range(table.columnCount()):
        assert header.sectionSize(column) >= max(
            header.sectionSizeHint(column), table.sizeHintForColumn(column)
        )
    assert header.length() <= table.viewport().width()


def test_a_long_layer_name_does_not_widen_the_panel(narrowest_panel):
    widget = narrowest_panel
    combo = widget.segment.ct.native
    assert "far longer" in combo.currentText()
    assert combo.minimumSizeHint().width() < combo.fontMetrics().horizontalAdvance(combo.currentText())
