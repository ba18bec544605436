"""A volume's segmentation scored against a reference mask on the CT's grid (``chsnet evaluate`` on scans).

What is scored is what a user gets from ``chsnet segment``: the post-processed ``lungs`` (both lungs
together) or the infection the report counts (inside the lungs, islands under ``min_lesion_ml``
removed). The target is every non-zero voxel of a label mask (of the labels ``--target-labels`` keeps,
:func:`keep_labels`); a mask with values above 127 is a 0/255 mask, whose target is above 127 (as for
2-D masks: a mask resampled with interpolation keeps its soft edge out of the target). Metrics are
3-D, per scan (the COVID-SemiSeg papers' per-slice means are for 2-D slices, ``cli/evaluate.py``).

A lung reference that holds exactly two labels, each on its own side of the body, is also read as one
lung per label, and the right and left lungs are scored apart. The side of a label is found from the
patient's x of its voxels (LPS: x grows towards the patient's left), not from its value, because
datasets number the lungs either way round; so this also checks the labels 1 = right, 2 = left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.pipeline import SegmentationResult
from napari_chsnet.io.volume import Geometry
from napari_chsnet.models.metrics import MetricsAccumulator, dice
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG

TARGETS = ("infection", "lungs")
# Share of a label's voxels that must lie on its side of the midline between the two labels' centres
# for the label to be one lung (lungs: > 0.99; a lung + infection or GGO + consolidation map: far less).
ONE_SIDE_SHARE = 0.9


@dataclass(frozen=True)
class LungSides:
    """Which reference label is which lung, or why the reference cannot be split by side."""

    right_label: int | None = None
    left_label: int | None = None
    n_labels: int = 0
    reason: str = ""

    @property
    def found(self) -> bool:
        return self.right_label is not None


def keep_labels(values: np.ndarray, labels: Sequence[int] | None) -> np.ndarray:
    """``values`` with every value not in ``labels`` set to 0 (``--target-labels``: MedSeg's masks hold
    1 ground glass, 2 consolidation, 3 pleural effusion, and its infection is 1 and 2); ``None`` keeps all."""
    if labels is None:
        return values
    return np.where(np.isin(values, labels), values, 0).astype(values.dtype, copy=False)


def check_labels_present(masks: Iterable[np.ndarray], labels: Sequence[int] | None, what: str) -> None:
    """Refuse ``--target-labels`` that no mask holds (a typo would score every case against nothing)."""
    if labels is None:
        return
    found: set[int] = set()
    for values in masks:
        found.update(int(v) for v in np.unique(values))
    if not found & set(labels):
        shown = ", ".join(str(v) for v in sorted(found - {0})[:8]) or "none but 0"
        raise InvalidVolumeError(
            f"no mask in {what} holds --target-labels {','.join(map(str, labels))} (their values: {shown})"
        )


def reference_target(reference: np.ndarray) -> np.ndarray:
    """The target voxels of a reference mask (see the module docstring)."""
    if reference.size and int(reference.max()) > 127:
        return reference > 127
    return reference != 0


def _labels(reference: np.ndarray) -> list[int]:
    """The non-zero values of a mask, ascending."""
    return [int(value) for value in np.unique(reference) if value != 0]


def describe_reference(reference: np.ndarray) -> str | None:
    """How the target was read from a mask holding more than one non-zero value (None otherwise)."""
    values = _labels(reference)
    if len(values) < 2:
        return None
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    if values[-1] > 127:
        return f"the mask holds values {shown}: read as a 0/255 mask, the target is above 127"
    return f"the mask holds labels {shown}: every non-zero label is the target"


def patient_x_mm(indices_zyx: tuple[np.ndarray, ...], geometry: Geometry) -> np.ndarray:
    """The LPS x (mm) of voxels given by their ``(z, y, x)`` indices on ``geometry``'s grid."""
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    step = direction[0] * np.asarray(geometry.spacing_mm, dtype=np.float64)  # x per index of x, y, z
    z, y, x = (np.asarray(axis, dtype=np.float64) for axis in indices_zyx)
    return geometry.origin_mm[0] + step[0] * x + step[1] * y + step[2] * z


def lung_sides(reference: np.ndarray, geometry: Geometry) -> LungSides:
    """Right and left lung labels of a reference mask (see the module docstring)."""
    labels = _labels(reference)
    if len(labels) != 2:
        return LungSides(n_labels=len(labels), reason=f"it holds {len(labels)} label(s), not one per lung")
    x_of = {label: patient_x_mm(np.nonzero(reference == label), geometry) for label in labels}
    centres = {label: float(np.mean(x)) for label, x in x_of.items()}
    right, left = sorted(labels, key=centres.__getitem__)  # the patient's right has the smaller LPS x
    midline = 0.5 * (centres[right] + centres[left])
    shares = {right: float(np.mean(x_of[right] < midline)), left: float(np.mean(x_of[left] > midline))}
    straddling = [label for label, share in shares.items() if share < ONE_SIDE_SHARE]
    if straddling:
        label = straddling[0]
        return LungSides(
            n_labels=2,
            reason=f"label {label} lies on both sides ({100 * (1 - shares[label]):.0f} % of it across the "
            "midline), so its labels are not one lung each",
        )
    return LungSides(right, left, n_labels=2)


@dataclass(frozen=True)
class VolumeScore:
    """One scan's figures: the metrics of ``models.metrics``, the volumes, and the lungs' Dice by side
    (``None`` where the reference has no lung per label)."""

    metrics: dict[str, float | None]
    reference_ml: float
    segmented_ml: float
    right_lung_dice: float | None = None
    left_lung_dice: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {
            **self.metrics,
            "reference_ml": self.reference_ml,
            "segmented_ml": self.segmented_ml,
            "right_lung_dice": self.right_lung_dice,
            "left_lung_dice": self.left_lung_dice,
        }


def score_volume(
    result: SegmentationResult,
    reference: np.ndarray,
    geometry: Geometry,
    target: str,
    accumulator: MetricsAccumulator,
    sides: LungSides | None = None,
) -> VolumeScore:
    """Score ``result`` against ``reference`` (a label mask on the same grid), adding it to ``accumulator``
    for the batch's mean and pooled figures. ``sides`` (lungs only): the reference's lung labels."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if reference.shape != result.lungs.shape:
        raise ValueError(f"reference {reference.shape} and segmentation {result.lungs.shape} differ in shape")
    truth = reference_target(reference)
    by_side: dict[str, float | None] = {"right_lung_dice": None, "left_lung_dice": None}
    if target == "lungs" and sides is not None and sides.found:  # before the scan is added to the batch
        by_side = {
            "right_lung_dice": dice(result.lungs == RIGHT_LUNG, reference == sides.right_label),
            "left_lung_dice": dice(result.lungs == LEFT_LUNG, reference == sides.left_label),
        }
    if target == "lungs":
        segmented = result.lungs != 0
        metrics = accumulator.add(segmented, truth)  # the pipeline keeps no lung probability: no AUC
    else:
        segmented = result.infection != 0
        metrics = accumulator.add(segmented, truth, result.probability)
    voxel_ml = geometry.voxel_volume_ml
    return VolumeScore(
        dict(metrics),
        int(np.count_nonzero(truth)) * voxel_ml,
        int(np.count_nonzero(segmented)) * voxel_ml,
        **by_side,
    )
