"""The Segment tab refuses a CT layer whose values the reader found not to be HU, as an error notification."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_chsnet.registry import LUNGS_LAYER
from napari_chsnet.widgets.layer_facts import ct_volume_from_layer

from .test_segment_panel import choose_weights, run_segmentation

pytestmark = pytest.mark.gui


def test_a_layer_read_from_values_not_in_hu_is_refused_with_a_notification(
    panel, qtbot, tiny_weights, small_phantom, tmp_path, notifications
):
    """An MR-like file (300-1500, no air) opens with the reader's warning; segmenting it gave a report."""
    viewer, widget = panel
    mr_like = np.clip(300 + (small_phantom.ct.hu.astype(np.float32) + 1024) * 0.6, 0, 1500).astype(np.int16)
    path = tmp_path / "mr_like.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(mr_like), str(path))
    with pytest.warns(UserWarning, match="do not look like Hounsfield units"):
        [layer] = viewer.open(str(path), plugin="napari-chsnet")
    assert ct_volume_from_layer(layer).metadata["intensity"] == "unknown", "carried from the reader"
    widget.segment.ct.value = layer
    choose_weights(widget, widget.dialogs, tiny_weights)

    run_segmentation(qtbot, widget)

    errors = [str(n.message) for n in notifications if n.severity == "error"]
    assert errors, "no error notification"
    for fragment in (str(path), "do not look like Hounsfield units", "open the original CT scan"):
        assert fragment in errors[-1]
    assert "\n" not in errors[-1]
    assert LUNGS_LAYER not in viewer.layers
    assert widget.segment.status.value.startswith("Failed")
