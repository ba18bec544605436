"""What a volume's stored values mean, and their conversion to Hounsfield units.

Every chest CT holds air: outside the body and in the lungs, near -1000 HU. A file whose values never
go below zero is therefore not in HU, and reading it as HU puts every voxel at soft-tissue density:
the lung stage then finds no lungs and the infection stage reads the whole chest as consolidation
(normal001 came out CT-3 from an 8-bit export, CT-4 from HU + 1024). Two such files are common:

* **8-bit display values** (0-255): volumes exported through a display window, as the Radiopaedia
  cases of the public COVID-19 CT segmentation set (Ma et al., Zenodo 3757476) and screenshots
  stacked into a volume. They are read through the window the 8-bit training slices were matched
  to (``DISPLAY_WINDOW_HU``, docs/intensity.md), so the networks see ``v / 255`` exactly as they do
  for an 8-bit slice.
* **HU + 1024** (unsigned storage without the rescale intercept): air near 0, soft tissue near 1064.

``assess_intensity`` tells these apart from HU on the values alone; ``to_hounsfield`` converts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The 8-bit training slices' display window in HU (scripts/estimate_intensity_window.py):
# an 8-bit value v corresponds to -1110 + v / 255 * 1365 HU.
DISPLAY_WINDOW_HU: tuple[float, float] = (-1110.0, 255.0)

INTENSITY_KEY = "intensity"  # the CTVolume.metadata key that records how the values were read
HU = "hu"
DISPLAY8 = "display8"
OFFSET1024 = "offset1024"
UNKNOWN = "unknown"
# What ``read_ct(intensity=...)`` accepts: "auto" assesses the values, the others are taken as said.
INTENSITY_CHOICES = ("auto", HU, DISPLAY8, OFFSET1024)

UNSIGNED_OFFSET = 1024.0
# Air in HU lies near -1000; a chest CT in HU has well over 1 % of its voxels below this.
_AIR_BELOW_HU = -500.0
# In HU + 1024 storage: air below 200 (HU < -824) and soft tissue in 900-1200 (-124..176 HU).
_OFFSET_AIR_BELOW, _OFFSET_TISSUE_RANGE = 200.0, (900.0, 1200.0)
_MIN_SHARE = 0.02  # each of air and soft tissue fills far more of any chest CT than 2 %
_MIN_DISPLAY_LEVELS = 32  # an 8-bit chest picture uses most of its 256 grey levels
_MAX_LABELS = 256  # a label map of a CT's structures has far fewer (TotalSegmentator: 117)
# Whole numbers of which more than this share equal their neighbour along x (``flat_share``) are a
# label map: labels are constant over whole organs, CT noise makes neighbours differ. Measured on 16
# axial planes, leaving out the two most common values: P001 and normal001 0.016 in HU and in HU + 1024,
# 0.11-0.14 as 8-bit through the lung window (W1500/L-600) or the export window [-1250, 250], 0.03 through
# a soft-tissue window (W400/L40); COVID-SemiSeg's 8-bit JPEG slices 0.017 (8 stacked), 0.01-0.14 (each
# of the 50); the phantom 0.02-0.15 (HU, the same windows). Label maps: 0.97-0.99 (lungs 0/1/2 of P001
# and of the phantom, a 55-label map drawn on P001).
_FLAT_SHARE = 0.9
_FLAT_PLANES = 16  # axial planes the share is measured on: plenty for a share, cheap for any volume


@dataclass(frozen=True)
class IntensityAssessment:
    """How the stored values are read: ``kind`` (HU, DISPLAY8, OFFSET1024 or UNKNOWN) and why."""

    kind: str
    reason: str


def _sample(values: np.ndarray, max_voxels: int = 2_000_000) -> np.ndarray:
    """A regular subsample (every n-th voxel) large enough for 1 % quantiles and shares."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, flat.size // max_voxels)
    return flat[::step].astype(np.float32, copy=False)


def assess_intensity(values: np.ndarray) -> IntensityAssessment:
    """Whether ``values`` look like HU, 8-bit display values or HU + 1024, from their distribution.

    HU when at least 1 % of the voxels lie below -500 (air). Without negative values: a label map
    (UNKNOWN, ``is_label_map``), 8-bit display values when the maximum is at most 255, HU + 1024 when
    air (below 200) and soft tissue (900-1200) each fill at least 2 % of the voxels. Anything else is
    UNKNOWN (kept as stored, warned, and refused by the segmentation).
    """
    sample = _sample(values)
    if sample.size == 0:
        return IntensityAssessment(UNKNOWN, "the volume is empty")
    low, high = float(sample.min()), float(sample.max())
    air_share = float(np.mean(sample < _AIR_BELOW_HU))
    if air_share >= 0.01:
        return IntensityAssessment(HU, f"{100 * air_share:.0f} % of the voxels are air below -500 HU")
    label_map = _label_map_reason(values, sample)  # a mask file, not a picture of a chest
    if label_map:
        return IntensityAssessment(UNKNOWN, label_map)
    if low >= 0 and high <= 255:
        if high <= 1.0:
            return IntensityAssessment(
                UNKNOWN, f"values lie in [{low:g}, {high:g}]: normalised, with no way to tell the HU"
            )
        return IntensityAssessment(DISPLAY8, f"values {low:g} to {high:g}, none negative")
    if low >= 0:
        offset_air = float(np.mean(sample < _OFFSET_AIR_BELOW))
        tissue_low, tissue_high = _OFFSET_TISSUE_RANGE
        tissue = float(np.mean((sample >= tissue_low) & (sample <= tissue_high)))
        if offset_air >= _MIN_SHARE and tissue >= _MIN_SHARE:
            return IntensityAssessment(
                OFFSET1024,
                f"none negative, {100 * offset_air:.0f} % near 0 (air), {100 * tissue:.0f} % near 1024 "
                "(soft tissue): HU stored + 1024 without the rescale intercept",
            )
    return IntensityAssessment(
        UNKNOWN, f"values {low:g} to {high:g}, {100 * air_share:.1f} % below -500: not the air of a chest CT"
    )


def given_intensity_conflict(values: np.ndarray, kind: str) -> str | None:
    """Why ``values`` cannot be stored as ``kind`` (None when they can): 8-bit display values lie in
    0-255, and HU + 1024 storage keeps air near 0, never far below it."""
    sample = _sample(values)
    if sample.size == 0:
        return None
    low, high = float(sample.min()), float(sample.max())
    if kind == DISPLAY8 and (low < 0 or high > 255):
        return f"its values run from {low:g} to {high:g}, and 8-bit display values lie in 0-255"
    below_air = float(np.mean(sample < _AIR_BELOW_HU))
    if kind == OFFSET1024 and below_air >= 0.01:
        return (
            f"{100 * below_air:.0f} % of its values lie below -500, which HU + 1024 storage never holds "
            "(its air is near 0)"
        )
    return None


def is_label_map(values: np.ndarray) -> bool:
    """Whether ``values`` look like a mask file (e.g. the lungs.nii.gz ``chsnet segment`` writes, or a
    multi-organ label map) rather than a CT: non-negative whole numbers, either 0-255 with fewer
    distinct values than an 8-bit picture of a chest uses, or at most 256 distinct values constant over
    whole regions (``flat_share``)."""
    sample = _sample(values)
    return sample.size > 0 and _label_map_reason(values, sample) is not None


def _label_map_reason(values: np.ndarray, sample: np.ndarray) -> str | None:
    """Why ``values`` (``sample`` their subsample) are a label map, or None when they are not."""
    if sample.min() < 0 or not np.array_equal(sample, np.round(sample)):
        return None
    levels, counts = np.unique(sample, return_counts=True)
    if levels.size == 1:
        return f"one value only ({levels[0]:g} in every voxel): an empty label map or a blank volume"
    # A binary mask (0/1) counts too: it would otherwise pass for values normalised to [0, 1].
    if levels.size < _MIN_DISPLAY_LEVELS and levels[-1] <= 255:
        return f"only {levels.size} distinct values: a label map, not a CT"
    if levels.size > _MAX_LABELS:
        return None
    # the two most common values (background, body; a window's saturated ends) are flat in a CT too
    share = flat_share(values, levels[np.argsort(counts)[-2:]])
    if share <= _FLAT_SHARE:
        return None
    return (
        f"{levels.size} distinct whole numbers, {100 * share:.0f} % of the voxels equal to their neighbour: "
        "a label map, not a CT"
    )


def flat_share(values: np.ndarray, ignored: np.ndarray) -> float:
    """The share of voxels equal to their neighbour along x (the last axis), among those not holding
    one of the ``ignored`` values, in up to 16 evenly spaced axial planes; 1 when none is counted."""
    planes = _axial_planes(np.asarray(values))
    here, right = planes[..., :-1], planes[..., 1:]
    counted = np.ones(here.shape, dtype=bool)
    for value in ignored:
        counted &= here != value
    n_counted = np.count_nonzero(counted)
    return np.count_nonzero(counted & (here == right)) / n_counted if n_counted else 1.0


def _axial_planes(values: np.ndarray) -> np.ndarray:
    if values.ndim < 3:
        return values
    picked = np.unique(np.linspace(0, values.shape[0] - 1, _FLAT_PLANES).round().astype(int))
    return values[picked]


def one_value_only(values: np.ndarray) -> str | None:
    """Says "one value only (v in every voxel)" when every voxel holds the same value (an empty mask,
    a blank volume: never a CT); None otherwise."""
    sample = _sample(values)
    if sample.size == 0 or sample.min() != sample.max():  # the subsample settles nearly every volume
        return None
    low, high = np.min(values), np.max(values)
    return f"one value only ({float(low):g} in every voxel)" if low == high else None


def display8_to_unit(values: np.ndarray) -> np.ndarray:
    """Map an 8-bit display image (already in the shared window) to the [0, 1] network input."""
    return np.asarray(values, dtype=np.float32) / np.float32(255.0)


def unit_to_display8(values: np.ndarray) -> np.ndarray:
    """The 8-bit display image of a [0, 1] network input (inverse of :func:`display8_to_unit`)."""
    return np.round(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def display8_to_hu(values: np.ndarray, window_hu: tuple[float, float] = DISPLAY_WINDOW_HU) -> np.ndarray:
    """Approximate HU of an 8-bit display image (saturated values stay at the window's ends)."""
    low, high = window_hu
    return np.float32(low) + display8_to_unit(values) * np.float32(high - low)


def to_hounsfield(values: np.ndarray, kind: str) -> np.ndarray:
    """``values`` stored as ``kind`` converted to HU (HU and UNKNOWN come back unchanged)."""
    if kind == DISPLAY8:
        return display8_to_hu(values)
    if kind == OFFSET1024:
        shifted = np.asarray(values, dtype=np.float32) - np.float32(UNSIGNED_OFFSET)
        as_int16 = shifted.astype(np.int16)
        return as_int16 if np.array_equal(as_int16, shifted) else shifted
    if kind in (HU, UNKNOWN):
        return values
    raise ValueError(f"unknown intensity kind {kind!r}; expected one of {INTENSITY_CHOICES[1:]}")


def intensity_warning(assessment: IntensityAssessment, chosen_by: str) -> str | None:
    """The reader warning for a volume not stored in HU (None for HU)."""
    low, high = DISPLAY_WINDOW_HU
    if assessment.kind == DISPLAY8:
        what = (
            f"read as 8-bit display values through the window [{low:g}, {high:g}] HU of the training "
            "slices (docs/intensity.md); HU and densities are approximate"
        )
    elif assessment.kind == OFFSET1024:
        what = "read as HU + 1024 (1024 subtracted)"
    elif assessment.kind == UNKNOWN:
        return (
            f"the values do not look like Hounsfield units ({assessment.reason}); they are kept as stored, "
            "and the segmentation refuses them"
        )
    else:
        return None
    if chosen_by == "auto":
        return f"the values are not Hounsfield units ({assessment.reason}); {what}"
    return f"intensity given as {assessment.kind}: {what}"
