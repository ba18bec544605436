"""Known-answer geometry of the infection stages' crop → resize → restore.

Pixels are areas (``align_corners=False``): box pixel ``i`` covers ``[i, i + 1)`` and, resized from ``n``
to ``s`` pixels, lands on ``[i * s / n, (i + 1) * s / n)`` of the network grid. A feature therefore keeps
its place as a *fraction of the box* both ways, and the network's pixel ``j`` is restored onto the voxels it
was read from. A feature at the box centre stays centred under any symmetric convention (corner-aligned
too), so these tests put features off-centre, where the conventions part by up to half a pixel of the
finer grid.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import correlate1d

from napari_chsnet.inference.preprocessing import CropBox, crop_and_resize, restore_probabilities


def centroid(weights: np.ndarray, axis: int) -> float:
    """Intensity-weighted centre along ``axis`` of a 2-D array, in pixel edges (pixel ``i`` is centred at
    ``i + 0.5``)."""
    profile = weights.sum(axis=1 - axis)
    return float((profile * (np.arange(profile.size) + 0.5)).sum() / profile.sum())


def test_an_off_centre_column_keeps_its_fraction_of_the_box_when_the_crop_is_enlarged():
    # A 32 x 32 box at (y0=4, x0=10) of a 40 x 60 slice, enlarged 4 x to 128 (a small box read by a network).
    slices = np.zeros((1, 40, 60), np.float32)
    slices[0, :, 10 + 4] = 1.0  # box column 4: [4, 5), centre 4.5 = 9/64 of the box
    box = CropBox(4, 36, 10, 42)
    network_input = crop_and_resize(slices, box, 128)[0, 0].numpy()
    # 4.5 / 32 * 128 = 18 network pixels (its column hat is symmetric about 18).
    assert abs(centroid(network_input, axis=1) - 18.0) < 0.01
    # the column spans the box height: every row of the input holds it
    np.testing.assert_allclose(network_input.sum(axis=1), 1.0 * 128 / 32, atol=1e-5)


def test_an_off_centre_row_keeps_its_fraction_of_a_non_square_box_when_shrunk():
    # 200 rows x 64 columns → 100 x 100 (rows shrunk 2 x): the bright rows 20..23 ([20, 24), centre 22)
    # land at 22 / 200 * 100 = 11.
    slices = np.zeros((1, 220, 80), np.float32)
    slices[0, 10 + 20 : 10 + 24, :] = 1.0
    box = CropBox(10, 210, 8, 72)
    network_input = crop_and_resize(slices, box, 100)[0, 0].numpy()
    assert abs(centroid(network_input, axis=0) - 11.0) < 0.01


def test_a_network_pixel_is_restored_onto_the_voxels_it_was_read_from():
    # Network grid 64 → box 256 x 256 at (y0=30, x0=20) of a 300 x 300 slice (4 x enlarged).
    probabilities = torch.zeros(1, 1, 64, 64)
    probabilities[..., 8, 40] = 1.0  # network pixel (8, 40) covers box [32, 36) x [160, 164)
    box = CropBox(30, 286, 20, 276)
    restored = restore_probabilities(probabilities, box, 300, 300)[0]
    assert restored[: box.y0].max() == 0 and restored[:, : box.x0].max() == 0  # nothing outside the box
    # centres 34 and 162 in the box: 30 + 34 = 64 and 20 + 162 = 182 on the slice
    assert abs(centroid(restored, axis=0) - 64.0) < 0.01
    assert abs(centroid(restored, axis=1) - 182.0) < 0.01


def test_crop_resize_restore_of_an_identity_network_blurs_the_slice_in_place():
    """An identity network's probability is its input. Enlarged 4 x, box pixel ``i`` becomes network pixels
    ``4i .. 4i + 3`` at ``i - 0.375, i - 0.125, i + 0.125, i + 0.375``; restoring averages the middle two,
    so each voxel comes back as ``7/8`` of itself and ``1/16`` of each neighbour (edge voxels: their own
    value beyond the box edge): a symmetric blur, nothing moved."""
    rng = np.random.default_rng(0)
    slices = np.zeros((2, 48, 64), np.float32)
    box = CropBox(6, 38, 20, 52)  # 32 x 32 → 128 x 128
    inside = (slice(None), slice(box.y0, box.y1), slice(box.x0, box.x1))
    slices[inside] = rng.random((2, 32, 32), dtype=np.float32)
    slices[:, 10:14, 24:27] = 1.0  # an off-centre lesion
    restored = restore_probabilities(crop_and_resize(slices, box, 128), box, 48, 64)
    kernel = np.array([1 / 16, 7 / 8, 1 / 16])
    expected = np.zeros_like(slices)
    expected[inside] = correlate1d(
        correlate1d(slices[inside], kernel, axis=1, mode="nearest"), kernel, axis=2, mode="nearest"
    )
    np.testing.assert_allclose(restored, expected, atol=1e-5)


def test_a_one_pixel_line_in_a_shrunk_crop_keeps_its_area_whatever_its_phase():
    """Shrinking 4 x averages each 4 x 4 area (antialiasing): a one-pixel vessel is a quarter-bright line
    in the network input wherever it lies. Point sampling would drop it or double it by its phase."""
    for phase in range(4):
        slices = np.zeros((1, 256, 256), np.float32)
        slices[0, :, 128 + phase] = 1.0
        network_input = crop_and_resize(slices, CropBox.full(256, 256), 64)[0, 0].numpy()
        # area kept: each row carries 1 px of 256 → 64 / 256 = 0.25 in the 64-px row
        np.testing.assert_allclose(network_input.sum(axis=1), 0.25, atol=1e-5, err_msg=f"phase {phase}")
        # and it stays where it was: centre 128 + phase + 0.5 of 256 → / 4 of 64
        assert abs(centroid(network_input, axis=1) - (128 + phase + 0.5) / 4) < 0.01, phase
