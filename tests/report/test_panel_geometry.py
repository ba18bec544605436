"""Report panels of non-square pixels: extent, crop margin and outlines take rows' and columns' own spacing;
the key slices' spacing along z."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.report.pdf_images import (
    CROP_MARGIN_MM,
    _crop_box,
    _draw_ct,
    _draw_infection,
    _draw_lung_contours,
    _extent,
    select_key_slices,
)


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


def _outline_extent_mm(ax) -> tuple[float, float, float, float]:
    """(x min, x max, y min, y max) of every contour line drawn on ``ax``."""
    vertices = np.concatenate(
        [path.vertices for c in ax.collections for path in c.get_paths() if len(path.vertices)]
    )
    return vertices[:, 0].min(), vertices[:, 0].max(), vertices[:, 1].min(), vertices[:, 1].max()


def test_lung_and_infection_outlines_run_along_the_pixel_edges_of_the_ct_they_are_drawn_on():
    # A coronal-like plane: rows 5 mm apart, columns 0.7 mm. The CT image spans [0, cols * 0.7] x
    # [0, rows * 5] (pixel r covers [5 r, 5 r + 5)); an outline at level 0.5 between pixel centres lies on
    # the mask's pixel edges: rows 4..9, columns 6..19 → y 20..50 mm, x 4.2..14 mm.
    spacing_rc = (5.0, 0.7)
    lungs = np.zeros((16, 30), np.uint8)
    lungs[4:10, 6:20] = RIGHT_LUNG
    lungs[2:12, 22:26] = LEFT_LUNG  # rows 2..11, columns 22..25 → y 10..60 mm, x 15.4..18.2 mm
    ax = Figure().add_subplot()
    _draw_ct(ax, np.zeros(lungs.shape, np.float32), spacing_rc)
    assert ax.images[0].get_extent() == [0.0, 30 * 0.7, 16 * 5.0, 0.0]
    _draw_lung_contours(ax, lungs, spacing_rc)
    np.testing.assert_allclose(_outline_extent_mm(ax), (6 * 0.7, 26 * 0.7, 2 * 5.0, 12 * 5.0), atol=1e-6)

    # The infection outline follows the same rule (rows 4..9, columns 6..19).
    ax = Figure().add_subplot()
    _draw_infection(ax, lungs == RIGHT_LUNG, spacing_rc)
    np.testing.assert_allclose(_outline_extent_mm(ax), (6 * 0.7, 20 * 0.7, 4 * 5.0, 10 * 5.0), atol=1e-6)


def test_key_slices_are_kept_apart_by_a_twelfth_of_the_lung_height():
    # docs/report.md: three key slices "kept apart by about 1/12 of the lung height". Lungs on 60 slices:
    # 5 slices apart. Infection ranked 30 > 34 > 35 > 25 > 50: 34 is 4 from 30 (too close), 35 and 25 are
    # exactly 5 from 30 (far enough).
    lungs = np.ones((60, 8, 8), dtype=np.uint8)
    infection = np.zeros_like(lungs, dtype=bool)
    for z, n in {30: 50, 34: 45, 35: 40, 25: 35, 50: 10}.items():
        infection[z].flat[:n] = True
    assert select_key_slices(lungs, infection, 3) == [35, 30, 25]
