"""The one cleaning rule of an infection mask: what the report's figures count.

Infection outside both lung masks is dropped, then islands smaller than ``min_lesion_ml``. The
volume pipeline cleans its output with it (the mask it returns is the mask counted) and the report
cleans corrected masks with it (``report.severity.compute_severity``), so the two share one rule
and one set of counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.io.volume import Geometry
from napari_chsnet.json_numbers import json_float
from napari_chsnet.listing import first_and_more
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.slabs import bounding_box, label_sizes, slab_step

DEFAULT_MIN_LESION_ML = 0.1
"""Infection components smaller than this (mL, 3-D, 26-connected) are not counted.

0.1 mL is a sphere of about 5.8 mm diameter, i.e. the 6 mm below which radiology guidelines
(Fleischner Society) stop reporting focal opacities. Smaller islands are mostly isolated false
positives of slice-wise networks; they barely change the percentage, but a single speck would
turn a normal scan (CT-0) into CT-1, the one boundary where absolute size matters. Set it to 0
to count every voxel.
"""

# Relative slack when comparing a component's volume with min_lesion_ml, so that a component of
# exactly the threshold (e.g. 100 voxels of 0.001 mL against 0.1 mL) is kept despite float error.
_VOLUME_RTOL = 1e-9


@dataclass(frozen=True)
class UncountedInfection:
    """Infection the figures leave out, reported so that nothing disappears silently.

    Attributes:
        removed_components: islands (3-D, 26-connected, inside the lungs) below ``min_lesion_ml``.
        removed_ml: their volume.
        outside_lungs_ml: infection outside both lung masks.
    """

    removed_components: int = 0
    removed_ml: float = 0.0
    outside_lungs_ml: float = 0.0

    def __add__(self, other: UncountedInfection) -> UncountedInfection:
        return UncountedInfection(
            self.removed_components + other.removed_components,
            self.removed_ml + other.removed_ml,
            self.outside_lungs_ml + other.outside_lungs_ml,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed_components": self.removed_components,
            "removed_ml": json_float(self.removed_ml),
            "outside_lungs_ml": json_float(self.outside_lungs_ml),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UncountedInfection:
        data = data or {}
        return cls(
            int(data.get("removed_components", 0)),
            float(data.get("removed_ml", 0.0)),
            float(data.get("outside_lungs_ml", 0.0)),
        )


@dataclass(frozen=True, eq=False)  # eq=False: an array field has no plain truth value
class CleanedInfection:
    """An infection mask after the one cleaning rule (``clean_infection``).

    Attributes:
        mask: bool ``(z, y, x)``: the infection the figures count (inside the lungs, no island
            below ``min_lesion_ml``); the pipeline returns and writes exactly this mask.
        min_lesion_ml: the island threshold it was cleaned with.
        uncounted: what the cleaning took out.
    """

    mask: np.ndarray
    min_lesion_ml: float
    uncounted: UncountedInfection


def check_masks(lungs: np.ndarray, infection: np.ndarray) -> None:
    if lungs.ndim != 3 or infection.shape != lungs.shape:
        raise InvalidVolumeError(
            f"lungs and infection must be 3-D (z, y, x) masks of the same shape; got lungs {lungs.shape} "
            f"and infection {infection.shape}. Pass both masks on the CT's grid."
        )
    how_to_paint = f"paint lungs with {RIGHT_LUNG} (right) or {LEFT_LUNG} (left) and erase with 0"
    if lungs.dtype.kind not in "biu":
        raise InvalidVolumeError(
            f"The lungs mask holds {lungs.dtype} values, not integer labels; {how_to_paint}."
        )
    if lungs.size and (lungs.min() < 0 or lungs.max() > LEFT_LUNG):
        unexpected = np.unique(lungs[(lungs < 0) | (lungs > LEFT_LUNG)])
        raise InvalidVolumeError(f"The lungs mask holds {_labels_in_words(unexpected)}; {how_to_paint}.")
    # Any label above 0 is infection (clean_infection counts ``astype(bool)``): napari's "new label"
    # button gives 2 on a 0/1 mask, and that paint is infection all the same.
    if infection.dtype.kind not in "biu":
        raise InvalidVolumeError(
            f"The infection mask holds {infection.dtype} values, not labels: threshold the probability "
            "map first (the report counts voxels, not probabilities)."
        )
    if infection.size and infection.min() < 0:
        raise InvalidVolumeError(
            f"The infection mask holds {_labels_in_words(np.unique(infection[infection < 0]))}; "
            "paint infection with 1 and erase with 0."
        )


def _labels_in_words(values: np.ndarray, shown: int = 5) -> str:
    """``label 3`` / ``labels 3 and 7`` / ``labels 3, 4, 5, 6, 7 and 2 more``, in plain integers."""
    numbers = [str(int(v)) for v in values]
    if len(numbers) == 1:
        return f"label {numbers[0]}"
    if len(numbers) > shown:
        return f"labels {first_and_more(numbers, shown)}"
    return f"labels {', '.join(numbers[:-1])} and {numbers[-1]}"


def remove_small_lesions(
    infection: np.ndarray, voxel_volume_ml: float, min_lesion_ml: float
) -> tuple[np.ndarray, int, int]:
    """Drop 3-D 26-connected components smaller than ``min_lesion_ml``.

    Returns:
        (kept mask as bool, number of removed components, number of removed voxels).
        A component of exactly ``min_lesion_ml`` is kept. ``infection`` is not changed.
    """
    kept = infection.astype(bool, copy=True)
    n_removed, removed_voxels = _remove_small_lesions_in_place(kept, voxel_volume_ml, min_lesion_ml)
    return kept, n_removed, removed_voxels


def _remove_small_lesions_in_place(
    mask: np.ndarray, voxel_volume_ml: float, min_lesion_ml: float
) -> tuple[int, int]:
    """``remove_small_lesions`` on a bool ``mask`` that is changed in place; returns the two counts.

    Memory: one label array of the infection's bounding box (uint16 unless the box holds more than
    65535 components) and slab-sized temporaries, no full-volume copy.
    """
    if min_lesion_ml <= 0 or not mask.any():
        return 0, 0
    # Label only the bounding box of the infection: on a 512x512x300 scan with a few lesions
    # this keeps the label array small.
    inside = mask[bounding_box(mask)]  # a view: the removal below writes through to ``mask``
    structure = np.ones((3, 3, 3), dtype=bool)
    try:
        labels = np.empty(inside.shape, np.uint16)
        n_components = ndimage.label(inside, structure=structure, output=labels)
    except RuntimeError:  # more than 65535 components: "insufficient bit-depth"
        labels, n_components = ndimage.label(inside, structure=structure)
    step = slab_step(labels.shape)
    sizes = label_sizes(labels, n_components)
    sizes[0] = 0
    keep = sizes * voxel_volume_ml >= min_lesion_ml * (1.0 - _VOLUME_RTOL)
    keep[0] = False
    removed = ~keep
    removed[0] = False
    n_removed = int(np.count_nonzero(removed))
    if n_removed:
        for start in range(0, labels.shape[0], step):
            # label 0 (background in the box) maps to False, so the box's empty voxels stay empty
            inside[start : start + step] = keep[labels[start : start + step]]
    return n_removed, int(sizes[removed].sum())


def _check_min_lesion(min_lesion_ml: float) -> None:
    if not np.isfinite(min_lesion_ml) or min_lesion_ml < 0:
        raise ConfigError(
            f"min_lesion_ml must be a volume in mL >= 0 (0 counts every voxel); got {min_lesion_ml!r}."
        )


def clean_infection(
    lungs: np.ndarray,
    infection: np.ndarray,
    geometry: Geometry,
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML,
) -> CleanedInfection:
    """The infection the figures count, and what was left out.

    Infection outside both lung masks is dropped; then islands (3-D, 26-connected, inside the
    lungs, a lesion crossing from one lung to the other sized as one) smaller than
    ``min_lesion_ml`` are dropped (``remove_small_lesions``). Both are measured, so the pipeline
    that shows the cleaned mask and the report that counts it share one rule and one set of counts.
    """
    _check_min_lesion(min_lesion_ml)
    lungs = np.asarray(lungs)
    infection = np.asarray(infection)
    check_masks(lungs, infection)
    voxel_ml = geometry.voxel_volume_ml
    # One new bool array, the result; no other full-volume temporary (a 592-slice scan's mask is
    # 155 MB). Labels are >= 0 (``check_masks``), so "lungs > 0" is "lungs != 0", and logical_and
    # reads both arrays as truth values in small buffered chunks.
    counted = np.logical_and(infection, lungs, out=np.empty(infection.shape, bool))
    outside_voxels = int(np.count_nonzero(infection)) - int(np.count_nonzero(counted))
    n_removed, removed_voxels = _remove_small_lesions_in_place(counted, voxel_ml, min_lesion_ml)
    uncounted = UncountedInfection(n_removed, removed_voxels * voxel_ml, outside_voxels * voxel_ml)
    return CleanedInfection(counted, float(min_lesion_ml), uncounted)
