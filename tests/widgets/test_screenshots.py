"""Screenshots of the panel and layers for the README (docs/screenshots/*.png), taken under Xvfb.

The viewer is 1366 x 768 (the smallest screen the panel must fit). The sample CT is segmented with
the bundled weights when the package has them; otherwise with the toy random-init weights of the
other tests, whose masks are meaningless: re-run this test once bundled weights are present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from napari_chsnet.errors import WeightsError
from napari_chsnet.inference.weights import resolve_weights
from napari_chsnet.registry import INFECTION_LAYER, LUNGS_LAYER

from .test_segment_panel import choose_weights, run_segmentation

pytestmark = [pytest.mark.gui, pytest.mark.slow]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SCREEN = (1366, 768)


def test_screenshots_of_the_workflow(make_napari_viewer, qtbot, user, tiny_weights):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*SCREEN)
    viewer.open_sample("napari-chsnet", "synthetic_chest_ct")
    for name in ("lungs (ground truth)", "infection (ground truth)"):
        viewer.layers[name].visible = False
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-chsnet", "CHS-Net Segment")
    widget.use_dialogs(user)
    try:
        resolve_weights("chsnet")
    except WeightsError:
        choose_weights(widget, user, tiny_weights)

    run_segmentation(qtbot, widget)
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=10_000)

    # Show the axial slice with the most infection, the whole body in view.
    infection = viewer.layers[INFECTION_LAYER].data
    per_slice = infection.reshape(infection.shape[0], -1).sum(axis=1)
    z = int(np.argmax(per_slice)) if per_slice.any() else infection.shape[0] // 2
    viewer.dims.set_point(0, viewer.layers[LUNGS_LAYER].data_to_world((z, 0, 0))[0])
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers[LUNGS_LAYER]

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    for index, name in enumerate(("segment", "correct", "report")):
        widget.tabs.setCurrentIndex(index)
        qtbot.wait(300)
        path = SCREENSHOTS / f"{name}.png"
        viewer.window.screenshot(str(path), canvas_only=False, flash=False)
        written.append(path)

    for path in written:
        with PILImage.open(path) as image:
            width, height = image.size
            pixels = np.asarray(image.convert("RGB"))
        assert width >= 1000 and height >= 600, f"{path} is {width}x{height}"
        assert pixels.std() > 10, f"{path} looks blank"
