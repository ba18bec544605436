"""Segmenting single 8-bit slices that are already cropped to the lungs (COVID-SemiSeg style).

Such slices carry no HU and no spacing: the 8-bit values already are the shared display window
(inference/intensity.py) and the pixel is taken as COVID-SemiSeg's nominal 0.7 mm. The lung stage
finds the lungs (post-processed as in a volume); the infection stage reads the whole image as its
crop. Used by ``chsnet evaluate`` and by the self-training teacher (training/pseudo_labels.py).
``chsnet evaluate`` also takes whole axial slices exported as 8-bit images: a slice whose lungs' box
covers under ``LUNG_CROPPED_COVERAGE`` of it is read on that box, as a volume's slice is.

Whole axial slices in HU with their pixel size (a stack of unrelated slices stored as one volume file,
as MedSeg ships the slices COVID-SemiSeg was cut from) go through :func:`segment_hu_slice`: a volume's
path for one slice, with the lungs' box of that slice as the infection stage's crop.
"""

from __future__ import annotations

import numpy as np

from napari_chsnet.inference.cascade import LUNG_THRESHOLD
from napari_chsnet.inference.intensity import display8_to_hu, display8_to_unit, hu_to_unit
from napari_chsnet.inference.postprocess import postprocess_lungs
from napari_chsnet.inference.preprocessing import CropBox, lung_crop_box

# Nominal pixel of lung-cropped 8-bit slices (they carry no spacing): COVID-SemiSeg's, as in training.
SLICE_PIXEL_MM = 0.7
# Share of an 8-bit slice that its lungs' box (with the volume path's margin) covers at least when the
# slice is cropped to the lungs. Measured with the bundled lung stage (2026-12-06): COVID-SemiSeg's
# slices 0.955-1.0 (all 50 labelled but one, and 100 unlabelled; slice 54, whose anterior lung the
# stage misses, 0.505); whole axial slices of P001 and normal001 0.10-0.53.
LUNG_CROPPED_COVERAGE = 0.8


def infection_crop(lungs: np.ndarray) -> CropBox:
    """What the infection stage reads of an 8-bit slice with these post-processed ``lungs``: the whole
    slice when it is cropped to the lungs (as the training slices are), else the lungs' box with the
    volume path's margin, as for a volume's slice (``LUNG_CROPPED_COVERAGE``)."""
    height, width = lungs.shape[-2:]
    box = lung_crop_box(lungs)
    if box.height * box.width >= LUNG_CROPPED_COVERAGE * height * width:
        return CropBox.full(height, width)
    return box


def segment_cropped_slice(
    pixels: np.ndarray, lung_stage, infection_stage, target: str = "infection", whole_slices: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, probability) of ``target`` ("infection" or "lungs") in one 8-bit ``(y, x)`` slice.

    The infection mask is the infection network's own (threshold or EAMC vote), not restricted to
    the lungs; the lung mask is post-processed, its probability the lung network's. ``whole_slices``:
    a slice that is not cropped to the lungs is read on its lungs' box (:func:`infection_crop`;
    ``chsnet evaluate``); without it every slice is read whole, as the training's teacher and lung maps
    were made.
    """
    unit = display8_to_unit(pixels)[None]
    lung_probability = lung_stage.predict(unit)
    hu = display8_to_hu(pixels)[None]
    lungs = postprocess_lungs(lung_probability >= LUNG_THRESHOLD, hu, (SLICE_PIXEL_MM, SLICE_PIXEL_MM)) > 0
    if target == "lungs":
        return lungs[0], lung_probability[0]
    box = infection_crop(lungs) if whole_slices else CropBox.full(*pixels.shape)
    output = infection_stage.predict(unit, lungs, box)
    return output.mask[0], output.probability[0]


def segment_hu_slice(
    hu: np.ndarray, pixel_mm: tuple[float, float], lung_stage, infection_stage, target: str = "infection"
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, probability) of ``target`` in one whole axial ``(y, x)`` slice in HU.

    ``pixel_mm``: the pixel's (x, y) size. As :func:`segment_cropped_slice` but the slice is windowed
    as a volume's (each stage's HU window) and the infection stage reads the box around the slice's own
    post-processed lungs (+ the volume path's margin), so the result is the volume pipeline's for a
    one-slice volume, without its small-lesion cleaning and restriction to the lungs.
    """
    hu = np.asarray(hu, dtype=np.float32)[None]
    lung_probability = lung_stage.predict(hu_to_unit(hu, lung_stage.window_hu))
    lungs = postprocess_lungs(lung_probability >= LUNG_THRESHOLD, hu, pixel_mm) > 0
    if target == "lungs":
        return lungs[0], lung_probability[0]
    output = infection_stage.predict(hu_to_unit(hu, infection_stage.window_hu), lungs, lung_crop_box(lungs))
    return output.mask[0], output.probability[0]
