"""Known-answer crop boxes for an asymmetric, off-centre, non-square lung mask."""

from __future__ import annotations

import numpy as np

from napari_chsnet.inference.preprocessing import CropBox, lung_crop_box


def test_crop_box_of_wide_short_off_centre_lungs_matches_hand_computed_box():
    # Lungs occupy rows 20..25 (6 rows) and columns 8..27 (20 columns) of a 40 x 64 slice,
    # split across two slices so the box is the union over the volume.
    mask = np.zeros((3, 40, 64), dtype=np.uint8)
    mask[0, 20:24, 8:20] = 1
    mask[2, 22:26, 15:28] = 1
    # margin = round(fraction * span) + 1: rows round(0.25 * 6) + 1 = 3, columns round(0.25 * 20) + 1 = 6.
    # Box is half-open: [20 - 3, 25 + 1 + 3) x [8 - 6, 27 + 1 + 6).
    box = lung_crop_box(mask, margin_fraction=0.25)
    assert box == CropBox(17, 29, 2, 34)
    assert (box.height, box.width) == (12, 32)


def test_crop_box_without_margin_is_the_tight_half_open_box_plus_one_pixel():
    mask = np.zeros((20, 50), dtype=bool)
    mask[3:7, 30:45] = True  # rows 3..6, columns 30..44
    # margin_fraction 0: margin is 0 + 1 on every side.
    assert lung_crop_box(mask, margin_fraction=0.0) == CropBox(2, 8, 29, 46)


def test_crop_box_clips_at_the_slice_edges():
    mask = np.zeros((10, 30), dtype=bool)
    mask[0:10, 25:30] = True  # full height, right edge
    # rows margin round(0.25 * 10) + 1 = 3 → clipped to [0, 10); columns round(1.25) + 1 = 2 → [23, 30).
    assert lung_crop_box(mask, margin_fraction=0.25) == CropBox(0, 10, 23, 30)


def test_default_margin_is_the_model_cards_four_percent_of_the_lungs_extent():
    # The bundled weights read "the lungs' in-plane bounding box (+4 % margin)" (resources/weights/*.md),
    # the framing they were trained on. Lungs rows 100..299 (200 rows), columns 60..459 (400 columns):
    # margins round(0.04 * 200) + 1 = 9 rows and round(0.04 * 400) + 1 = 17 columns.
    mask = np.zeros((2, 512, 512), dtype=bool)
    mask[0, 100:300, 60:460] = True
    assert lung_crop_box(mask) == CropBox(91, 309, 43, 477)
