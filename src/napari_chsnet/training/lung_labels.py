"""Lung labels made from HU (threshold + morphology) for training the lung stage.

There are no expert lung masks in the training data, so the lung stage learns from labels
made here and checked on pictures (docs/training.md, "Lung labels"). Aerated lung is below
``AIR_THRESHOLD_HU``; what a threshold misses (consolidation, which is as dense as muscle) is
put back from the expert infection mask where there is one, and by the rolling-ball border
recovery of the inference post-processing otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_chsnet.inference.postprocess import (
    fill_holes,
    label_left_right,
    postprocess_lungs,
    recover_dense_border,
)
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG

AIR_THRESHOLD_HU = -320.0
# Components smaller than this (mm^2 per slice) are airways, bowel gas or noise.
MIN_LUNG_AREA_MM2 = 150.0
# The trachea/main bronchi: round air columns in the middle third, at most this area per slice.
MAX_AIRWAY_AREA_MM2 = 500.0


def _body_mask(hu_slice: np.ndarray) -> np.ndarray:
    body = ndi.binary_opening(hu_slice > -500, iterations=2)
    labels, count = ndi.label(body)
    if count == 0:
        return body
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return fill_holes(largest)


def _is_central_airway(component: np.ndarray, area_mm2: float, width: int) -> bool:
    if area_mm2 > MAX_AIRWAY_AREA_MM2:
        return False
    xs = np.nonzero(component)[1]
    centre = xs.mean() / max(width, 1)
    return 0.38 <= centre <= 0.62


def air_in_body_slice(hu_slice: np.ndarray, pixel_area_mm2: float, cropped: bool = False) -> np.ndarray:
    """Aerated-lung candidates of one axial slice.

    ``cropped=True`` is for slices cropped to the lungs (COVID-SemiSeg), where the body outline
    is cut by the image border: outside air is then recognised as components touching a
    corner of the image instead of as air outside the body.
    """
    air = hu_slice < AIR_THRESHOLD_HU
    if not cropped:
        air &= _body_mask(hu_slice)
    air = ndi.binary_opening(air, iterations=1)
    labels, count = ndi.label(air)
    keep = np.zeros_like(air)
    height, width = air.shape
    corners = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} if cropped else set()
    for index in range(1, count + 1):
        component = labels == index
        area_mm2 = component.sum() * pixel_area_mm2
        if index in corners or area_mm2 < MIN_LUNG_AREA_MM2:
            continue
        if _is_central_airway(component, area_mm2, width):
            continue
        keep |= component
    return keep


def lung_labels_from_hu(
    hu: np.ndarray, spacing_xyz_mm: tuple[float, float, float], infection: np.ndarray | None = None
) -> np.ndarray:
    """Right/left lung labels (1/2) of a volume ``(z, y, x)`` in LPS display orientation."""
    pixel_area = spacing_xyz_mm[0] * spacing_xyz_mm[1]
    air = np.stack([air_in_body_slice(hu[z], pixel_area) for z in range(hu.shape[0])])
    if infection is not None:
        air |= infection > 0
    # Components are chosen in 3-D before any closing, so bowel gas under a thin diaphragm
    # is never bridged into a lung; closing and hole filling then work slice by slice.
    lungs = label_left_right(air)
    smoothed = np.zeros_like(lungs)
    for label in (RIGHT_LUNG, LEFT_LUNG):
        for z in range(lungs.shape[0]):
            closed = fill_holes(ndi.binary_closing(lungs[z] == label, iterations=2))
            smoothed[z][closed & (smoothed[z] == 0)] = label
    return recover_dense_border(smoothed, hu, (spacing_xyz_mm[0], spacing_xyz_mm[1]))


def lung_mask_of_cropped_slice(
    hu_slice: np.ndarray, infection: np.ndarray | None = None, pixel_mm: float = 0.7
) -> np.ndarray:
    """Binary lung mask of a 2-D slice cropped to the lungs (COVID-SemiSeg layout)."""
    air = air_in_body_slice(hu_slice, pixel_mm**2, cropped=True)
    if infection is not None:
        air |= infection > 0
    air = fill_holes(ndi.binary_closing(air, iterations=2))
    labels = postprocess_lungs(air[None], hu_slice[None], (pixel_mm, pixel_mm))[0]
    return labels > 0
