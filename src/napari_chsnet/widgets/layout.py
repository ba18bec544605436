"""Small layout helpers shared by the panels (magicgui containers without label columns)."""

from __future__ import annotations

from magicgui.widgets import Container, Label, Widget


def row(*widgets: Widget) -> Container:
    """Widgets side by side, full width, no label column."""
    container = Container(widgets=list(widgets), layout="horizontal", labels=False)
    container.margins = (0, 0, 0, 0)
    return container


def paragraph(text: str) -> tuple[Container, Label]:
    """A text spanning the panel's width; returns (container, label to update).

    Texts keep their own line breaks (no word wrap): a word-wrapped label under-reports its
    height inside tabs and gets clipped.
    """
    label = Label(value=text)
    container = Container(widgets=[label], labels=False)
    container.margins = (0, 0, 0, 0)
    return container, label


def end_with_stretch(panel: Container) -> None:
    """Keep a panel's widgets together at the top when its tab is taller than it."""
    panel.native.layout().addStretch(1)


NAME_MAX_CHARS = 24  # a layer name in a status line or a title: longer names are cut short


def quoted_name(name: str, limit: int = NAME_MAX_CHARS) -> str:
    """A layer name in quotes for a label or a title, cut short with "…" past ``limit`` characters
    (labels do not wrap, and a long name would otherwise set the panel's width)."""
    return f"'{name}'" if len(name) <= limit else f"'{name[: limit - 1]}…'"
