"""Report panels of non-square pixels: extent and crop margin take rows' and columns' own spacing."""

from __future__ import annotations

import numpy as np

from napari_chsnet.report.pdf_images import CROP_MARGIN_MM, _crop_box, _extent


def test_extent_of_a_non_square_pixel_slice_is_columns_times_column_spacing_by_rows_times_row_spacing():
    # 10 rows of 2.5 mm, 20 columns of 0.5 mm: 10 mm wide, 25 mm tall; (left, right, bottom, top).
    assert _extent((10, 20), (2.5, 0.5)) == (0.0, 10.0, 25.0, 0.0)


def test_crop_margin_is_the_same_in_mm_along_rows_and_columns_of_non_square_pixels():
    assert CROP_MARGIN_MM == 15.0
    mask = np.zeros((100, 200), dtype=bool)
    mask[40:50, 80:100] = True  # rows 40..49, columns 80..99
    # rows 5 mm apart: 15 mm is 3 rows; columns 1 mm apart: 15 mm is 15 columns.
    rows, cols = _crop_box(mask, (5.0, 1.0))
    assert (rows, cols) == (slice(37, 53), slice(65, 115))
    # ceil: 15 mm over 4 mm rows is 4 rows (16 mm), over 2 mm columns 8 columns; clipped at the edges.
    edge = np.zeros((20, 30), dtype=bool)
    edge[1:3, 25:28] = True
    assert _crop_box(edge, (4.0, 2.0)) == (slice(0, 7), slice(17, 30))
