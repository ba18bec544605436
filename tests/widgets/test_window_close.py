"""Closing napari's main window while the panel works: napari deletes the window, and the docked
panel with it, without taking the panel out of its dock and without a closeEvent for it. The panel
must let go as when its dock is closed (cancel quietly, nothing written), and a worker callback
queued before the deletion must not touch the deleted widgets (it raised ``RuntimeError: wrapped
C/C++ object of type QProgressBar has been deleted``, then napari aborted)."""

from __future__ import annotations

import time

import pytest

from napari_chsnet.widgets.finetune import FinetunePanel
from napari_chsnet.widgets.lifetime import widget_deleted

from .conftest import add_ct
from .test_segment_panel import RUN_TIMEOUT_MS, choose_weights

pytestmark = pytest.mark.gui
PANEL = ("napari-chsnet", "CHS-Net Segment")


def _stand_in_fine_tune(monkeypatch, finetune: FinetunePanel) -> list[int]:
    """Replace the training by a worker that reports steps until it is cancelled; returns the steps."""
    steps: list[int] = []

    def work(*_args):
        for step in range(1, 1000):
            if finetune._cancel.is_set():
                return None
            finetune._bridge.step.emit(step, 1000, 0.5)
            steps.append(step)
            time.sleep(0.01)
        return None

    monkeypatch.setattr(FinetunePanel, "corrected_case", lambda _self: object())
    monkeypatch.setattr(FinetunePanel, "_work", lambda _self, *args: work(*args))
    return steps


def _close_window_with_x(qtbot, viewer) -> None:
    """The window's ✕ (its closeEvent; napari deletes the window, WA_DeleteOnClose), then the event
    loop runs on (IPython's %gui qt, or other viewers still open)."""
    window = viewer.window._qt_window
    with qtbot.waitSignal(window.destroyed, timeout=5000):
        window.close()
    # napari's Window.close (the fixture's teardown) would close the deleted window again
    del viewer.window._qt_window


@pytest.mark.parametrize("shown", [True, False], ids=["shown", "hidden"])
def test_closing_naparis_window_during_a_fine_tune_cancels_it_quietly(
    make_napari_viewer, qtbot, monkeypatch, notifications, shown
):
    """A shown window is hidden when its close is accepted; a hidden one is only deleted."""
    viewer = make_napari_viewer(show=shown)
    _dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    finetune = widget.finetune
    steps = _stand_in_fine_tune(monkeypatch, finetune)
    finetune.run()
    qtbot.waitUntil(lambda: len(steps) > 3, timeout=5000)

    _close_window_with_x(qtbot, viewer)  # a step callback on the deleted bar fails the test

    qtbot.waitUntil(lambda: not finetune.running, timeout=5000)
    qtbot.wait(100)
    assert finetune._closed and widget._released
    assert len(steps) < 999, "cancelled"
    assert not [n for n in notifications if "Fine-tun" in str(n.message)]


def test_napari_closing_its_window_itself_releases_the_panel_at_once(make_napari_viewer, qtbot, monkeypatch):
    """viewer.close() (File → Close Window; File → Exit closes every viewer so): the fine-tune is
    cancelled before napari waits for the workers to end (it waits when the application quits)."""
    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    finetune = widget.finetune
    steps = _stand_in_fine_tune(monkeypatch, finetune)
    finetune.run()
    qtbot.waitUntil(lambda: len(steps) > 3, timeout=5000)

    viewer.close()

    assert finetune._closed and finetune._cancel.is_set()  # at once, no event loop needed
    qtbot.waitUntil(lambda: not finetune.running, timeout=5000)


def test_a_window_close_that_napari_refuses_keeps_the_panel(make_napari_viewer, qtbot):
    """napari asks before closing a window with layers (or running tasks): "No" keeps everything."""
    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    window = viewer.window._qt_window
    with pytest.MonkeyPatch.context() as patch:  # undone before the fixture closes the viewer
        patch.setattr(type(window), "closeEvent", lambda _self, event: event.ignore())
        window.close()
        qtbot.wait(50)

    assert window.isVisible() and not widget._released and not widget.finetune._closed
    assert set(widget.shortcuts) == {"Shift-S", "Shift-R", "Shift-L", "Shift-J"}


def _start_a_long_segmentation(viewer, widget, small_phantom, user, tiny_weights):
    """Segment a phantom CT with tiny weights one slice per step (many steps: progress still arrives
    after a close); returns the Segment tab, running."""
    add_ct(viewer, small_phantom)
    choose_weights(widget, user, tiny_weights)
    segment = widget.segment
    segment.batch_size.value = 1
    segment.segment.native.click()
    assert segment.running
    return segment


def test_closing_naparis_window_during_a_segmentation_cancels_it_quietly(
    make_napari_viewer, qtbot, small_phantom, tiny_weights, user, notifications
):
    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    widget.use_dialogs(user)
    segment = _start_a_long_segmentation(viewer, widget, small_phantom, user, tiny_weights)

    _close_window_with_x(qtbot, viewer)  # a progress callback on the deleted bar fails the test

    qtbot.waitUntil(lambda: not segment.running, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(100)
    assert segment._closed
    assert [layer.name for layer in viewer.layers] == ["small CT"]
    assert not [n for n in notifications if "cancelled" in str(n.message)]


def test_callbacks_after_the_widgets_are_deleted_touch_nothing_and_cancel(panel, qtbot):
    """However the panel's widgets went (no release came first), a late callback only cancels."""
    _viewer, widget = panel
    finetune, segment = widget.finetune, widget.segment
    for part in (finetune, segment):
        with qtbot.waitSignal(part.native.destroyed, timeout=5000):
            part.native.deleteLater()
        assert widget_deleted(part) and widget_deleted(part.progress)

    finetune._on_step(3, 10, 0.5)  # raised RuntimeError: wrapped C/C++ object ... deleted
    finetune._on_error(RuntimeError("late"))
    finetune._on_finished()
    assert finetune._closed and finetune._cancel.is_set()

    from napari_chsnet.inference.pipeline import Progress

    segment._on_progress(Progress(stage="infection", done=1, total=4))
    segment._on_finished()
    assert segment._closed


def test_widget_deleted_tells_a_live_widget_from_a_deleted_one(qtbot):
    from qtpy.QtWidgets import QWidget

    live = QWidget()
    qtbot.addWidget(live)
    gone = QWidget()
    with qtbot.waitSignal(gone.destroyed, timeout=5000):
        gone.deleteLater()
    assert not widget_deleted(live) and widget_deleted(gone)


def test_napari_quitting_stops_a_fine_tune(make_napari_viewer, qtbot, small_phantom, monkeypatch, tmp_path):
    """File → Exit: napari asks every worker to quit and waits for them (on the application's
    aboutToQuit, inside the window's close, before the panel hears of the close). The fine-tune
    ran to its end and wrote a version meanwhile."""
    import numpy as np
    from superqt.utils._qthreading import WorkerBase

    import napari_chsnet.training.finetune as training
    from napari_chsnet.training.loop import Cancelled

    from .conftest import show_known_result

    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    polled = []

    def finetune(base, model, cases, should_stop, **options):
        for _ in range(300):  # 3 s at most: a fine-tune that never stops outlives the test
            if should_stop():
                raise Cancelled("fine-tuning cancelled")
            polled.append(1)
            time.sleep(0.01)
        return None

    monkeypatch.setattr(training, "finetune", finetune)
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    z, y, x = np.argwhere(small_phantom.lungs > 0)[0]
    viewer.layers["infection"].data_setitem((np.array([z]), np.array([y]), np.array([x])), 1)
    finetune_tab = widget.finetune
    finetune_tab.run()
    qtbot.waitUntil(lambda: len(polled) > 3, timeout=30_000)

    WorkerBase.await_workers(msecs=2000)  # napari's wait_for_workers_to_quit; raised: did not quit

    assert len(polled) < 300
