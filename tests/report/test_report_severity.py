"""Known-answer tests of the severity figures on hand-made masks (1 mm voxels: 1 voxel = 0.001 mL)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet import slabs
from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.inference.cleaning import (
    DEFAULT_MIN_LESION_ML,
    UncountedInfection,
    clean_infection,
    remove_small_lesions,
)
from napari_chsnet.io.volume import Geometry
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.report.severity import (
    MIN_PLAUSIBLE_LUNG_ML,
    NOT_MEASURED,
    OUTSIDE_WARNING_SHARE,
    compute_severity,
    format_percent,
    grade_for_involvement,
    severity_from_cleaned,
    shown_grade,
    worse_grade,
)

ONE_MM = Geometry(spacing_mm=(1.0, 1.0, 1.0))


def two_lungs(n_right: int = 1000, n_left: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (10, 10, 2*10+gap) grid: right lung at small x, left lung at large x, 10x10x10 each.

    Returns lungs and the flat indices of each lung's voxels (C order), so a test can mark an
    exact number of infected voxels; as they are consecutive in C order they form one component.
    """
    lungs = np.zeros((10, 10, 24), dtype=np.uint8)
    lungs[:, :, :10] = RIGHT_LUNG
    lungs[:, :, 14:] = LEFT_LUNG
    flat = lungs.ravel()
    right = np.flatnonzero(flat == RIGHT_LUNG)[:n_right]
    left = np.flatnonzero(flat == LEFT_LUNG)[:n_left]
    return lungs, right, left


def infect(shape, *index_sets) -> np.ndarray:
    infection = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    for indices in index_sets:
        infection[indices] = 1
    return infection.reshape(shape)


def test_volume_of_ten_cubed_one_mm_lung_is_one_ml():
    lungs, right, _ = two_lungs()
    report = compute_severity(lungs, np.zeros_like(lungs), ONE_MM)
    assert report.right.volume_ml == pytest.approx(1.0, rel=1e-12)
    assert report.left.volume_ml == pytest.approx(1.0, rel=1e-12)
    assert report.overall_volume_ml == pytest.approx(2.0, rel=1e-12)
    assert (report.right.grade, report.left.grade, report.overall_grade) == ("CT-0", "CT-0", "CT-0")
    assert report.overall_involvement_pct == 0.0


def test_anisotropic_spacing_scales_volume():
    lungs, _, _ = two_lungs()
    report = compute_severity(lungs, np.zeros_like(lungs), Geometry(spacing_mm=(0.5, 0.5, 2.0)))
    # 1000 voxels of 0.5 * 0.5 * 2 mm^3 = 500 mm^3.
    assert report.right.volume_ml == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize(
    ("infected_voxels", "expected_pct", "expected_grade"),
    [
        (0, 0.0, "CT-0"),
        (1, 0.1, "CT-1"),
        (250, 25.0, "CT-1"),  # boundary belongs to the lower grade
        (251, 25.1, "CT-2"),
        (500, 50.0, "CT-2"),
        (501, 50.1, "CT-3"),
        (750, 75.0, "CT-3"),
        (751, 75.1, "CT-4"),
        (1000, 100.0, "CT-4"),
    ],
)
def test_involvement_and_grade_at_boundaries(infected_voxels, expected_pct, expected_grade):
    lungs, right, _ = two_lungs()
    infection = infect(lungs.shape, right[:infected_voxels])
    report = compute_severity(lungs, infection, ONE_MM, min_lesion_ml=0.0)
    assert report.right.infected_ml == pytest.approx(infected_voxels / 1000, rel=1e-12, abs=0)
    assert report.right.involvement_pct == pytest.approx(expected_pct, rel=1e-12, abs=0)
    assert report.right.grade == expected_grade
    assert report.left.grade == "CT-0"


def test_just_above_quarter_is_ct2_on_a_million_voxel_lung():
    # 250,001 of 1,000,000 voxels = 25.0001 %: a hair above the CT-1 bound.
    lungs = np.full((100, 100, 100), RIGHT_LUNG, dtype=np.uint8)
    infection = np.zeros(lungs.size, dtype=np.uint8)
    infection[:250_001] = 1
    report = compute_severity(lungs, infection.reshape(lungs.shape), ONE_MM, min_lesion_ml=0.0)
    assert report.right.involvement_pct == pytest.approx(25.0001, rel=1e-12)
    assert report.right.grade == "CT-2"
    infection[250_000] = 0
    assert compute_severity(lungs, infection.reshape(lungs.shape), ONE_MM, 0.0).right.grade == "CT-1"


@pytest.mark.parametrize(
    ("pct", "grade"),
    [
        (0.0, "CT-0"),
        (1e-9, "CT-1"),
        (25.0, "CT-1"),
        (25.0001, "CT-2"),
        (50.0, "CT-2"),
        (50.0001, "CT-3"),
        (75.0, "CT-3"),
        (75.1, "CT-4"),
        (100.0, "CT-4"),
    ],
)
def test_grade_for_involvement_table(pct, grade):
    assert grade_for_involvement(pct) == grade


def test_grade_rejects_negative_or_nan():
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="involvement_pct"):
            grade_for_involvement(bad)


def test_overall_grade_is_the_worse_lung_and_overall_pct_is_pooled():
    lungs, right, left = two_lungs()
    # Right 10 % (CT-1), left 60 % (CT-3).
    infection = infect(lungs.shape, right[:100], left[:600])
    report = compute_severity(lungs, infection, ONE_MM, min_lesion_ml=0.0)
    assert (report.right.grade, report.left.grade, report.overall_grade) == ("CT-1", "CT-3", "CT-3")
    assert report.overall_infected_ml == pytest.approx(0.7, rel=1e-12)
    assert report.overall_involvement_pct == pytest.approx(35.0, rel=1e-12)  # 700 / 2000
    assert worse_grade("CT-2", "CT-0", "CT-4", "CT-1") == "CT-4"


def test_small_components_are_removed_and_threshold_size_is_kept():
    lungs, right, _ = two_lungs()
    infection = np.zeros_like(lungs)
    infection[0:4, 0:5, 0:5] = 1  # 100 voxels = 0.1 mL: exactly the default threshold, kept
    infection[6:9, 6:9, 6:9] = 1  # 27 voxels = 0.027 mL: removed
    infection[9, 0, 9] = 1  # a single speck, removed
    report = compute_severity(lungs, infection, ONE_MM)
    assert DEFAULT_MIN_LESION_ML == 0.1
    assert report.right.infected_ml == pytest.approx(0.1, rel=1e-12)
    assert report.removed_components == 2
    assert report.removed_ml == pytest.approx(0.028, rel=1e-12)
    assert compute_severity(lungs, infection, ONE_MM, min_lesion_ml=0.0).right.infected_ml == pytest.approx(
        0.128
    )


def test_a_lone_speck_does_not_turn_a_normal_lung_into_ct1():
    lungs, _, _ = two_lungs()
    infection = np.zeros_like(lungs)
    infection[5, 5, 5] = 1
    assert compute_severity(lungs, infection, ONE_MM).right.grade == "CT-0"
    assert compute_severity(lungs, infection, ONE_MM, min_lesion_ml=0).right.grade == "CT-1"


@pytest.mark.parametrize(("infected_voxels", "warned"), [(0, False), (19, True), (20, False), (200, False)])
def test_involvement_under_one_percent_is_graded_ct1_with_a_warning_that_it_may_be_nothing(
    infected_voxels, warned
):
    """normal001 read 0.2 % (6.9 mL at the diaphragm domes and pericardial fat) as CT-1 with no word."""
    lungs, right, _ = two_lungs()  # 2000 voxels: 20 voxels are 1 %
    whole_lungs = Geometry(spacing_mm=(1.0, 1.0, 100.0))  # 0.1 mL voxels: 100 mL lungs, graded
    infection = infect(lungs.shape, right[:infected_voxels])
    report = compute_severity(lungs, infection, whole_lungs, min_lesion_ml=0)
    assert report.right.grade == ("CT-1" if infected_voxels else "CT-0")
    minimal = [w for w in report.warnings if w.startswith("Involvement is under 1 %")]
    assert bool(minimal) == warned
    if warned:
        assert "(1.9 mL)" in minimal[0] and "before reading the CT-1 grade" in minimal[0]
        # 1 mL lungs are graded by no one: no word about reading a CT-1 grade
        tiny = compute_severity(lungs, infection, ONE_MM, min_lesion_ml=0)
        assert not any(w.startswith("Involvement is under 1 %") for w in tiny.warnings)


def test_diagonal_voxels_form_one_26_connected_component():
    mask = np.zeros((4, 4, 4), dtype=bool)
    for i in range(4):
        mask[i, i, i] = True
    kept, n_removed, removed_voxels = remove_small_lesions(mask, 0.001, 0.004)
    assert kept.sum() == 4 and n_removed == 0 and removed_voxels == 0


def test_infection_outside_lungs_is_not_counted_and_warned():
    lungs, _, _ = two_lungs()
    infection = np.zeros_like(lungs)
    infection[:, :, 10:14] = 1  # the gap between the lungs: 400 voxels
    report = compute_severity(lungs, infection, ONE_MM)
    assert report.overall_infected_ml == 0.0
    assert report.outside_lungs_ml == pytest.approx(0.4)
    (warning,) = [w for w in report.warnings if "outside both lung masks" in w]
    # both causes, each with what to do: a lung mask that missed diseased lung, or marks beyond the lungs
    # (EAMC marks upper abdomen and air outside the body on a normal scan, resources/weights/eamc.md)
    assert "correct the lungs layer" in warning and "false marks, rightly not counted" in warning


def islands_and_outside_blob() -> tuple[np.ndarray, np.ndarray]:
    """Two lungs with a 200-voxel lesion (kept), two tiny islands (1 voxel in the right lung,
    a 2x2x2 cube in the left: 9 voxels = 0.009 mL, removed) and a 2x2x4 blob in the gap between
    the lungs (16 voxels = 0.016 mL outside both)."""
    lungs, _, _ = two_lungs()
    infection = np.zeros_like(lungs)
    infection[0:2, 0:10, 0:10] = 1  # 200 voxels = 0.2 mL in the right lung
    infection[6, 6, 6] = 1
    infection[6:8, 6:8, 18:20] = 1
    infection[4:6, 4:6, 10:14] = 1
    return lungs, infection


def test_removed_islands_and_infection_outside_the_lungs_are_reported():
    lungs, infection = islands_and_outside_blob()
    report = compute_severity(lungs, infection, ONE_MM)
    assert report.right.infected_voxels == 200 and report.left.infected_voxels == 0
    assert report.removed_components == 2
    assert report.removed_ml == pytest.approx(0.009, rel=1e-12)
    assert report.outside_lungs_ml == pytest.approx(0.016, rel=1e-12)
    assert report.uncounted == UncountedInfection(2, report.removed_ml, report.outside_lungs_ml)
    assert "0.02 mL of infection (7 % of what was found) lies outside both lung masks" in " ".join(
        report.warnings
    )


def test_cleaning_once_gives_the_mask_counted_and_the_same_report():
    """The pipeline cleans once, keeps the mask and reports the cleaning's counts."""
    lungs, infection = islands_and_outside_blob()
    cleaned = clean_infection(lungs, infection, ONE_MM)
    expected = np.zeros(lungs.shape, bool)
    expected[0:2, 0:10, 0:10] = True
    assert np.array_equal(cleaned.mask, expected)
    assert cleaned.uncounted.removed_components == 2 and cleaned.min_lesion_ml == DEFAULT_MIN_LESION_ML
    assert severity_from_cleaned(lungs, cleaned, ONE_MM) == compute_severity(lungs, infection, ONE_MM)
    # counting the cleaned mask again finds nothing more to remove: the counts must come along
    assert compute_severity(lungs, cleaned.mask, ONE_MM).uncounted == UncountedInfection()


def test_uncounted_infection_adds_up_and_round_trips_through_a_dict():
    run = UncountedInfection(3, 0.25, 1.5)
    assert run + UncountedInfection(1, 0.03125, 0.0) == UncountedInfection(4, 0.28125, 1.5)
    assert UncountedInfection.from_dict(run.to_dict()) == run
    assert UncountedInfection.from_dict({}) == UncountedInfection.from_dict(None) == UncountedInfection()


def test_empty_lung_reports_zero_with_flag_and_warning():
    lungs, right, _ = two_lungs()
    lungs[lungs == LEFT_LUNG] = 0
    infection = infect(lungs.shape, right[:300])
    report = compute_severity(lungs, infection, ONE_MM, min_lesion_ml=0.0)
    assert report.left.empty and not report.right.empty
    assert (report.left.volume_ml, report.left.involvement_pct, report.left.grade) == (0.0, 0.0, "CT-0")
    assert report.overall_grade == "CT-2"
    assert report.overall_involvement_pct == pytest.approx(30.0)
    assert any("left lung mask is empty" in w for w in report.warnings)
    both_empty = compute_severity(np.zeros_like(lungs), np.zeros_like(lungs), ONE_MM)
    assert both_empty.overall_involvement_pct == 0.0 and len(both_empty.warnings) == 2


def test_to_dict_has_exactly_the_documented_shape():
    lungs, right, left = two_lungs()
    report = compute_severity(lungs, infect(lungs.shape, right[:300], left[:50]), ONE_MM, 0.0)
    data = report.to_dict()
    assert set(data) == {"lungs", "overall", "min_lesion_ml"}
    assert set(data["lungs"]) == {"right", "left"}
    for side in ("right", "left"):
        assert set(data["lungs"][side]) == {
            "volume_ml",
            "infected_ml",
            "involvement_pct",
            "grade",
            "measured",
        }
    assert set(data["overall"]) == {"involvement_pct", "grade", "volume_ml", "infected_ml", "measured"}
    assert data["lungs"]["right"]["grade"] == "CT-2" and data["lungs"]["left"]["grade"] == "CT-1"
    assert data["overall"]["grade"] == "CT-2"
    assert data["min_lesion_ml"] == 0.0


@pytest.mark.parametrize(
    ("lungs_factory", "infection_factory", "match"),
    [
        (lambda: np.zeros((4, 4, 4), np.uint8), lambda: np.zeros((4, 4, 5), np.uint8), "same shape"),
        (lambda: np.full((4, 4, 4), 3, np.uint8), lambda: np.zeros((4, 4, 4), np.uint8), "holds label 3"),
        (lambda: np.ones((4, 4, 4), np.uint8), lambda: np.full((4, 4, 4), 0.7, np.float32), "threshold"),
        (lambda: np.ones((4, 4), np.uint8), lambda: np.ones((4, 4), np.uint8), "3-D"),
    ],
)
def test_bad_masks_raise_invalid_volume_error(lungs_factory, infection_factory, match):
    with pytest.raises(InvalidVolumeError, match=match):
        compute_severity(lungs_factory(), infection_factory(), ONE_MM)


def test_negative_min_lesion_is_a_config_error():
    lungs, _, _ = two_lungs()
    with pytest.raises(ConfigError, match="min_lesion_ml"):
        compute_severity(lungs, np.zeros_like(lungs), ONE_MM, min_lesion_ml=-1.0)


def test_synthetic_case_grades_right_lung_worse(synthetic_case):
    report = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    assert report.right.infected_ml > report.left.infected_ml > 0
    assert report.overall_grade == report.right.grade != "CT-0"


def test_a_lung_far_smaller_than_any_lung_is_warned_about():
    """The same 1000-voxel lungs at two voxel sizes: 90 mL each is no whole lung, 160 mL may be
    (a small child's); only the first gets the warning, the figures are computed either way."""
    lungs, right, _ = two_lungs()
    infection = infect(lungs.shape, right[:300])
    small = compute_severity(lungs, infection, Geometry(spacing_mm=(4.5, 4.5, 4.444)), min_lesion_ml=0.0)
    assert small.right.volume_ml == pytest.approx(90.0, rel=1e-3)
    assert small.right.involvement_pct == pytest.approx(30.0)
    (flagged,) = [w for w in small.warnings if "far less than a lung" in w]  # one sentence for both
    assert flagged.startswith("The right and left lung masks hold only 90.0 and 90.0 mL, far less")
    assert f"under {MIN_PLAUSIBLE_LUNG_ML:g} mL), so neither lung is graded: check" in flagged
    plausible = compute_severity(lungs, infection, Geometry(spacing_mm=(5.0, 5.0, 6.4)), min_lesion_ml=0.0)
    assert plausible.left.volume_ml == pytest.approx(160.0)
    assert not any("far less than a lung" in w for w in plausible.warnings)


def test_a_lung_fragment_beside_a_whole_lung_is_not_graded():
    """P001 with its left lung replaced by soft tissue (a pneumonectomy): the lung stage kept a 14 mL
    left fragment, 98 % "infected", and the patient came out CT-4 beside a CT-1 right lung. A mask
    under 100 mL keeps its figures but is not measured: the overall grade is the right lung's."""
    lungs = np.zeros((10, 10, 24), dtype=np.uint8)
    lungs[:, :, :10] = RIGHT_LUNG  # 1000 voxels of 2 mL: 2000 mL
    lungs[:2, :2, 14:16] = LEFT_LUNG  # 8 voxels: 16 mL
    infection = np.zeros_like(lungs)
    infection[:1, :, :10] = 1  # 10 % of the right lung
    infection[:2, :2, 14:16] = 1  # the whole fragment
    report = compute_severity(lungs, infection, Geometry(spacing_mm=(1.0, 1.0, 2000.0)), min_lesion_ml=0.0)
    assert (report.right.grade, report.right.measured) == ("CT-1", True)
    assert (report.left.grade, report.left.measured) == ("CT-4", False)  # figures kept
    assert report.overall_grade == "CT-1" and report.overall_measured
    data = report.to_dict()
    assert data["lungs"]["left"]["measured"] is False and data["overall"]["measured"] is True
    assert shown_grade(data["lungs"]["left"]) == NOT_MEASURED and shown_grade(data["overall"]) == "CT-1"
    (flagged,) = [w for w in report.warnings if "far less than a lung" in w]
    assert "left lung mask holds only 16.0 mL" in flagged
    assert "it is not graded and the overall grade is the right lung's" in flagged


def test_with_no_lung_measured_the_overall_grade_says_so():
    """Both masks under 100 mL (a single slice, a stray few mL): the grade is kept for the record, but
    ``overall.measured`` is False and tables show "not measured"."""
    lungs, right, left = two_lungs()
    report = compute_severity(lungs, infect(lungs.shape, right[:300], left[:50]), ONE_MM, 0.0)
    assert report.overall_grade == "CT-2" and not report.overall_measured
    assert shown_grade(report.to_dict()["overall"]) == NOT_MEASURED
    assert sum("neither lung is graded" in w for w in report.warnings) == 1  # said once for both
    # report dictionaries written before the flag: an empty lung was the one not measured
    assert shown_grade({"grade": "CT-0", "volume_ml": 0.0}) == NOT_MEASURED
    assert shown_grade({"grade": "CT-1", "volume_ml": 900.0}) == "CT-1"


def _lungs_with(*values: int, dtype=np.uint8) -> np.ndarray:
    lungs = np.zeros((4, 4, 8), dtype)
    lungs[:, :, :4], lungs[:, :, 4:] = RIGHT_LUNG, LEFT_LUNG
    for i, value in enumerate(values):
        lungs[0, 0, i] = value
    return lungs


@pytest.mark.parametrize(
    ("lungs", "message"),
    [
        (
            _lungs_with(3),
            "The lungs mask holds label 3; paint lungs with 1 (right) or 2 (left) and erase with 0.",
        ),
        (
            _lungs_with(7, 3, 7),
            "The lungs mask holds labels 3 and 7; paint lungs with 1 (right) or 2 (left) and erase with 0.",
        ),
        (
            _lungs_with(-1, 9, 3, 4, 5, 6, dtype=np.int16),
            "The lungs mask holds labels -1, 3, 4, 5, 6 and 1 more; paint lungs with 1 (right) or 2 (left) "
            "and erase with 0.",
        ),
        (
            _lungs_with(dtype=np.float32),
            "The lungs mask holds float32 values, not integer labels; paint lungs with 1 (right) or 2 (left) "
            "and erase with 0.",
        ),
    ],
)
def test_a_lungs_label_outside_0_1_2_is_named_in_plain_words(lungs, message):
    """Painted with napari's "new label" (3), the lungs mask is refused in one plain line: integers,
    not numpy reprs, and no "valid" 0 listed as a wrong value."""
    with pytest.raises(InvalidVolumeError) as raised:
        compute_severity(lungs, np.zeros(lungs.shape, np.uint8), ONE_MM)
    assert str(raised.value) == message


def test_any_infection_label_above_0_is_infection():
    lungs = _lungs_with()
    ones, twos = np.zeros_like(lungs), np.zeros_like(lungs)
    ones[:2, :, :4] = 1
    twos[:2, :, :4] = 2  # napari's "new label" on a 0/1 infection mask
    assert compute_severity(lungs, twos, ONE_MM, 0.0) == compute_severity(lungs, ones, ONE_MM, 0.0)
    with pytest.raises(InvalidVolumeError, match="holds label -1; paint infection with 1 and erase with 0"):
        compute_severity(lungs, np.full(lungs.shape, -1, np.int8), ONE_MM)


# ---------------------------------------------------------------- lean cleaning = the plain rule


def _reference_clean(lungs, infection, voxel_ml, min_lesion_ml):
    """The cleaning rule written the straightforward way (full-volume temporaries, one bincount):
    the lean ``clean_infection`` must give exactly this mask and these counts."""
    from scipy import ndimage

    infection = infection.astype(bool)
    in_lungs = lungs > 0
    outside = int(np.count_nonzero(infection & ~in_lungs))
    inside = infection & in_lungs
    labels, n = ndimage.label(inside, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes * voxel_ml >= min_lesion_ml * (1.0 - 1e-9) if min_lesion_ml > 0 else sizes > 0
    keep[0] = False
    kept = keep[labels]
    removed = n - int(np.count_nonzero(keep))
    per_lung = {
        label: (int(np.count_nonzero(lungs == label)), int(np.count_nonzero(kept & (lungs == label))))
        for label in (RIGHT_LUNG, LEFT_LUNG)
    }
    return kept, removed, int(np.count_nonzero(inside) - np.count_nonzero(kept)), outside, per_lung


def _phantom_like(seed: int, shape=(37, 48, 56)) -> tuple[np.ndarray, np.ndarray]:
    """Two ellipsoid lungs and a thresholded smooth random field: lesions of every size from single
    voxels to large confluent ones, inside, across and outside the lungs."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    nz, ny, nx = shape
    lungs = np.zeros(shape, np.uint8)
    for label, cx in ((RIGHT_LUNG, 0.3 * nx), (LEFT_LUNG, 0.7 * nx)):
        inside = (
            ((z - nz / 2) / (0.45 * nz)) ** 2
            + ((y - ny / 2) / (0.4 * ny)) ** 2
            + ((x - cx) / (0.2 * nx)) ** 2
        )
        lungs[inside <= 1] = label
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    infection = (field > np.quantile(field, 0.8)).astype(np.uint8)
    infection[rng.random(shape) < 0.002] = 1  # specks
    infection[(infection == 1) & (rng.random(shape) < 0.1)] = 2  # napari's "new label" paint
    return lungs, infection


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_lesion_ml", [0.0, 0.005, 0.03, 0.1])
@pytest.mark.parametrize("slab_voxels", [1, 48 * 56 * 5, 1 << 22])  # one slice, 5 slices, the default
def test_lean_cleaning_equals_the_straightforward_rule(monkeypatch, seed, min_lesion_ml, slab_voxels):

    monkeypatch.setattr(slabs, "SLAB_VOXELS", slab_voxels)
    lungs, infection = _phantom_like(seed)
    kept, removed, removed_voxels, outside, per_lung = _reference_clean(
        lungs, infection, 0.001, min_lesion_ml
    )
    assert outside > 0 and (min_lesion_ml == 0 or removed > 0)  # the phantom exercises every branch
    for lungs_in, infection_in in (
        (lungs, infection),
        (lungs.astype(np.int32), infection.astype(bool)),
        (lungs.astype(np.int16), infection.astype(np.int64)),
    ):
        cleaned = clean_infection(lungs_in, infection_in, ONE_MM, min_lesion_ml)
        assert cleaned.mask.dtype == bool and np.array_equal(cleaned.mask, kept)
        assert cleaned.uncounted.removed_components == removed
        assert cleaned.uncounted.removed_ml == removed_voxels * 0.001
        assert cleaned.uncounted.outside_lungs_ml == outside * 0.001
        report = severity_from_cleaned(lungs_in, cleaned, ONE_MM)
        assert (report.right.lung_voxels, report.right.infected_voxels) == per_lung[RIGHT_LUNG]
        assert (report.left.lung_voxels, report.left.infected_voxels) == per_lung[LEFT_LUNG]
    mask, n_removed, n_voxels = remove_small_lesions((infection > 0) & (lungs > 0), 0.001, min_lesion_ml)
    assert np.array_equal(mask, kept) and (n_removed, n_voxels) == (removed, removed_voxels)


def test_more_than_65535_islands_fall_back_to_int32_labels():
    """uint16 labels halve the label array; a mask of more islands than that still counts right."""
    lungs = np.ones((1, 520, 520), np.uint8)
    infection = np.zeros_like(lungs)
    infection[0, ::2, ::2] = 1  # 260 x 260 = 67600 single-voxel islands (none touch)
    infection[0, :5, :5] = 1  # and one 25-voxel lesion, kept
    cleaned = clean_infection(lungs, infection, ONE_MM, 0.002)
    kept, removed, removed_voxels, outside, _ = _reference_clean(lungs, infection, 0.001, 0.002)
    assert removed == 67600 - 9 and np.array_equal(cleaned.mask, kept)
    assert cleaned.uncounted == UncountedInfection(removed, removed_voxels * 0.001, 0.0)


def test_cleaning_and_counting_make_no_full_volume_temporary(monkeypatch):
    """clean_infection allocates its result (one bool mask) and, besides, at most the box's uint16
    labels; severity_from_cleaned only slab-sized arrays. Sized so a full-volume temporary shows."""
    import tracemalloc

    monkeypatch.setattr(slabs, "SLAB_VOXELS", 1 << 16)  # 4 slices here: a volume of 16 slabs

    shape = (64, 128, 128)  # 1 Mi voxels: a bool mask is 1 MiB, int64 labels 8 MiB
    lungs = np.zeros(shape, np.uint8)
    lungs[:, :, :60], lungs[:, :, 68:] = RIGHT_LUNG, LEFT_LUNG
    infection = np.zeros(shape, np.uint8)
    infection[:, 10:110, 5:120] = 1  # a box of 64 x 100 x 115 voxels, across both lungs and the gap
    infection[::4, ::4, 63] = 1  # specks in the gap: outside
    infection[::8, 120, ::8] = 1  # specks in the lungs: removed
    mask_bytes, box_voxels = infection.size, 64 * 121 * 125
    tracemalloc.start()
    try:
        cleaned = clean_infection(lungs, infection, ONE_MM, 0.1)
        _, peak = tracemalloc.get_traced_memory()
        # the result + uint16 box labels + slab temporaries: less than one more bool mask
        assert peak < mask_bytes + 2 * box_voxels + mask_bytes
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        report = severity_from_cleaned(lungs, cleaned, ONE_MM)
        _, peak = tracemalloc.get_traced_memory()
        assert peak - base < mask_bytes // 4
    finally:
        tracemalloc.stop()
    assert cleaned.uncounted.removed_components > 0 and cleaned.uncounted.outside_lungs_ml > 0
    assert report.right.infected_voxels == 64 * 100 * 55 and report.left.infected_voxels == 64 * 100 * 52


@pytest.mark.parametrize(
    ("pct", "shown"),
    [(0.0, "0.0"), (0.04, "< 0.1"), (3.645, "3.6"), (25.0, "25.0"), (25.04, "25.04"), (24.97, "24.97"),
     (50.0001, "50.0001"), (74.96, "74.96"), (25.2, "25.2"), (25.00004, "> 25.0"), (24.99996, "< 25.0"),
     (49.999996, "< 50.0")],
)  # fmt: skip
def test_a_percentage_never_prints_as_a_boundary_it_is_not_on(pct, shown):
    """25.04 % (CT-2) printed as "25.0 %" beside CT-2, which reads as CT-1's upper bound."""
    assert format_percent(pct) == shown


@pytest.mark.parametrize(("counted_voxels", "warned"), [(195, False), (185, True)])
def test_outside_infection_is_warned_from_5_percent_of_all_infection_found(counted_voxels, warned):
    """``OUTSIDE_WARNING_SHARE`` is a share of all infection found, inside and outside the lungs: 10
    voxels outside beside 195 counted are 10 / 205 = 4.9 % (a figure, no warning), beside 185 counted
    10 / 195 = 5.1 % (warned). (10 voxels are over 5 % of 195: the share is not of the counted part.)"""
    assert OUTSIDE_WARNING_SHARE == 0.05
    lungs, right, _ = two_lungs()
    infection = np.zeros_like(lungs)
    infection.flat[right[:counted_voxels]] = 1  # one lesion in the right lung
    infection[4, 4:9, 10:12] = 1  # 10 voxels in the gap between the lungs
    report = compute_severity(lungs, infection, ONE_MM)
    assert report.right.infected_voxels == counted_voxels
    assert report.outside_lungs_ml == pytest.approx(0.010)
    assert any("outside both lung masks" in w for w in report.warnings) == warned
