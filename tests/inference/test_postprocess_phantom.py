"""Known answers of the lung post-processing on the phantom, whose true lungs are exact."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet.inference.postprocess import (
    MIN_SECOND_LUNG_FRACTION,
    MIN_SPLIT_SIDE_SHARE,
    body_cut_sides,
    body_midline_x,
    fill_holes_per_slice,
    half_chest_side,
    label_left_right,
    largest_components,
    postprocess_lungs,
)
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.report import compute_severity

from .factory import small_phantom


def test_true_lungs_come_back_labelled_right_at_small_x(phantom):
    truth = phantom.lungs
    labels = postprocess_lungs(truth > 0, phantom.ct.hu, phantom.ct.geometry.spacing_mm[:2])
    assert np.nonzero(labels == RIGHT_LUNG)[2].mean() < np.nonzero(labels == LEFT_LUNG)[2].mean()
    # every true lung voxel keeps its own label ...
    assert np.array_equal(labels[truth > 0], truth[truth > 0])
    # ... and what is added is what per-slice hole filling encloses (here the right diaphragm dome, which
    # the phantom's axial slices ring with lung), plus a thin rim of lesion-like HU that the 15 mm
    # rolling ball takes from narrow concave corners: under 1 % of the lung volume
    added = (labels > 0) & (truth == 0)
    enclosed = fill_holes_per_slice(truth > 0) & (truth == 0)
    assert (added & ~enclosed).sum() < 0.01 * (truth > 0).sum()
    assert added.sum() < 0.1 * (truth > 0).sum()


def test_touching_lungs_are_split_into_right_and_left():
    touching = small_phantom(seed=3, shape=(16, 96, 96), lungs_touch_anteriorly=True)
    truth = touching.lungs
    assert len(largest_components(truth > 0, keep=2)) == 1, "the phantom's lungs should form one component"
    labels = postprocess_lungs(truth > 0)
    agreement = (labels[truth > 0] == truth[truth > 0]).mean()
    assert agreement > 0.99, f"only {agreement:.1%} of the lung voxels got their own side's label"


def test_subpleural_consolidation_bite_is_put_back_without_taking_chest_wall():
    """A lung stage that learned aerated lung leaves a bite where consolidation meets the pleura;
    the 15 mm rolling-ball recovery closes such bites and adds nothing outside the lung."""
    spacing = 0.8
    yy, xx = np.mgrid[:160, :160]
    right = ((yy - 80) / 60.0) ** 2 + ((xx - 45) / 25.0) ** 2 <= 1.0  # lateral border at x=20
    left = ((yy - 80) / 60.0) ** 2 + ((xx - 115) / 25.0) ** 2 <= 1.0
    lung = right | left
    bite = lung & (xx < 28) & (np.abs(yy - 80) < 7)  # 6.4 mm deep, 10.4 mm tall consolidation
    hu = np.full((3, 160, 160), 40.0, np.float32)  # chest wall soft tissue
    hu[:, lung] = -850.0
    hu[:, bite] = 0.0
    aerated = np.repeat((lung & ~bite)[None], 3, axis=0)
    recovered = postprocess_lungs(aerated, hu, (spacing, spacing))
    kept = (recovered[:, bite] > 0).mean()
    leaked = ((recovered > 0) & ~lung[None]).sum() / (3 * bite.sum())
    # a 15 mm ball dips 15 - sqrt(15^2 - 5.2^2) = 0.9 mm into the 10.4 mm wide bite: the outer ~15 % of its
    # 6.4 mm depth may stay out, the rest must come back
    assert kept >= 0.8, f"only {kept:.1%} of the consolidation bite is inside the lung"
    assert leaked < 0.05, f"{leaked:.1%} (of the bite's size) of chest wall was added to the lung"


def test_trachea_and_its_wall_leave_the_lung_mask_but_dark_lung_stays():
    """A lung stage that took in the trachea (lumen -1000 HU, 2 mm wall) between the lungs: the
    airway goes; a bulla ringed by lung and a small air bronchogram in consolidation stay lung."""
    spacing = 0.7
    yy, xx = np.mgrid[:300, :300] * spacing  # mm
    right = ((yy - 105) / 75) ** 2 + ((xx - 60) / 38) ** 2 <= 1
    left = ((yy - 105) / 75) ** 2 + ((xx - 150) / 38) ** 2 <= 1
    radius = np.hypot(yy - 75, xx - 105)
    lumen, wall = radius <= 8, (radius > 8) & (radius <= 10)
    bulla = np.hypot(yy - 110, xx - 55) <= 6
    consolidation = np.hypot(yy - 150, xx - 150) <= 12
    bronchogram = np.hypot(yy - 150, xx - 150) <= 2
    rng = np.random.default_rng(0)
    hu = np.full((2, 300, 300), 40.0, np.float32) + rng.normal(0, 15, (2, 300, 300))
    hu[:, right | left] = -850 + rng.normal(0, 30, ((right | left).sum(),))
    for region, value in ((lumen, -1000), (bulla, -1000), (consolidation, 20), (bronchogram, -1000)):
        hu[:, region] = value
    predicted = np.repeat((right | left | lumen | wall)[None], 2, axis=0)

    labels = postprocess_lungs(predicted, hu, (spacing, spacing))

    airway = lumen | wall
    assert (labels[:, airway] == 0).mean() > 0.95, "the trachea and its wall must leave the lungs"
    assert (labels[:, bulla] > 0).all() and (labels[:, bronchogram] > 0).all()
    lost = ((labels == 0) & (right | left)[None]).sum() / (2 * (right | left).sum())
    assert lost < 0.002, f"{lost:.2%} of the true lung was removed with the airway"


def test_body_midline_is_the_centre_of_the_filled_silhouette():
    """A 40-column body (x 10..49, centre 29.5) holding an aerated and a consolidated lung: the
    silhouette is filled row by row, so neither lung pulls the midline to its side."""
    hu = np.full((2, 30, 70), -1000.0, np.float32)
    hu[:, 5:25, 10:50] = 40.0
    hu[:, 8:22, 13:27] = -850.0  # aerated right lung
    hu[:, 8:22, 33:47] = 0.0  # consolidated left lung
    assert body_midline_x(hu) == 29.5
    assert body_midline_x(np.full((1, 8, 8), -1000.0)) is None


@pytest.mark.parametrize("side", [RIGHT_LUNG, LEFT_LUNG])
def test_a_single_lung_keeps_its_side_and_the_other_is_reported_empty(phantom, side):
    """One lung (pneumonectomy, a scan of one side, a lung the stage missed) is not split in two:
    it keeps its own label, the other stays empty and the report says 'not measured'."""
    only = phantom.lungs == side
    assert np.array_equal(label_left_right(only), only * np.uint8(side))
    labels = postprocess_lungs(only, phantom.ct.hu, phantom.ct.geometry.spacing_mm[:2])
    other = LEFT_LUNG if side == RIGHT_LUNG else RIGHT_LUNG
    assert not (labels == other).any() and (labels[only] == side).all()
    report = compute_severity(labels, np.zeros_like(labels), phantom.ct.geometry)
    missing = "left" if side == RIGHT_LUNG else "right"
    assert any(f"The {missing} lung mask is empty" in w for w in report.warnings)


def test_a_small_piece_of_the_other_lung_is_kept_as_that_lung(phantom):
    """The left lung and the top slices of the right one (under 10 % of the left): the piece is
    the right lung, not debris, and the left lung is not split."""
    left = phantom.lungs == LEFT_LUNG
    right = phantom.lungs == RIGHT_LUNG
    top = np.flatnonzero(right.any(axis=(1, 2)))[-2:]
    piece = np.zeros_like(right)
    piece[top] = right[top]
    assert 0 < piece.sum() < MIN_SECOND_LUNG_FRACTION * left.sum()
    labels = label_left_right(left | piece)
    assert np.array_equal(labels, left * np.uint8(LEFT_LUNG) + piece * np.uint8(RIGHT_LUNG))


def test_debris_straddling_the_midline_is_not_the_other_lung(phantom):
    """With one lung, a small component across the midline (a trachea remnant) is dropped."""
    left = phantom.lungs == LEFT_LUNG
    debris = np.zeros_like(left)
    centre = phantom.ct.shape[2] // 2
    debris[2:6, 20:26, centre - 3 : centre + 3] = True
    assert not (debris & left).any()
    labels = label_left_right(left | debris)
    assert np.array_equal(labels, left * np.uint8(LEFT_LUNG))


def test_sides_follow_the_body_midline_not_the_image_centre(phantom):
    """The patient off-centre: columns of air beyond the patient's left (large x) put the image's
    centre in the middle of the left lung. Told apart at the body's midline, the lone left lung
    stays whole and two lungs keep their labels."""
    mean_x = np.nonzero(phantom.lungs == LEFT_LUNG)[2].mean()
    pad = ((0, 0), (0, 0), (0, round(2 * mean_x + 1 - phantom.ct.shape[2])))
    hu = np.pad(phantom.ct.hu, pad, constant_values=-1000.0)
    truth = np.pad(phantom.lungs, pad)
    left = truth == LEFT_LUNG
    image_centre = (truth.shape[2] - 1) / 2
    columns = left.sum(axis=(0, 1))
    share_right_of_centre = columns[: int(np.ceil(image_centre))].sum() / columns.sum()
    assert MIN_SPLIT_SIDE_SHARE <= share_right_of_centre <= 1 - MIN_SPLIT_SIDE_SHARE  # a meaningful test
    spacing = phantom.ct.geometry.spacing_mm[:2]
    labels = postprocess_lungs(left, hu, spacing)
    assert not (labels == RIGHT_LUNG).any() and (labels[left] == LEFT_LUNG).all()
    both = postprocess_lungs(truth > 0, hu, spacing)
    assert np.array_equal(both[truth > 0], truth[truth > 0])


@pytest.mark.parametrize("kept", ["left half", "right half"])
def test_a_scan_of_one_half_of_the_chest_keeps_its_lung_whole_on_its_own_side(phantom, kept):
    """A field of view holding one side of the chest only, cut near the midline: the body's
    centroid then lies in the middle of the lone lung, which must not be split into a fake right
    and left lung; the cut edge says which side the scan shows."""
    midline = round(body_midline_x(phantom.ct.hu))
    columns = slice(midline, None) if kept == "left half" else slice(None, midline)
    side = LEFT_LUNG if kept == "left half" else RIGHT_LUNG
    hu, truth = phantom.ct.hu[:, :, columns], phantom.lungs[:, :, columns]
    lung_slices = np.flatnonzero(truth.any(axis=(1, 2)))
    spacing = phantom.ct.geometry.spacing_mm[:2]
    assert half_chest_side(hu, lung_slices, spacing) == (RIGHT_LUNG if side == LEFT_LUNG else LEFT_LUNG)
    lone = truth == side
    shares = lone.sum(axis=(0, 1)).cumsum() / lone.sum()
    assert MIN_SPLIT_SIDE_SHARE <= shares[round(body_midline_x(hu, lung_slices))] <= 1 - MIN_SPLIT_SIDE_SHARE
    labels = postprocess_lungs(truth > 0, hu, phantom.ct.geometry.spacing_mm[:2])
    assert (labels[lone] == side).all() and not (labels == 3 - side).any()


def test_touching_lungs_are_still_split_when_the_body_is_cut_at_one_side():
    """The cut only decides for a lone lung: touching lungs, whose slices hold two lungs side by
    side once the junction is eroded, are split as before."""
    touching = small_phantom(seed=3, shape=(16, 96, 96), lungs_touch_anteriorly=True)
    truth = touching.lungs
    for cut_side in (RIGHT_LUNG, LEFT_LUNG):
        labels = label_left_right(truth > 0, cut_side=cut_side)
        assert (labels[truth > 0] == truth[truth > 0]).mean() > 0.99


def test_arms_and_couch_at_the_edges_of_a_narrow_field_of_view_are_no_cut():
    """Arms or the couch reaching the image's edge fill a third of its rows at most (P001); a cut
    near the midline fills most of them."""
    hu = np.full((4, 100, 100), -1000.0, np.float32)
    hu[:, 20:80, 5:95] = 40.0  # the trunk
    hu[:, 40:60, :5] = 40.0  # an arm reaching the patient's right edge (a third of the body rows)
    hu[:, 85:90, :] = 100.0  # the couch, edge to edge
    slices = np.arange(4)
    assert body_cut_sides(hu, slices) == (False, False)
    assert body_cut_sides(hu[:, :, 50:], slices) == (True, False)  # the patient's left half only


def test_a_scan_of_one_half_of_the_chest_is_warned_about_in_the_report(phantom):
    from napari_chsnet.inference.pipeline import field_of_view_warnings
    from napari_chsnet.report import RunInfo, build_report_json

    spacing = phantom.ct.geometry.spacing_mm[:2]
    assert field_of_view_warnings(phantom.ct.hu, phantom.lungs, spacing) == ()
    midline = round(body_midline_x(phantom.ct.hu))
    hu, lungs = phantom.ct.hu[:, :, midline:], phantom.lungs[:, :, midline:]
    (warning,) = field_of_view_warnings(hu, lungs, spacing)
    assert "cuts the body near the midline on the patient's right" in warning
    severity = compute_severity(lungs, np.zeros_like(lungs), phantom.ct.geometry)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, warnings=(warning,))
    report = build_report_json(severity, run)
    assert report["warnings"].count(warning) == 1
    assert any("The right lung mask is empty" in w for w in report["warnings"])


def test_a_scan_stopped_inside_the_lungs_is_warned_about():
    """The sample CT's whole lungs lie inside its 64 slices (index 0: the most inferior); cropped, the
    scan's end slices cut through them."""
    from napari_chsnet.inference.pipeline import axial_coverage_warnings
    from napari_chsnet.io.phantom import sample_ct

    lungs = sample_ct().lungs
    assert axial_coverage_warnings(lungs) == ()
    (bases_cut,) = axial_coverage_warnings(lungs[25:])
    assert "lung bases are not fully scanned" in bases_cut and "apices" not in bases_cut
    (apices_cut,) = axial_coverage_warnings(lungs[:40])
    assert "lung apices are not fully scanned" in apices_cut and "bases" not in apices_cut
    (both,) = axial_coverage_warnings(lungs[30:33])
    assert "bases and apices are not fully scanned" in both
    assert axial_coverage_warnings(np.zeros_like(lungs)) == ()
    first = int(np.flatnonzero(lungs.any(axis=(1, 2)))[0])
    grazed = lungs[first:].copy()  # an edge slice holding a sliver of lung (under 5 % of the largest)
    grazed[0] = 0
    grazed[0, 100:104, 100:104] = RIGHT_LUNG
    assert axial_coverage_warnings(grazed) == ()


def _off_centre_chest(bridge_half_height: int) -> tuple[np.ndarray, np.ndarray]:
    """A patient lying off-centre: the body (wider than deep) cut at the image's x = 0 edge, both
    lungs whole, joined by a bridge of the given half height (0: apart)."""
    yy, xx = np.mgrid[:200, :200]
    body = ((yy - 100) / 80.0) ** 2 + ((xx - 80) / 110.0) ** 2 <= 1  # 190 mm of it kept, 160 mm deep
    right = ((yy - 100) / 50.0) ** 2 + ((xx - 45) / 25.0) ** 2 <= 1
    left = ((yy - 100) / 50.0) ** 2 + ((xx - 120) / 28.0) ** 2 <= 1
    bridge = (np.abs(yy - 100) < bridge_half_height) & (xx >= 60) & (xx <= 105)
    hu = np.full((20, 200, 200), -1000, np.int16)
    hu[:, body] = 40
    hu[:, right | left | bridge] = -850
    truth = np.zeros(hu.shape, np.uint8)
    truth[:, right] = RIGHT_LUNG
    truth[:, left] = LEFT_LUNG
    return hu, truth | np.where(bridge[None] & ~(right | left)[None], np.uint8(9), np.uint8(0))


@pytest.mark.parametrize("bridge_half_height", [0, 16])
def test_a_patient_off_centre_keeps_both_lungs_and_gets_no_half_chest_warning(bridge_half_height):
    """The body cut at one edge by an off-centre position is no half chest (wider than deep): two
    lungs, apart or joined by a broad bridge no erosion parts, keep their own sides."""
    from napari_chsnet.inference.pipeline import field_of_view_warnings

    hu, truth = _off_centre_chest(bridge_half_height)
    slices = np.arange(hu.shape[0])
    assert body_cut_sides(hu, slices) == (True, False)  # a meaningful case: cut at the patient's right
    assert half_chest_side(hu, slices, (1.0, 1.0)) is None
    labels = postprocess_lungs(truth > 0, hu, (1.0, 1.0))
    for side in (RIGHT_LUNG, LEFT_LUNG):
        assert (labels[truth == side] == side).mean() > 0.95
    assert field_of_view_warnings(hu, labels, (1.0, 1.0)) == ()
