"""Per-lung COVID-19 severity figures: the numbers only (no pictures, no files).

Grading follows the MosMed scheme used in EAMC (Pal Das, Mitra & Uma Shankar 2023, Sec. 2.6):
the share of each lung's volume that is infected is graded separately and the patient's grade
is the worse of the two lungs.

=====  ===========  ==================================
grade  description  involvement of the lung (percent)
=====  ===========  ==================================
CT-0   normal       0 (no infected voxel counted)
CT-1   mild         0 < p <= 25
CT-2   moderate     25 < p <= 50
CT-3   severe       50 < p <= 75
CT-4   critical     p > 75
=====  ===========  ==================================

Boundaries belong to the lower grade (exactly 25 % is CT-1, exactly 75 % is CT-3), which is how
the paper writes CT-1 as "<= 25 %". The comparison uses the unrounded percentage computed from
voxel counts, so no rounding moves a case across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_chsnet.inference.cleaning import (
    DEFAULT_MIN_LESION_ML,
    CleanedInfection,
    UncountedInfection,
    check_masks,
    clean_infection,
)
from napari_chsnet.io.volume import Geometry
from napari_chsnet.json_numbers import json_float
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.slabs import slab_step

GRADES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")
GRADE_DESCRIPTIONS = {
    "CT-0": "normal, no infection",
    "CT-1": "mild, involvement ≤ 25 %",
    "CT-2": "moderate, 25-50 %",
    "CT-3": "severe, 50-75 %",
    "CT-4": "critical, > 75 %",
}
# Upper bounds (inclusive) of CT-1, CT-2, CT-3; anything above the last is CT-4.
_GRADE_UPPER_PCT = (25.0, 50.0, 75.0)

LUNG_SIDES = {"right": RIGHT_LUNG, "left": LEFT_LUNG}

# A lung smaller than this is not a whole lung: an adult lung on CT holds 1-4 L, a small child's
# about 0.3 L. Smaller masks come from a scan that is not in HU, covers a few slices only, or a
# failed lung stage, and every percentage computed on them is meaningless (a normal scan stored
# as 8-bit values read as HU came out with 1 mL lungs, 71 % involved).
MIN_PLAUSIBLE_LUNG_ML = 100.0
# What the report shows for the grade of a lung mask under MIN_PLAUSIBLE_LUNG_ML (``shown_grade``).
NOT_MEASURED = "not measured"
# Infection outside both lung masks is warned about from this share of all infection found on.
OUTSIDE_WARNING_SHARE = 0.05
# Overall involvement under this is within what the bundled models mark on a normal scan (normal001:
# CHS-Net 0.2 %, EAMC 0.6 %, RD-UNet 0.9 %, at the diaphragm domes and pericardial fat): the grade stays
# CT-1 (a small real lesion looks the same), and a warning says it may be nothing.
MINIMAL_INVOLVEMENT_PCT = 1.0


def format_figure(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, but a non-zero amount never prints as 0.0 (a CT-1 lung next
    to "0.0 %": "< 0.1")."""
    smallest = 10.0**-digits
    if 0 < value < smallest / 2:
        return f"< {smallest:.{digits}f}"
    return f"{value:,.{digits}f}"


def format_percent(pct: float) -> str:
    """An involvement with one decimal, or as many more (up to 4) as it takes not to print a grade
    boundary it is not on: 25.04 % is CT-2, so it prints 25.04, not 25.0 next to CT-2; closer still
    than 4 decimals tell, "> 25.0" or "< 25.0"."""
    for digits in range(1, 5):
        shown = format_figure(pct, digits)
        boundary = next((b for b in _GRADE_UPPER_PCT if shown.replace(",", "") == f"{b:.{digits}f}"), None)
        if boundary is None or pct == boundary:
            return shown
    return f"{'>' if pct > boundary else '<'} {boundary:.1f}"


def grade_for_involvement(involvement_pct: float, has_infection: bool | None = None) -> str:
    """Return the MosMed grade ``"CT-0"`` … ``"CT-4"`` of one lung.

    Args:
        involvement_pct: infected share of the lung volume, in percent (0…100).
        has_infection: whether any infected voxel was counted; defaults to
            ``involvement_pct > 0``. CT-0 means no infection at all.

    Returns:
        The grade string; boundaries belong to the lower grade (25 → CT-1, 25.0001 → CT-2).
    """
    if not np.isfinite(involvement_pct) or involvement_pct < 0:
        raise ValueError(f"involvement_pct must be a finite percentage >= 0; got {involvement_pct!r}")
    if has_infection is None:
        has_infection = involvement_pct > 0
    if not has_infection:
        return GRADES[0]
    for grade, upper in zip(GRADES[1:], _GRADE_UPPER_PCT, strict=False):
        if involvement_pct <= upper:
            return grade
    return GRADES[-1]


def worse_grade(*grades: str) -> str:
    """The most severe of the given grades."""
    return max(grades, key=GRADES.index)


def shown_grade(figures: dict[str, Any]) -> str:
    """A lung's (or the overall) grade as tables and summaries show it: ``NOT_MEASURED`` when the
    report dictionary says the mask is too small to grade (``LungSeverity.measured``)."""
    measured = figures.get("measured", figures.get("volume_ml", 0) > 0)  # reports before the flag
    return figures["grade"] if measured else NOT_MEASURED


@dataclass(frozen=True)
class LungSeverity:
    """Figures for one lung.

    Attributes:
        side: ``"right"`` or ``"left"`` (the patient's side).
        volume_ml: lung volume (voxels labelled for this lung × voxel volume).
        infected_ml: infected volume inside this lung after small-lesion removal.
        involvement_pct: ``100 * infected_ml / volume_ml``; 0 when the lung mask is empty.
        grade: ``"CT-0"`` … ``"CT-4"``.
        lung_voxels, infected_voxels: the counts the volumes come from.
        empty: True when the lung mask has no voxel (the figures are then 0 and the grade CT-0,
            which must not be read as "normal").

    A mask under ``MIN_PLAUSIBLE_LUNG_ML`` is not ``measured``: its figures are kept, but its grade
    does not enter the overall grade (a 14 mL fragment beside a removed lung came out CT-4 and made
    the patient CT-4) and the report shows it as "not measured".
    """

    side: str
    volume_ml: float
    infected_ml: float
    involvement_pct: float
    grade: str
    lung_voxels: int
    infected_voxels: int
    empty: bool

    @property
    def measured(self) -> bool:
        """Whether the mask is large enough to be a lung, so that its grade means something."""
        return self.volume_ml >= MIN_PLAUSIBLE_LUNG_ML

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume_ml": json_float(self.volume_ml),
            "infected_ml": json_float(self.infected_ml),
            "involvement_pct": json_float(self.involvement_pct),
            "grade": self.grade,
            "measured": self.measured,
        }


@dataclass(frozen=True)
class SeverityReport:
    """Severity of both lungs and of the patient.

    ``overall_grade`` is the worse measured lung's grade (MosMed), not the grade of
    ``overall_involvement_pct`` (total infected / total lung volume), which is given for reference;
    with no lung measured (both masks under ``MIN_PLAUSIBLE_LUNG_ML``) it is the worse of the two,
    and ``overall_measured`` is False.
    ``removed_components``/``removed_ml`` (islands below ``min_lesion_ml``) and ``outside_lungs_ml``
    are the infection the figures leave out (``UncountedInfection``).
    """

    right: LungSeverity
    left: LungSeverity
    overall_volume_ml: float
    overall_infected_ml: float
    overall_involvement_pct: float
    overall_grade: str
    min_lesion_ml: float
    removed_components: int = 0
    removed_ml: float = 0.0
    outside_lungs_ml: float = 0.0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def lungs(self) -> dict[str, LungSeverity]:
        return {"right": self.right, "left": self.left}

    @property
    def uncounted(self) -> UncountedInfection:
        return UncountedInfection(self.removed_components, self.removed_ml, self.outside_lungs_ml)

    @property
    def overall_measured(self) -> bool:
        return self.right.measured or self.left.measured

    def to_dict(self) -> dict[str, Any]:
        """The stable machine-readable shape (documented in docs/report.md; other tools parse it)."""
        return {
            "lungs": {"right": self.right.to_dict(), "left": self.left.to_dict()},
            "overall": {
                "involvement_pct": json_float(self.overall_involvement_pct),
                "grade": self.overall_grade,
                "volume_ml": json_float(self.overall_volume_ml),
                "infected_ml": json_float(self.overall_infected_ml),
                "measured": self.overall_measured,
            },
            "min_lesion_ml": self.min_lesion_ml,
        }


def _lung_severity(side: str, lung_voxels: int, infected_voxels: int, voxel_volume_ml: float) -> LungSeverity:
    empty = lung_voxels == 0
    # Computed from integer counts: exactly 25 % stays 25.0, so boundaries are exact.
    involvement = 0.0 if empty else 100.0 * infected_voxels / lung_voxels
    return LungSeverity(
        side=side,
        volume_ml=lung_voxels * voxel_volume_ml,
        infected_ml=infected_voxels * voxel_volume_ml,
        involvement_pct=involvement,
        grade=grade_for_involvement(involvement, has_infection=infected_voxels > 0),
        lung_voxels=lung_voxels,
        infected_voxels=infected_voxels,
        empty=empty,
    )


def _overall_grade(*lungs: LungSeverity) -> str:
    """The worse grade of the measured lungs; of both when neither is (the report says so)."""
    measured = [lung.grade for lung in lungs if lung.measured]
    return worse_grade(*(measured or [lung.grade for lung in lungs]))


def _warnings(
    per_side: dict[str, LungSeverity], uncounted: UncountedInfection, counted_ml: float
) -> list[str]:
    lung_ml = sum(lung.volume_ml for lung in per_side.values())
    graded = [side for side, lung in per_side.items() if lung.measured]
    # about reading a CT-1 grade: nothing to say when no lung is graded
    warnings = _minimal_involvement_warning(counted_ml, lung_ml) if graded else []
    warnings += [
        f"The {side} lung mask is empty: its figures are 0 and its grade CT-0 means 'not measured', not 'normal'."
        for side, lung in per_side.items()
        if lung.empty
    ]
    too_small = {
        side: lung.volume_ml for side, lung in per_side.items() if not lung.empty and not lung.measured
    }
    if too_small:
        # one sentence for both lungs: the advice is the same
        masks = " and ".join(too_small) + (" lung masks hold" if len(too_small) > 1 else " lung mask holds")
        volumes = " and ".join(f"{ml:.1f}" for ml in too_small.values())
        consequence = (
            f"it is not graded and the overall grade is the {graded[0]} lung's"
            if graded
            else "neither lung is graded"
        )
        warnings.append(
            f"The {masks} only {volumes} mL, far less than a lung (under {MIN_PLAUSIBLE_LUNG_ML:g} mL), so "
            f"{consequence}: check that the scan covers the chest, is in Hounsfield units and that the "
            "lungs layer is right before using its figures."
        )
    outside = uncounted.outside_lungs_ml
    # The infection stage reads the lungs' box, so a rim of its output always falls outside the
    # masks (0.5 mL on the sample): that stays a figure. A large share is either a lung mask that
    # missed diseased lung (dense consolidation taken for chest wall), which must not pass unnoticed,
    # or false marks beyond the lungs (EAMC on normal001: 43 mL, mostly upper abdomen and air beside
    # the shoulder), which are rightly not counted; only looking at them tells the two apart.
    if outside > 0 and outside >= OUTSIDE_WARNING_SHARE * (outside + counted_ml):
        warnings.append(
            f"{outside:.2f} mL of infection ({100 * outside / (outside + counted_ml):.0f} % of what was found) lies "
            "outside both lung masks and is not counted: look where it lies. If in lung the lungs layer missed "
            "(dense consolidation at the chest wall), correct the lungs layer; if beyond the lungs (abdomen, "
            "mediastinum, air outside the body), those are false marks, rightly not counted."
        )
    return warnings


def _minimal_involvement_warning(infected_ml: float, lung_ml: float) -> list[str]:
    if not infected_ml or not lung_ml or 100 * infected_ml / lung_ml >= MINIMAL_INVOLVEMENT_PCT:
        return []
    return [
        f"Involvement is under {MINIMAL_INVOLVEMENT_PCT:g} % ({format_figure(infected_ml)} mL): within what the bundled models mark "
        "on a normal scan (partial volume over the diaphragm domes, pericardial fat, dependent density). Look at the "
        "marked regions before reading the CT-1 grade as disease."
    ]


def _count_per_lung(lungs: np.ndarray, mask: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Voxels of each lung and of ``mask`` inside each lung, counted slab by slab (temporaries of
    one slab, not of the volume)."""
    lung_voxels = dict.fromkeys(LUNG_SIDES, 0)
    infected_voxels = dict.fromkeys(LUNG_SIDES, 0)
    step = slab_step(lungs.shape)
    for start in range(0, lungs.shape[0], step):
        lungs_slab, mask_slab = lungs[start : start + step], mask[start : start + step]
        for side, label in LUNG_SIDES.items():
            lung = lungs_slab == label
            lung_voxels[side] += int(np.count_nonzero(lung))
            infected_voxels[side] += int(np.count_nonzero(np.logical_and(lung, mask_slab, out=lung)))
    return lung_voxels, infected_voxels


def severity_from_cleaned(lungs: np.ndarray, cleaned: CleanedInfection, geometry: Geometry) -> SeverityReport:
    """The figures of an already cleaned infection (``clean_infection``) in these lungs.

    The report carries ``cleaned.uncounted``: the pipeline cleans once, returns ``cleaned.mask``
    and reports what the cleaning took out.
    """
    lungs = np.asarray(lungs)
    check_masks(lungs, cleaned.mask)
    voxel_ml = geometry.voxel_volume_ml
    lung_voxels, infected_voxels = _count_per_lung(lungs, cleaned.mask)
    per_side = {
        side: _lung_severity(side, lung_voxels[side], infected_voxels[side], voxel_ml) for side in LUNG_SIDES
    }
    right, left = per_side["right"], per_side["left"]
    total_lung = right.lung_voxels + left.lung_voxels
    total_infected = right.infected_voxels + left.infected_voxels
    uncounted = cleaned.uncounted
    return SeverityReport(
        right=right,
        left=left,
        overall_volume_ml=total_lung * voxel_ml,
        overall_infected_ml=total_infected * voxel_ml,
        overall_involvement_pct=100.0 * total_infected / total_lung if total_lung else 0.0,
        overall_grade=_overall_grade(right, left),
        min_lesion_ml=cleaned.min_lesion_ml,
        removed_components=uncounted.removed_components,
        removed_ml=uncounted.removed_ml,
        outside_lungs_ml=uncounted.outside_lungs_ml,
        warnings=tuple(_warnings(per_side, uncounted, total_infected * voxel_ml)),
    )


def compute_severity(
    lungs: np.ndarray,
    infection: np.ndarray,
    geometry: Geometry,
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML,
) -> SeverityReport:
    """Per-lung volumes, infected volumes, involvement and MosMed grades.

    Args:
        lungs: ``(z, y, x)`` label map, 0 = background, 1 = right lung, 2 = left lung.
        infection: ``(z, y, x)`` integer or bool mask on the same grid; any label above 0 is infection.
        geometry: the grid's geometry; volumes use ``geometry.voxel_volume_ml``.
        min_lesion_ml: infection components (3-D, 26-connected, counted inside the lungs)
            smaller than this are ignored; 0 counts everything. See ``DEFAULT_MIN_LESION_ML``.

    Returns:
        A ``SeverityReport`` of ``clean_infection``'s mask. Infection outside both lung masks is
        not counted (its volume is in ``outside_lungs_ml`` and a warning); removed islands are in
        ``removed_components`` and ``removed_ml``. A lesion crossing from one lung into the other is
        sized as one component and each lung counts its own part. An empty lung mask, or one
        under ``MIN_PLAUSIBLE_LUNG_ML``, is warned about.

    Example:
        >>> lungs = np.zeros((10, 10, 20), np.uint8); lungs[:, :, :10] = 1; lungs[:, :, 10:] = 2
        >>> infection = np.zeros_like(lungs); infection[:3, :, :10] = 1
        >>> report = compute_severity(lungs, infection, Geometry((1.0, 1.0, 1.0)))
        >>> report.right.volume_ml, report.right.involvement_pct, report.right.grade, report.overall_grade
        (1.0, 30.0, 'CT-2', 'CT-2')
    """
    return severity_from_cleaned(lungs, clean_infection(lungs, infection, geometry, min_lesion_ml), geometry)
