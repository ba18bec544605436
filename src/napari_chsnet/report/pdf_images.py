"""The images of the PDF report: which planes to show (key axial slices, the coronal plane) and
how to draw them (CT in the lung window, lung and infection outlines, the probability map).

Orientation: volumes are ``(z, y, x)`` in LPS display orientation (x toward the patient's left,
y toward posterior, z toward superior, slice 0 most inferior). Images are shown in the
radiological convention: the patient's right on the image's left (x index 0 on the left, no
flip), anterior at the top of axial images, superior at the top of coronal images (z flipped).
Pixels are drawn in millimetres, so the physical aspect ratio follows the voxel spacing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes

from napari_chsnet.io.volume import Geometry
from napari_chsnet.registry import INFECTION_COLORS, LEFT_LUNG, LUNG_COLORS, RIGHT_LUNG
from napari_chsnet.slabs import slab_step

LUNG_WINDOW_HU = (-1350.0, 150.0)  # level -600, width 1500
PROBABILITY_FLOOR = 0.05  # probabilities below this are left transparent over the CT
CROP_MARGIN_MM = 15.0


# ---------------------------------------------------------------- planes and slice choice


def axial_image(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial plane ``z`` as shown: rows anterior→posterior, columns patient right→left."""
    return volume[z]


def coronal_image(volume: np.ndarray, y: int) -> np.ndarray:
    """Coronal plane ``y`` as shown: rows superior→inferior (z flipped), columns right→left."""
    return volume[::-1, y, :]


def _count_per_plane(lungs: np.ndarray, infection: np.ndarray | None, axis: int) -> np.ndarray:
    """Voxels of the lungs (``infection`` None) or of infection inside the lungs, per plane along
    ``axis`` (0: axial slices, 1: coronal planes), counted a few axial slices at a time."""
    sums = tuple(a for a in range(3) if a != axis)
    counts, step = [], slab_step(lungs.shape)
    for start in range(0, lungs.shape[0], step):
        inside = np.greater(lungs[start : start + step], 0)
        if infection is not None:
            np.logical_and(inside, infection[start : start + step], out=inside)
        counts.append(np.count_nonzero(inside, axis=sums))
    if not counts:
        return np.zeros(lungs.shape[axis], np.intp)
    return np.concatenate(counts) if axis == 0 else np.sum(counts, axis=0)


def select_key_slices(lungs: np.ndarray, infection: np.ndarray, n: int = 3) -> list[int]:
    """Axial slices to show: the ``n`` with the most infection, at least a few slices apart.

    Without infection, slices spread over the lungs' extent (at 1/4, 1/2, 3/4 for n=3).
    Returned superior first (reading order of a radiologist scrolling down).
    """
    depth = lungs.shape[0]
    lung_z = np.flatnonzero(_count_per_plane(lungs, None, axis=0))
    if lung_z.size == 0:
        lung_z = np.arange(depth)
    per_slice = _count_per_plane(lungs, infection, axis=0)
    chosen: list[int] = []
    if per_slice.any():
        # Neighbouring slices look alike; keep picks apart so the page shows different levels.
        min_gap = max(1, int(round((lung_z[-1] - lung_z[0] + 1) / (4 * n))))
        for z in np.argsort(-per_slice, kind="stable"):
            if per_slice[z] == 0 or len(chosen) == n:
                break
            if all(abs(int(z) - c) >= min_gap for c in chosen):
                chosen.append(int(z))
    if len(chosen) < n:
        spread = np.linspace(lung_z[0], lung_z[-1], n + 2)[1:-1].round().astype(int)
        for z in spread:
            if len(chosen) == n:
                break
            if int(z) not in chosen:
                chosen.append(int(z))
    return sorted(chosen, reverse=True)


def select_coronal_plane(lungs: np.ndarray, infection: np.ndarray) -> int:
    """Coronal plane (y index) with the most infection, or the most lung if there is none."""
    per_plane = _count_per_plane(lungs, infection, axis=1)
    if per_plane.any():
        return int(np.argmax(per_plane))
    return int(np.argmax(_count_per_plane(lungs, None, axis=1)))


def _crop_box(mask_2d: np.ndarray, spacing_rc: tuple[float, float]) -> tuple[slice, slice]:
    """Rows/columns of the mask's bounding box plus a margin in mm (the whole plane if empty)."""
    if not mask_2d.any():
        return slice(None), slice(None)
    box = []
    for axis, step in zip((1, 0), spacing_rc, strict=True):
        idx = np.flatnonzero(mask_2d.any(axis=axis))
        margin = int(np.ceil(CROP_MARGIN_MM / step))
        box.append(slice(max(0, idx[0] - margin), min(mask_2d.shape[1 - axis], idx[-1] + margin + 1)))
    return box[0], box[1]


def plane_position_mm(geometry: Geometry, shape: tuple[int, int, int], axis: int, index: int) -> float:
    """LPS coordinate (mm) of display plane ``index`` along array ``axis`` (0: z of an axial slice,
    1: y of a coronal plane), at the middle of the plane (the same everywhere on it unless the
    scan was oblique)."""
    centre = [(n - 1) / 2 for n in shape]  # (z, y, x)
    centre[axis] = index
    offset = np.asarray(geometry.spacing_mm) * np.asarray(centre[::-1])  # (x, y, z) in mm along the grid
    point = (
        np.asarray(geometry.origin_mm) + np.asarray(geometry.direction, dtype=float).reshape(3, 3) @ offset
    )
    return float(point[2 - axis])


# ---------------------------------------------------------------- drawing primitives


def _extent(shape: tuple[int, int], spacing_rc: tuple[float, float]) -> tuple[float, float, float, float]:
    rows, cols = shape
    return (0.0, cols * spacing_rc[1], rows * spacing_rc[0], 0.0)


def _draw_ct(ax: Axes, hu_2d: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    ax.imshow(
        hu_2d,
        cmap="gray",
        vmin=LUNG_WINDOW_HU[0],
        vmax=LUNG_WINDOW_HU[1],
        extent=_extent(hu_2d.shape, spacing_rc),
        interpolation="bilinear",
    )
    ax.set_axis_off()


def _draw_lung_contours(ax: Axes, lungs_2d: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    if min(lungs_2d.shape) < 2:  # the coronal plane of a one-slice scan: no outline to draw
        return
    rows = (np.arange(lungs_2d.shape[0]) + 0.5) * spacing_rc[0]
    cols = (np.arange(lungs_2d.shape[1]) + 0.5) * spacing_rc[1]
    for label in (RIGHT_LUNG, LEFT_LUNG):
        mask = lungs_2d == label
        if mask.any() and not mask.all():
            ax.contour(
                cols,
                rows,
                mask.astype(np.float32),
                levels=[0.5],
                colors=[LUNG_COLORS[label][:3]],
                linewidths=1.0,
            )


def _draw_infection(ax: Axes, infection_2d: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    """The counted infection as a red outline, so the CT under it stays visible.

    The mask is padded with one empty pixel, so infection touching the image's edge (or a coronal
    plane one slice high) is still closed by an outline; the axes keep the CT's extent."""
    mask = np.asarray(infection_2d) > 0
    if not mask.any():
        return
    padded = np.pad(mask, 1).astype(np.float32)
    rows = (np.arange(-1, mask.shape[0] + 1) + 0.5) * spacing_rc[0]
    cols = (np.arange(-1, mask.shape[1] + 1) + 0.5) * spacing_rc[1]
    left, right, bottom, top = _extent(mask.shape, spacing_rc)
    ax.contour(cols, rows, padded, levels=[0.5], colors=[INFECTION_COLORS[1][:3]], linewidths=1.3)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def _draw_probability(ax: Axes, probability_2d: np.ndarray, spacing_rc: tuple[float, float]) -> Any:
    shown = np.ma.masked_less(probability_2d.astype(np.float32), PROBABILITY_FLOOR)
    return ax.imshow(
        shown,
        cmap="jet",
        vmin=0.0,
        vmax=1.0,
        alpha=0.6,
        extent=_extent(probability_2d.shape, spacing_rc),
        interpolation="bilinear",
    )


def _orientation_labels(ax: Axes, top: str, bottom: str) -> None:
    """Patient-side letters: R on the image's left, L on its right (radiological convention)."""
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    style = {
        "transform": ax.transAxes,
        "color": "white",
        "fontsize": 11,
        "fontweight": "bold",
        "path_effects": outline,
    }
    ax.text(0.03, 0.5, "R", ha="left", va="center", **style)
    ax.text(0.97, 0.5, "L", ha="right", va="center", **style)
    ax.text(0.5, 0.97, top, ha="center", va="top", **style)
    ax.text(0.5, 0.03, bottom, ha="center", va="bottom", **style)


def plane_panels(
    axes: Sequence[Axes],
    planes: dict[str, np.ndarray | None],
    spacing_rc: tuple[float, float],
    top_bottom: tuple[str, str],
) -> Any:
    """Draw CT + lung and infection outlines on ``axes[0]`` and CT + JET probability on ``axes[1]``."""
    crop = _crop_box(planes["lungs"] > 0, spacing_rc)
    hu, lungs, infection = (planes[k][crop] for k in ("hu", "lungs", "infection"))
    for ax in axes:
        ax.set_anchor("N")  # equal-aspect images sit under their titles; spare height goes below
    _draw_ct(axes[0], hu, spacing_rc)
    _draw_lung_contours(axes[0], lungs, spacing_rc)
    _draw_infection(axes[0], infection, spacing_rc)  # over the lung outline where they meet
    _orientation_labels(axes[0], *top_bottom)
    _draw_ct(axes[1], hu, spacing_rc)
    mappable = None
    if planes["probability"] is not None:
        mappable = _draw_probability(axes[1], planes["probability"][crop], spacing_rc)
    else:
        axes[1].text(
            0.5,
            0.5,
            "probability map\nnot available",
            transform=axes[1].transAxes,
            ha="center",
            va="center",
            color="white",
        )
    _draw_lung_contours(axes[1], lungs, spacing_rc)
    _orientation_labels(axes[1], *top_bottom)
    return mappable
