"""The Qt side of ``widgets/dialogs.Dialogs.choose``: the panels' tests answer through ``ScriptedUser``,
so the real message box is driven here, clicking its buttons as a user would."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QMessageBox

from napari_chsnet.widgets.dialogs import Dialogs

pytestmark = pytest.mark.gui
CHOICES = ("Add a row", "Replace")


def _answer_the_box(answer) -> list[str]:
    """Once the box is open, call ``answer(box)``; returns a list that receives its default button's text."""
    seen: list[str] = []

    def act() -> None:
        box = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible())
        seen.append(box.defaultButton().text())
        answer(box)

    QTimer.singleShot(0, act)
    return seen


@pytest.mark.parametrize("clicked", CHOICES)
def test_choose_returns_the_clicked_choice_and_offers_the_first_as_default(qtbot, clicked):
    seen = _answer_the_box(lambda box: next(b for b in box.buttons() if b.text() == clicked).click())
    assert Dialogs().choose("File exists", "holds 1 row(s)", CHOICES) == clicked
    assert seen == ["Add a row"]


@pytest.mark.parametrize(
    "close",
    [lambda box: box.button(QMessageBox.StandardButton.Cancel).click(), lambda box: box.reject()],
    ids=["cancel", "escape"],
)
def test_choose_returns_none_when_cancelled_or_closed(qtbot, close):
    _answer_the_box(close)
    assert Dialogs().choose("File exists", "holds 1 row(s)", CHOICES) is None
