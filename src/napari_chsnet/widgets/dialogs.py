"""The questions the panel asks the user, behind one small class so tests can answer them.

Panels never call ``QMessageBox``/``QFileDialog`` directly: they call a ``Dialogs`` object, the
Qt one by default. A test passes its own object with the same methods (answers given in advance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox, QWidget


class Dialogs:
    """Qt dialogs parented to the panel. Every method returns None / False when the user cancels."""

    def __init__(self, parent: QWidget | None = None) -> None:
        self.parent = parent

    def confirm(self, title: str, text: str) -> bool:
        """Ask a yes/no question; the default button is No."""
        answer = QMessageBox.question(
            self.parent,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def choose(self, title: str, text: str, choices: Sequence[str]) -> str | None:
        """Ask to pick one of ``choices`` (buttons in that order, the first the default, Enter) or Cancel."""
        box = QMessageBox(
            QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.Cancel, self.parent
        )
        buttons = {box.addButton(choice, QMessageBox.ButtonRole.AcceptRole): choice for choice in choices}
        box.setDefaultButton(next(iter(buttons)))
        box.exec()
        return buttons.get(box.clickedButton())

    def save_file(self, title: str, suggested: Path, file_filter: str) -> Path | None:
        """A path to write; the panel itself asks before replacing (the native question is off
        because a CSV is appended to, not replaced)."""
        path, _ = QFileDialog.getSaveFileName(
            self.parent, title, str(suggested), file_filter, options=QFileDialog.Option.DontConfirmOverwrite
        )
        return Path(path) if path else None

    def open_file(self, title: str, file_filter: str) -> Path | None:
        path, _ = QFileDialog.getOpenFileName(self.parent, title, "", file_filter)
        return Path(path) if path else None

    def folder(self, title: str, start: Path | None = None) -> Path | None:
        path = QFileDialog.getExistingDirectory(self.parent, title, str(start or ""))
        return Path(path) if path else None
