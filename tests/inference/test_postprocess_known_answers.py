"""Known answers of the lung post-processing rules on small synthetic scenes: the physical (mm) rules with
non-square pixels, the side rules at their documented thresholds, and the cleaning of small components."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_chsnet.inference.postprocess import (
    _in_plane_erosion_depth,
    body_midline_x,
    body_width_to_depth,
    fill_holes,
    fill_holes_per_slice,
    half_chest_side,
    label_left_right,
    postprocess_lungs,
    recover_dense_border,
    remove_central_airways,
    remove_small_components,
)
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG

# Non-square pixels, (x, y) as every spacing_xy_mm argument: 0.6 mm columns, 0.9 mm rows.
ANISOTROPIC_XY_MM = (0.6, 0.9)


# ---------------------------------------------------------------- holes
def test_a_hole_is_background_cut_off_from_the_border_through_faces():
    """A cavity is filled; one opening onto the array's border through a face is not a hole; background
    meeting the outside only at an edge (diagonally) is a hole, as for ``ndi.binary_fill_holes``."""
    shell = np.ones((5, 5, 5), bool)
    shell[2, 2, 2] = False  # a closed cavity
    assert fill_holes(shell).all()
    opened = shell.copy()
    opened[2, 2, :3] = False  # a tunnel from the cavity to the x = 0 face
    assert (fill_holes(opened) == opened).all()
    diagonal = np.zeros((1, 6, 6), bool)
    diagonal[0, 1:5, 1:5] = True
    diagonal[0, 2:4, 2:4] = False  # a 2x2 hole ...
    diagonal[0, 1, 1] = False  # ... meeting the border's background only at a corner of this voxel
    assert fill_holes_per_slice(diagonal)[0, 2:4, 2:4].all()
    assert not fill_holes_per_slice(diagonal)[0, 1, 1]  # on the border's side: not a hole


@pytest.mark.parametrize("seed", range(4))
def test_holes_are_filled_as_scipy_fills_them(seed):
    """``fill_holes`` labels the background once instead of dilating until stable; it must give
    ``binary_fill_holes``' answer, in 3-D and slice by slice, with the per-slice size bound too."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(1, 14, 3))
        mask = rng.random(shape) < rng.uniform(0.3, 0.9)
        assert (fill_holes(mask) == ndi.binary_fill_holes(mask)).all()
        for max_hole in (None, 0, 2, 6):
            expected = np.stack([ndi.binary_fill_holes(section) for section in mask])
            if max_hole is not None:
                for z, section in enumerate(mask):
                    holes, _count = ndi.label(expected[z] & ~section)
                    sizes = np.bincount(holes.ravel())
                    expected[z][(sizes > max_hole)[holes] & (holes > 0)] = False
            assert (fill_holes_per_slice(mask, max_hole) == expected).all()


@pytest.mark.parametrize("seed", range(3))
def test_the_erosion_depth_gives_every_number_of_in_plane_erosions(seed):
    """The touching-lungs split erodes in-plane until the lungs part; reading ``depth > k`` off one
    distance transform must equal ``k`` erosions by the 4-neighbour cross, the array's edge included."""
    rng = np.random.default_rng(seed)
    cross = ndi.generate_binary_structure(3, 1)
    cross[0] = cross[2] = False
    for _ in range(20):
        mask = rng.random((3, 30, 40)) < 0.85
        mask[:, :, 0] = True  # foreground on the array's edge: erosion takes it as background beyond
        depth = _in_plane_erosion_depth(mask, cap=9)
        eroded = mask
        for erosions in range(1, 9):
            eroded = ndi.binary_erosion(eroded, cross)
            assert (eroded == (depth > erosions)).all()


# ---------------------------------------------------------------- physical sizes with non-square pixels
def test_body_width_to_depth_and_half_chest_are_measured_in_mm():
    """A body cut at the image's x = 0 edge, 80 columns wide and 60 rows deep: 48 mm wide and 54 mm deep
    with 0.6 x 0.9 mm pixels, so narrower than deep (a half chest), though wider than deep in pixels."""
    hu = np.full((4, 100, 100), -1000.0, np.float32)
    hu[:, 20:80, :80] = 40.0
    slices = np.arange(4)
    assert body_width_to_depth(hu, slices, ANISOTROPIC_XY_MM) == pytest.approx(48.0 / 54.0)
    # the patient's right left out (cut at x = 0): the lone lung is given the left side
    assert half_chest_side(hu, slices, ANISOTROPIC_XY_MM) == RIGHT_LUNG
    # the same pixels with 0.9 mm columns and 0.6 mm rows: 72 x 36 mm, a whole chest's shape
    assert half_chest_side(hu, slices, ANISOTROPIC_XY_MM[::-1]) is None


def _lung_with_a_cut_out(size: int, lung: slice, cut: tuple[slice, slice], cut_hu: float):
    """Labels, HU and cut mask of a square right lung (-850 HU) in 40 HU tissue, `cut` left out at cut_hu."""
    labels = np.zeros((1, size, size), np.uint8)
    labels[0, lung, lung] = RIGHT_LUNG
    cut_mask = np.zeros((size, size), bool)
    cut_mask[cut] = True
    labels[0, cut_mask] = 0
    hu = np.full((1, size, size), 40.0, np.float32)
    hu[0, lung, lung] = -850.0
    hu[0, cut_mask] = cut_hu
    return labels, hu, cut_mask


def test_dense_border_recovery_rolls_a_ball_of_radius_given_in_mm():
    """A consolidation bite in the lung's posterior border, 40 columns (24 mm) wide and 20 rows (18 mm)
    deep with 0.6 x 0.9 mm pixels. The docstring's rule: the 15 mm ball dips 15 - sqrt(15^2 - 12^2) = 6 mm
    into a 24 mm wide bite, so everything deeper comes back. (Measured with the axes swapped, the bite
    would be 36 mm wide: the 30 mm ball would enter it and reach its bottom.)"""
    # the bite opens at the posterior border (row 180)
    labels, hu, bite = _lung_with_a_cut_out(200, slice(20, 180), np.s_[160:180, 80:120], 0.0)

    recovered = recover_dense_border(labels, hu, ANISOTROPIC_XY_MM)

    depth_mm = (180 - np.arange(200)[:, None]) * ANISOTROPIC_XY_MM[1]  # a row's distance to the opening
    deep = bite & (depth_mm > 6.0 + ANISOTROPIC_XY_MM[1])  # a row's margin past the 6 mm dip
    assert deep.sum() > 0.6 * bite.sum()  # a meaningful test: most of the bite is that deep
    assert (recovered[0, deep] == RIGHT_LUNG).all(), "the bite deeper than the ball's 6 mm dip must come back"
    assert recovered[0, 179, 100] == 0  # the bite's outermost row, inside the dip, stays out
    assert not ((recovered[0] > 0) & (hu[0] == 40.0)).any()  # nothing of the chest wall


def _walled_lumen_scene(lumen_rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lungs over rows 20-179 and columns 20-179 (1 = x < 100, 2 beyond) that took in an air lumen
    (-1000 HU) 36 columns wide and 12 rows deep at columns 82-117, centred in x between the lungs,
    walled by soft tissue on its left and right (8 columns) and with aerated lung (-850 HU) above and
    below it."""
    labels = np.zeros((1, 200, 200), np.uint8)
    labels[0, 20:180, 20:100] = RIGHT_LUNG
    labels[0, 20:180, 100:180] = LEFT_LUNG
    hu = np.full((1, 200, 200), 40.0, np.float32)
    hu[0, 20:180, 20:180] = -850.0
    lumen = np.zeros((200, 200), bool)
    lumen[lumen_rows, 82:118] = True
    rows = slice(lumen_rows.start - 4, lumen_rows.stop + 4)
    hu[0, rows, 74:82] = hu[0, rows, 118:126] = 40.0  # the tissue walls at its sides
    labels[0, rows, 74:82] = labels[0, rows, 118:126] = 0
    hu[0, lumen] = -1000.0
    return labels, hu, lumen


@pytest.mark.parametrize("lumen_rows", [slice(94, 106), slice(26, 38)], ids=["mid-chest", "anterior"])
def test_airway_wall_ring_is_measured_in_mm(lumen_rows):
    """The 2.5 mm ring around the lumen with 0.6 x 0.9 mm pixels: 4 columns of the side walls and 2 rows of
    lung above and below, so (2 * 4 * 12 + corners) / ring, about 45 % of it, is tissue: at least
    AIRWAY_WALL_FRACTION (35 %), an airway that leaves the lungs. (Measured with the axes swapped, 2
    columns of wall and 4 rows of lung: under 20 % tissue, kept as dark lung.) The band that holds central
    airways is the middle 30-70 % of the lungs' extent in x (columns 68-131): the lumen's centre column
    99.5 lies in it whether the lumen sits mid-chest or anteriorly (centre row 31.5)."""
    labels, hu, lumen = _walled_lumen_scene(lumen_rows)
    out = remove_central_airways(labels, hu, ANISOTROPIC_XY_MM)
    assert (out[0, lumen] == 0).all(), "the walled airway lumen must leave the lungs"
    aerated = (labels[0] > 0) & (hu[0] == -850.0)
    lost = (aerated & (out[0] == 0)).sum() / aerated.sum()
    assert lost < 0.01, f"{lost:.2%} of the aerated lung left with the airway"


# ---------------------------------------------------------------- sides of the lungs
def test_without_a_midline_the_image_centre_column_tells_the_sides():
    """Slices 120 rows x 240 columns holding the patient's right lung only, at columns 40-99: left of the
    image's centre column 119.5, so labelled right and not split (the centre row 59.5 is no midline)."""
    mask = np.zeros((4, 120, 240), bool)
    mask[:, 30:90, 40:100] = True
    labels = label_left_right(mask)
    assert (labels[mask] == RIGHT_LUNG).all() and not (labels == LEFT_LUNG).any()


def _left_lung_and_piece(piece_columns: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A left lung (columns 70-110) and a small separate piece 10 columns wide, under 10 % of it, on slices
    120 columns wide (the image's centre column 59.5 is the midline)."""
    lung = np.zeros((4, 40, 120), bool)
    lung[:, 5:36, 70:111] = True
    piece = np.zeros_like(lung)
    piece[:2, 10:15, piece_columns] = True
    assert piece.sum() < 0.1 * lung.sum()
    return lung, piece, lung | piece


def test_a_piece_with_90_percent_across_the_midline_is_the_other_lung():
    """Columns 51-60 about the midline 59.5: 51-59 (the columns x < 59.5) lie on the patient's right, 9 of
    10, so exactly OTHER_SIDE_SHARE (90 %) lies across the midline: a piece of the right lung."""
    lung, piece, mask = _left_lung_and_piece(slice(51, 61))
    labels = label_left_right(mask)
    assert np.array_equal(labels, lung * np.uint8(LEFT_LUNG) + piece * np.uint8(RIGHT_LUNG))


def test_a_piece_with_80_percent_across_the_midline_is_debris():
    """Columns 52-61: 8 of 10 on the patient's right, under 90 %: debris straddling the midline, dropped."""
    lung, _piece, mask = _left_lung_and_piece(slice(52, 62))
    labels = label_left_right(mask)
    assert np.array_equal(labels, lung * np.uint8(LEFT_LUNG))


@pytest.mark.parametrize("second_share", ["10 %", "under 10 %"])
def test_a_second_component_of_10_percent_is_a_lung_whatever_the_midline(second_share):
    """A right lung (9600 voxels) and a second component straddling the midline (columns 90-109 about 99.5):
    at 960 voxels, 10 % of the first, the two are the two lungs; one voxel fewer and it is debris."""
    mask = np.zeros((4, 60, 200), bool)
    mask[:, 10:50, 10:70] = True
    second = np.zeros_like(mask)
    second[:, 20:32, 90:110] = True
    if second_share == "under 10 %":
        second[0, 20, 90] = False
    labels = label_left_right(mask | second)
    assert (labels[mask] == RIGHT_LUNG).all()
    assert (labels[second] == (LEFT_LUNG if second_share == "10 %" else 0)).all()


def _unequal_touching_lungs(n_slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Touching lungs of unequal size (the left one under a quarter of the pair, e.g. after a lobectomy),
    joined by a 4 x 4 bridge at the anterior junction line; midline at x = 100."""
    right = np.zeros((n_slices, 120, 200), bool)
    right[:, 20:100, 30:98] = True
    left = np.zeros_like(right)
    left[:, 30:90, 102:130] = True
    bridge = np.zeros_like(right)
    bridge[:, 40:44, 98:102] = True
    return right, left, right | left | bridge


@pytest.mark.parametrize("n_slices", [10, 1], ids=["volume", "single axial image"])
def test_touching_lungs_of_unequal_size_are_split_at_their_junction(n_slices):
    """The left lung holds 24 % of the component (at least MIN_SPLIT_SIDE_SHARE, 20 %, on each side of
    the midline): two touching lungs, split at the bridge, each lung whole on its own side. A single axial
    image (a 2-D slice) is eroded in-plane as well; its junction lies outside the middle third of the
    component's x range, so a cut there would go through the right lung."""
    right, left, mask = _unequal_touching_lungs(n_slices)
    share_left = mask[:, :, 100:].sum() / mask.sum()
    assert 0.2 <= share_left < 0.3  # a meaningful test: between the threshold and well above it
    labels = label_left_right(mask, midline_x=100.0)
    assert (labels[right] == RIGHT_LUNG).all(), "the right lung must keep its label"
    assert (labels[left] == LEFT_LUNG).all(), "the smaller left lung must be split off whole"


def test_a_lone_lung_reaching_under_20_percent_across_the_midline_is_not_split():
    """A lone right lung, 18 % of it across the midline (x >= 100): it keeps its side, whole."""
    mask = np.zeros((4, 120, 200), bool)
    mask[:, 20:100, 18:118] = True
    assert mask[:, :, 100:].sum() / mask.sum() == pytest.approx(0.18)
    labels = label_left_right(mask, midline_x=100.0)
    assert (labels[mask] == RIGHT_LUNG).all()


def test_a_lone_crescent_lung_in_a_scan_of_one_half_is_not_split():
    """A scan of the left half of the chest (the patient's right left out) whose lone lung straddles the
    midline is split only when its slices hold two blobs side by side (x ranges overlapping by under half
    the narrower one's width). A crescent, whose front and back pieces overlap over about 60 % of the
    narrower one's width once the thin link between them is eroded, is one lung, on the side the scan
    keeps."""
    mask = np.zeros((6, 100, 140), bool)
    mask[:, 10:30, 20:80] = True  # front piece, columns 20-79
    mask[:, 60:80, 50:100] = True  # back piece, columns 50-99
    mask[:, 30:60, 50:54] = True  # the thin link
    share = mask[:, :, :70].sum() / mask.sum()
    assert 0.2 <= share <= 0.8  # a meaningful test: it straddles the midline x = 70
    labels = label_left_right(mask, midline_x=70.0, cut_side=RIGHT_LUNG)
    assert (labels[mask] == LEFT_LUNG).all() and not (labels == RIGHT_LUNG).any()


# ---------------------------------------------------------------- dense border recovery
def test_dense_border_recovery_leaves_the_other_lungs_voxels_alone():
    """Touching lungs: a consolidated tongue of the left lung (0 HU) fills a 25 mm wide notch in the right
    lung's medial border. The right lung's rolling ball closes the notch, yet the tongue stays left lung
    (only voxels not claimed by the other lung are added)."""
    labels = np.zeros((1, 160, 200), np.uint8)
    labels[0, 20:140, 20:100] = RIGHT_LUNG
    labels[0, 20:140, 100:180] = LEFT_LUNG
    tongue = np.zeros((160, 200), bool)
    tongue[60:85, 80:100] = True
    labels[0, tongue] = LEFT_LUNG
    hu = np.full((1, 160, 200), 40.0, np.float32)
    hu[0, 20:140, 20:180] = -850.0
    hu[0, tongue] = 0.0
    out = recover_dense_border(labels, hu, (1.0, 1.0))
    assert np.array_equal(out, labels)


def test_a_dense_pocket_ringed_by_lung_up_to_its_last_row_comes_back_whole():
    """Consolidation (0 HU) 32 mm wide and 20 mm deep, 640 mm^2 (larger than a per-slice hole filled),
    ringed by aerated lung, its posterior rim a single row, the lung's last: the 30 mm ball fits neither
    into it nor through the rim, so all of it comes back."""
    spacing = 0.8
    # row 99 (the lung's last) is lung
    labels, hu, pocket = _lung_with_a_cut_out(120, slice(20, 100), np.s_[74:99, 40:80], 0.0)
    out = recover_dense_border(labels, hu, (spacing, spacing))
    assert (out[0, pocket] == RIGHT_LUNG).all()


@pytest.mark.parametrize(
    ("bite_hu", "comes_back"), [(-690.0, True), (-710.0, False), (190.0, True), (210.0, False)]
)
def test_dense_border_recovery_adds_only_lesion_like_hu(bite_hu, comes_back):
    """DENSE_LESION_HU, -700 to 200 HU: denser than aerated lung, lighter than bone. A 20 mm wide, 20 mm
    deep bite comes back (deeper than the ball's 15 - sqrt(15^2 - 10^2) = 3.8 mm dip) only when its HU
    lies in that range."""
    # the bite opens at the posterior border (row 110)
    labels, hu, bite = _lung_with_a_cut_out(120, slice(10, 110), np.s_[90:110, 50:70], bite_hu)
    out = recover_dense_border(labels, hu, (1.0, 1.0))
    deep = bite & (np.arange(120)[:, None] < 104)  # over 5 mm from the opening
    assert (out[0, deep] == RIGHT_LUNG).all() if comes_back else not (out[0, bite] > 0).any()


# ---------------------------------------------------------------- holes, body, small components
@pytest.mark.parametrize(("hole_rows", "filled"), [(20, True), (21, False)])
def test_per_slice_holes_are_filled_up_to_400_mm2(hole_rows, filled):
    """A hole through every slice (so no 3-D hole) of 20 x 20 = 400 mm^2 (MAX_SLICE_HOLE_MM2, inclusive) is
    a vessel or bronchus and filled; one of 20 x 21 = 420 mm^2 is an organ dome and stays out."""
    mask = np.zeros((4, 100, 120), bool)
    mask[:, 10:90, 10:55] = True
    mask[:, 10:90, 65:110] = True
    hole = np.zeros_like(mask)
    hole[:, 40 : 40 + hole_rows, 20:40] = True
    labels = postprocess_lungs(mask & ~hole, None, (1.0, 1.0))
    assert (labels[hole] == RIGHT_LUNG).all() if filled else not (labels[hole] > 0).any()


@pytest.mark.parametrize(("tissue_hu", "is_body"), [(-490.0, True), (-510.0, False)])
def test_the_body_is_what_is_denser_than_minus_500_hu(tissue_hu, is_body):
    """BODY_HU: voxels denser than -500 HU are body; a block of columns 10-49 (centre 29.5) at -490 HU
    is the body, at -510 HU air."""
    hu = np.full((2, 30, 70), -1000.0, np.float32)
    hu[:, 5:25, 10:50] = tissue_hu
    assert body_midline_x(hu) == (29.5 if is_body else None)


def test_small_components_are_26_connected():
    """An oblique lesion of eight 2 x 2 x 2 blocks touching only at their corners is one 26-connected
    component of 64 voxels: it stays with min_voxels 20, while a lone 8-voxel block goes."""
    mask = np.zeros((20, 20, 20), bool)
    for k in range(8):
        mask[2 * k : 2 * k + 2, 2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = True
    speck = np.zeros_like(mask)
    speck[0:2, 16:18, 0:2] = True
    assert np.array_equal(remove_small_components(mask | speck, 20), mask)


def test_small_components_of_exactly_min_voxels_are_kept():
    """Components smaller than min_voxels are dropped; one of exactly min_voxels is kept."""
    mask = np.zeros((10, 10, 20), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    smaller = np.zeros_like(mask)
    smaller[1:4, 1:4, 10:13] = True
    smaller[1, 1, 10] = False  # 26 voxels
    assert np.array_equal(remove_small_components(mask | smaller, 27), mask)
