"""One intensity mapping from CT values to network input, shared by training and inference.

The labelled training slices (COVID-SemiSeg) are 8-bit display images of an unknown window,
whereas scanners give Hounsfield units. ``scripts/estimate_intensity_window.py`` matches the
tissue peaks of the 8-bit slices (aerated lung parenchyma, soft tissue) against the same peaks
of the real HU volumes in ``covid-ct-md`` and finds a linear window of about [-1110, 255] HU
(centre -428, width 1365): an 8-bit value ``v`` corresponds to ``-1110 + v / 255 * 1365`` HU.
Every model sees ``clip((HU - low) / (high - low), 0, 1)``, so an 8-bit slice goes in as
``v / 255`` and a HU volume through the same window: both domains land on one distribution.
See docs/intensity.md for the figures.
"""

from __future__ import annotations

import numpy as np

# The window and the 8-bit conversions live with the readers (an 8-bit volume is converted there);
# they are re-exported here, where the network-input mapping is.
from napari_chsnet.io.hounsfield import DISPLAY_WINDOW_HU, display8_to_hu, display8_to_unit, unit_to_display8

__all__ = ["DISPLAY_WINDOW_HU", "display8_to_hu", "display8_to_unit", "hu_to_unit", "unit_to_display8"]


def hu_to_unit(hu: np.ndarray, window_hu: tuple[float, float] = DISPLAY_WINDOW_HU) -> np.ndarray:
    """Map HU to the [0, 1] network input through the shared window (float32)."""
    low, high = window_hu
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)
