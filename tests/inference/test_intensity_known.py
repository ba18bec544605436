"""Known answers of the network-input mapping ``clip((HU - low) / (high - low), 0, 1)`` (docs/intensity.md)."""

from __future__ import annotations

import numpy as np

from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU, display8_to_hu, hu_to_unit


def test_hu_to_unit_is_linear_inside_the_window_and_clipped_to_0_1_outside():
    low, high = -1000.0, 1000.0
    hu = np.array([-3024, -2000, -1000, -500, 0, 500, 1000, 1500, 3071], dtype=np.int16)
    # outside the window: 0 below (scanner padding -3024 HU, air outside the FOV), 1 above (bone, metal)
    expected = [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(hu_to_unit(hu, (low, high)), expected, atol=1e-6)


def test_the_default_window_maps_8bit_values_back_to_v_over_255_and_clips_beyond_it():
    # docs: an 8-bit value v is -1110 + v / 255 * 1365 HU and goes in as v / 255.
    v = np.array([0, 1, 64, 128, 254, 255], dtype=np.float32)
    np.testing.assert_allclose(hu_to_unit(display8_to_hu(v)), v / 255, atol=1e-5)
    low, high = DISPLAY_WINDOW_HU
    out = hu_to_unit(np.array([low - 2000, low - 1, high + 1, high + 3000], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0, 1.0])
