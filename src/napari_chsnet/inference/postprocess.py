"""Post-processing of the lung and infection stages (numpy/scipy, no torch).

Arrays are ``(z, y, x)`` in LPS display orientation (x grows toward the patient's left), so the
patient's right lung lies at smaller x than the body's midline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.slabs import bounding_box, label_sizes

# A second component smaller than this fraction of the largest is debris (bowel gas, a
# trachea remnant), not a lung, unless it lies wholly across the midline (see OTHER_SIDE_SHARE).
MIN_SECOND_LUNG_FRACTION = 0.1
# One component holds both (touching) lungs only when each side of the body's midline holds at
# least this share of it: touching lungs hold 40-60 % on each side, while a single lung reaches
# across only a little (an over-inflated lung after pneumonectomy herniates anteriorly) or not at all.
MIN_SPLIT_SIDE_SHARE = 0.2
# A small second component is the other lung (a piece the lung stage kept, e.g. an apex) when at
# least this share of it lies across the midline from the first; debris straddling the midline (a
# trachea remnant) is dropped.
OTHER_SIDE_SHARE = 0.9
# Body: voxels denser than this (soft tissue, bone, the couch), as opposed to air around the patient.
BODY_HU = -500.0
# The field of view cuts the body at an image edge on a slice when body fills that edge column over at
# least this share of the slice's body rows: a cut near the midline (a scan of one half of the chest)
# gives 80-100 %, arms, chest wall and couch at the edge of a narrow field of view about a third (P001).
# The body is cut at that edge of the scan when half of the lung slices are.
CUT_EDGE_ROW_SHARE = 0.6
# With the body cut at one edge, its silhouette's centroid is off the midline, toward the kept side. A
# component straddling it is two lungs only when at least this share of its axial slices hold two
# blobs side by side, after at most MAX_JUNCTION_EROSIONS in-plane erosions (P001's touching lungs part
# after 0-11 on each slice); a lone lung's slices keep one blob, or front and back pieces of a crescent.
SIDE_BY_SIDE_SLICE_SHARE = 0.5
MAX_JUNCTION_EROSIONS = 12
# A cut body is one half of a chest when what the scan keeps is narrower than deep: a whole chest is
# wider than deep (P001, its edges cut by a narrow field of view: 1.49; with 67 mm more cut off one
# side: 1.23), one half of it narrower (P001's left and right halves: 0.75, 0.77). Measured on the
# patient's largest body component (not the couch), on up to SHAPE_SAMPLE_SLICES lung slices.
HALF_CHEST_MAX_WIDTH_TO_DEPTH = 1.0
SHAPE_SAMPLE_SLICES = 20
# Radius of the per-slice rolling-ball closing that puts subpleural consolidation back into
# the lung (see recover_dense_border); bites wider than about 2x this are only partly closed.
BORDER_CLOSING_RADIUS_MM = 15.0
# Largest axial hole (mm^2) filled slice by slice: vessels and bronchi, not a diaphragm dome.
MAX_SLICE_HOLE_MM2 = 400.0
# HU range of tissue the closing may add: denser than aerated lung, lighter than bone.
DENSE_LESION_HU = (-700.0, 200.0)
# Central airways (trachea, main and lobar bronchi): air lumen below AIRWAY_LUMEN_HU (lumen
# -1000 with partial-volume edges; aerated lung is about -850) of this cross-section (mm^2),
# walled by tissue: at least AIRWAY_WALL_FRACTION of a ring AIRWAY_WALL_MM wide around the lumen
# is denser than AIRWAY_WALL_HU (a dark lung pocket is ringed by lung); centred in the middle
# band of the slice's lungs.
AIRWAY_LUMEN_HU = -900.0
AIRWAY_AREA_MM2 = (40.0, 700.0)
AIRWAY_WALL_MM = 2.5
AIRWAY_WALL_HU = -500.0
AIRWAY_WALL_FRACTION = 0.35
AIRWAY_CENTRAL_BAND = (0.3, 0.7)


def _holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The background's components of ``mask`` (face-connected) and, per component label, whether it is a
    hole: not connected to the array's border (``ndi.binary_fill_holes``'s rule).

    One labelling instead of ``binary_fill_holes``' dilation iterated until stable (P001's lungs: 0.2
    instead of 1.5 s in 3-D). The caller passes the mask's box grown by one voxel: outside it lies only background
    connected to the border.
    """
    background, count = ndi.label(~mask)
    is_hole = np.ones(count + 1, dtype=bool)
    for axis in range(mask.ndim):
        for end in (0, -1):
            is_hole[np.take(background, end, axis=axis)] = False
    is_hole[0] = False  # the mask itself
    return background, is_hole


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes(mask)`` with its default connectivity: background not connected to the
    array's border through faces becomes foreground."""
    out = np.array(mask, dtype=bool)
    if out.any():
        box = bounding_box(out, pad=1)
        background, is_hole = _holes(out[box])
        out[box] |= is_hole[background]
    return out


def fill_holes_per_slice(mask: np.ndarray, max_hole_pixels: int | None = None) -> np.ndarray:
    """Fill holes of a binary mask slice by slice (axial): vessels and airways inside a lung.

    With ``max_hole_pixels`` only holes up to that area are filled: the dome of the liver or of
    the heart, ringed by lung in a few axial slices, is a large 2-D hole that is not lung.
    """
    out = np.array(mask, dtype=bool)
    for z in range(out.shape[0]):
        if not out[z].any():
            continue
        box = bounding_box(out[z], pad=1)
        background, is_hole = _holes(out[z][box])
        if max_hole_pixels is not None:
            is_hole &= np.bincount(background.ravel(), minlength=is_hole.size) <= max_hole_pixels
        out[z][box] |= is_hole[background]
    return out


def largest_components(mask: np.ndarray, keep: int) -> list[np.ndarray]:
    """The ``keep`` largest connected components (6-connectivity in 3-D), largest first."""
    labels, count = ndi.label(mask)
    if count == 0:
        return []
    sizes = label_sizes(labels, count)[1:]
    order = np.argsort(sizes)[::-1][:keep]
    return [labels == (index + 1) for index in order]


def _in_plane_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the background within each axial slice, float32: the lungs touch side by side,
    and a 3-D transform costs 20 bytes a voxel (float64 plus its int32 feature transform)."""
    distance = np.zeros(mask.shape, dtype=np.float32)
    for z in range(mask.shape[0]):
        if mask[z].any():
            distance[z] = ndi.distance_transform_edt(mask[z])
    return distance


def _in_plane_erosion_depth(mask: np.ndarray, cap: int) -> np.ndarray:
    """Each voxel's city-block distance to its slice's background (the outside of the array counts as
    background, as for ``binary_erosion``), capped at ``cap``, uint8.

    ``depth > k`` is ``mask`` after ``k`` in-plane erosions by the 4-neighbour cross (``k < cap``): one
    distance transform a slice instead of ``k`` erosions of the volume.
    """
    depth = np.zeros(mask.shape, dtype=np.uint8)
    for z in range(mask.shape[0]):
        if mask[z].any():
            distance = ndi.distance_transform_cdt(np.pad(mask[z], 1), metric="taxicab")[1:-1, 1:-1]
            depth[z] = np.minimum(distance, cap)
    return depth


def _split_touching_lungs(
    component: np.ndarray, max_erosions: int = MAX_JUNCTION_EROSIONS
) -> tuple[np.ndarray, np.ndarray] | None:
    """Split one component holding both lungs at its thinnest junction.

    Erodes until the component falls apart into two sizeable parts, then grows those seeds back
    over the original component by a watershed on the distance map, so the cut follows the
    narrow anterior/posterior junction line rather than a straight midline.
    """
    # All of it on the component's box: the whole volume took 9.8 GB for 592 thin slices of P001.
    box = bounding_box(component, pad=1)
    inside = component[box]
    # erode in-plane only (lungs touch side by side): k erosions leave the voxels deeper than k
    erosion_depth = _in_plane_erosion_depth(inside, cap=max_erosions + 1)
    for erosions in range(1, max_erosions + 1):
        parts, count = ndi.label(erosion_depth > erosions)
        if count < 2:
            continue
        sizes = label_sizes(parts, count)[1:]
        first, second = np.argsort(sizes)[::-1][:2] + 1  # the two largest, as largest_components orders them
        if sizes[second - 1] >= MIN_SECOND_LUNG_FRACTION * sizes[first - 1]:
            markers = (parts == first).astype(np.int32)
            markers[parts == second] = 2
            del parts, erosion_depth
            depth = _in_plane_distance(inside)
            grown = watershed(np.negative(depth, out=depth), markers, mask=inside)
            halves = []
            for label in (1, 2):
                half = np.zeros_like(component)
                half[box] = grown == label
                halves.append(half)
            return halves[0], halves[1]
    return None


def _split_at_midline(component: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last resort: cut each slice at the x where the mask is thinnest between its two halves."""
    first = np.zeros_like(component)
    for z in range(component.shape[0]):
        columns = component[z].sum(axis=0)
        xs = np.nonzero(columns)[0]
        if xs.size == 0:
            continue
        lo, hi = xs[0] + (xs[-1] - xs[0]) // 3, xs[0] + 2 * (xs[-1] - xs[0]) // 3
        cut = lo + int(np.argmin(columns[lo : hi + 1])) if hi > lo else (xs[0] + xs[-1]) // 2
        first[z, :, :cut] = component[z, :, :cut]
    return first, component & ~first


def body_midline_x(hu: np.ndarray, slices: np.ndarray | None = None) -> float | None:
    """x (in voxels) of the body's midline: the centroid of its silhouette (HU > ``BODY_HU``).

    The silhouette is filled row by row, so both lungs, aerated or consolidated, weigh as body and
    a dense lung does not pull the midline to its side. Only ``slices`` (z indices; default all) are
    read, one at a time, so no volume-sized mask is made. None when no voxel is body.
    """
    weighted, total = 0.0, 0
    for z in range(hu.shape[0]) if slices is None else slices:
        body = hu[z] > BODY_HU
        rows = body.any(axis=1)
        first = np.argmax(body[rows], axis=1)
        last = body.shape[1] - 1 - np.argmax(body[rows, ::-1], axis=1)
        width = last - first + 1
        weighted += float(((first + last) / 2 * width).sum())
        total += int(width.sum())
    return weighted / total if total else None


def body_cut_sides(hu: np.ndarray, slices: np.ndarray) -> tuple[bool, bool]:
    """Whether the field of view cuts the body at the patient's right (x = 0 edge) and at the
    patient's left (last column) on at least half of ``slices`` (see ``CUT_EDGE_ROW_SHARE``)."""
    cut = np.zeros(2, dtype=int)
    for z in slices:
        body = hu[z] > BODY_HU
        rows = int(body.any(axis=1).sum())
        if rows:
            cut += [
                body[:, 0].sum() >= CUT_EDGE_ROW_SHARE * rows,
                body[:, -1].sum() >= CUT_EDGE_ROW_SHARE * rows,
            ]
    n = max(len(slices), 1)
    return bool(cut[0] >= n / 2), bool(cut[1] >= n / 2)


def _side_by_side(first: np.ndarray, second: np.ndarray) -> bool:
    """Two 2-D blobs lie side by side: their x ranges overlap by under half the narrower one's width."""
    x_first, x_second = np.flatnonzero(first.any(axis=0)), np.flatnonzero(second.any(axis=0))
    overlap = min(x_first[-1], x_second[-1]) - max(x_first[0], x_second[0]) + 1
    return overlap < 0.5 * min(x_first.size, x_second.size)


def _holds_two_lungs_side_by_side(component: np.ndarray) -> bool:
    """Whether most axial slices of ``component`` hold two sizeable blobs side by side."""
    inside = component[bounding_box(component, pad=1)]  # slices of the lungs' box, not of the whole image
    slices = np.flatnonzero(inside.any(axis=(1, 2)))
    two = 0
    for z in slices:
        section = inside[z]
        for _ in range(MAX_JUNCTION_EROSIONS + 1):
            blobs = largest_components(section, keep=2)
            if len(blobs) == 2 and blobs[1].sum() >= MIN_SECOND_LUNG_FRACTION * blobs[0].sum():
                two += _side_by_side(*blobs)
                break
            section = ndi.binary_erosion(section)
    return two >= SIDE_BY_SIDE_SLICE_SHARE * len(slices)


def body_width_to_depth(hu: np.ndarray, slices: np.ndarray, spacing_xy_mm: tuple[float, float]) -> float:
    """Median, over up to ``SHAPE_SAMPLE_SLICES`` of ``slices``, of the width over the depth (mm) of the
    slice's largest body component (the patient, not the couch). Inf when no slice has body."""
    ratios = []
    for z in slices[:: max(1, len(slices) // SHAPE_SAMPLE_SLICES)]:
        patient = largest_components(hu[z] > BODY_HU, keep=1)
        if patient:
            rows, columns = bounding_box(patient[0])
            depth_mm = (rows.stop - rows.start) * spacing_xy_mm[1]
            ratios.append((columns.stop - columns.start) * spacing_xy_mm[0] / depth_mm)
    return float(np.median(ratios)) if ratios else float("inf")


def half_chest_side(hu: np.ndarray, slices: np.ndarray, spacing_xy_mm: tuple[float, float]) -> int | None:
    """``RIGHT_LUNG``/``LEFT_LUNG``: the side of the patient a scan of one half of the chest leaves out,
    when the field of view cuts the body on that side only and what it keeps is narrower than deep
    (``HALF_CHEST_MAX_WIDTH_TO_DEPTH``); else None. A patient lying off-centre, the body cut at one
    edge but the chest kept nearly whole, is no half chest: its midline is near enough."""
    right_cut, left_cut = body_cut_sides(hu, slices)
    if (
        right_cut == left_cut
        or body_width_to_depth(hu, slices, spacing_xy_mm) >= HALF_CHEST_MAX_WIDTH_TO_DEPTH
    ):
        return None
    return RIGHT_LUNG if right_cut else LEFT_LUNG


def _right_share(component: np.ndarray, midline_x: float) -> float:
    """Share of the component's voxels on the patient's right of the midline (smaller x)."""
    columns = component.sum(axis=(0, 1))
    n_right_columns = int(np.clip(np.ceil(midline_x), 0, columns.size))  # the columns x < midline_x
    return float(columns[:n_right_columns].sum() / max(columns.sum(), 1))


def _by_mean_x(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, left): the right lung is the one at smaller x."""
    mean_x_first = np.nonzero(first)[2].mean() if first.any() else np.inf
    mean_x_second = np.nonzero(second)[2].mean() if second.any() else np.inf
    return (first, second) if mean_x_first <= mean_x_second else (second, first)


def _is_other_lung(first: np.ndarray, second: np.ndarray, midline_x: float) -> bool:
    """Whether the small component ``second`` lies across the midline from ``first`` (a piece of the
    other lung, not debris straddling the midline)."""
    first_right = _right_share(first, midline_x) >= 0.5
    second_right = _right_share(second, midline_x)
    return (1.0 - second_right if first_right else second_right) >= OTHER_SIDE_SHARE


def _assign_sides(
    parts: list[np.ndarray], midline_x: float, cut_side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) masks from the largest components, largest first."""
    first = parts[0]
    second = parts[1] if len(parts) > 1 else None
    sizeable = second is not None and second.sum() >= MIN_SECOND_LUNG_FRACTION * first.sum()
    if sizeable:
        # two lungs apart, the usual case: both are kept whatever the midline says, since a
        # midline misplaced by the couch or an arm must never cost a whole lung
        return _by_mean_x(first, second)
    share = _right_share(first, midline_x)
    straddles = min(share, 1.0 - share) >= MIN_SPLIT_SIDE_SHARE
    if straddles and cut_side is not None and not _holds_two_lungs_side_by_side(first):
        # the body is cut at one edge, so the midline is off toward the kept side: a lone lung
        # straddling it lies on the side the field of view keeps (a scan of the left half: left lung)
        empty = np.zeros_like(first)
        return (empty, first) if cut_side == RIGHT_LUNG else (first, empty)
    if straddles:
        # both lungs in one component (touching at the junction lines): cut it
        split = _split_touching_lungs(first)
        return _by_mean_x(*(split if split is not None else _split_at_midline(first)))
    # a single lung: it keeps its own side, the other label stays empty unless a piece of the
    # other lung lies across the midline (an empty lung is reported as "not measured")
    other = (
        second if second is not None and _is_other_lung(first, second, midline_x) else np.zeros_like(first)
    )
    return (first, other) if share >= 0.5 else (other, first)


def label_left_right(
    lung_mask: np.ndarray, midline_x: float | None = None, cut_side: int | None = None
) -> np.ndarray:
    """Turn a binary lung mask into labels 1 = right lung, 2 = left lung.

    Keeps the two largest 3-D components. Two sizeable ones are the two lungs (the right one at
    smaller x), whatever the midline. One component is split only when it crosses the midline (touching lungs, see
    ``MIN_SPLIT_SIDE_SHARE``); a single lung (after pneumonectomy, a scan of one side, a lung the
    stage missed) gets its side's label and the other label stays empty, or holds a small piece
    lying across the midline (``OTHER_SIDE_SHARE``).

    Args:
        lung_mask: binary ``(z, y, x)`` mask in LPS display orientation (patient's right at small x).
        midline_x: x (voxels) of the body's midline (``body_midline_x``); None takes the
            image's centre, right for scans centred on the patient.
        cut_side: ``RIGHT_LUNG`` or ``LEFT_LUNG`` when the scan shows one half of the chest and leaves
            out that side (``half_chest_side``): a lone lung straddling the midline then lies on the
            other side, unless its slices show two lungs side by side.
    """
    mask = np.asarray(lung_mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.uint8)
    parts = largest_components(mask, keep=2)
    if not parts:
        return labels
    right, left = _assign_sides(parts, (mask.shape[2] - 1) / 2 if midline_x is None else midline_x, cut_side)
    labels[right] = RIGHT_LUNG
    labels[left] = LEFT_LUNG
    return labels


def _close_mm(mask: np.ndarray, radius_mm: float, spacing_yx_mm: tuple[float, float]) -> np.ndarray:
    """Morphological closing with a disk of ``radius_mm`` through distance maps.

    Exact for a Euclidean disk, in physical units, and its cost does not grow with the radius.
    """
    pad = int(np.ceil(radius_mm / min(spacing_yx_mm))) + 2
    padded = np.pad(mask, pad)
    dilated = ndi.distance_transform_edt(~padded, sampling=spacing_yx_mm) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=spacing_yx_mm) > radius_mm
    return closed[pad:-pad, pad:-pad] | mask


def recover_dense_border(
    lungs: np.ndarray,
    hu: np.ndarray,
    spacing_xy_mm: tuple[float, float],
    radius_mm: float = BORDER_CLOSING_RADIUS_MM,
) -> np.ndarray:
    """Put dense subpleural consolidation back into each lung (per-slice rolling-ball closing).

    A lung stage that thresholds or learned aerated lung leaves a bite where consolidation
    (-100…+50 HU) touches the pleura, and the infection then goes uncounted. Closing each
    lung's slice with a ball of ``radius_mm`` fills such bites (a ball of radius r dips only
    r - sqrt(r^2 - (w/2)^2) into a bite of width w: 2 mm for w = 15 mm at r = 15 mm); only
    voxels with lesion-like HU (``DENSE_LESION_HU``) not claimed by the other lung are added,
    so ribs and the other lung stay out. The mediastinal concavity is far wider than the ball.
    """
    spacing_yx = (float(spacing_xy_mm[1]), float(spacing_xy_mm[0]))
    out = lungs.copy()
    for label in (RIGHT_LUNG, LEFT_LUNG):
        for z in range(lungs.shape[0]):
            lung_full = lungs[z] == label
            ys, xs = np.nonzero(lung_full)
            if ys.size == 0:
                continue
            # Work on the lung's bounding box only: closing never reaches beyond it.
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            lung = lung_full[y0:y1, x0:x1]
            closed = _close_mm(lung, radius_mm, spacing_yx)
            region = out[z, y0:y1, x0:x1]
            hu_box = hu[z, y0:y1, x0:x1]  # lesion-like HU on the box only, not a volume-sized mask
            lesion_like = (hu_box >= DENSE_LESION_HU[0]) & (hu_box <= DENSE_LESION_HU[1])
            added = closed & ~lung & lesion_like & (region == 0)
            region[added] = label
    return out


def remove_central_airways(
    lungs: np.ndarray, hu: np.ndarray, spacing_xy_mm: tuple[float, float]
) -> np.ndarray:
    """Take the trachea and the main/lobar bronchi (lumen and wall) out of the lung labels.

    Lung stages often include the central airways (their lumen is as dark as lung). Radiologists'
    lung masks exclude them, and they inflate the lung volume. An airway is told apart from dark
    lung by its wall: a lumen walled by tissue (``AIRWAY_WALL_FRACTION`` of the surrounding ring
    denser than ``AIRWAY_WALL_HU``) in the middle band of the slice's lungs; a bulla or
    low-density lung is ringed by lung. Lumens smaller than ``AIRWAY_AREA_MM2[0]`` (peripheral bronchi, air
    bronchograms) stay lung.
    """
    spacing_yx = (float(spacing_xy_mm[1]), float(spacing_xy_mm[0]))
    pixel_mm2 = spacing_yx[0] * spacing_yx[1]
    # the ring reaches AIRWAY_WALL_MM beyond the lumen: the lungs' box grown by that holds every ring
    reach = tuple(int(np.ceil(AIRWAY_WALL_MM / step)) + 1 for step in spacing_yx)
    out = lungs.copy()
    for z in range(lungs.shape[0]):
        in_lung = lungs[z] > 0
        if not in_lung.any():
            continue
        lung_box = bounding_box(in_lung, pad=max(2, *reach))  # 2: the opening's reach stays inside too
        in_box, hu_box, out_box = in_lung[lung_box], hu[z][lung_box], out[z][lung_box]
        xs = np.nonzero(in_box.any(axis=0))[0]
        band = xs[0] + np.array(AIRWAY_CENTRAL_BAND) * (xs[-1] - xs[0])
        lumen = ndi.binary_opening((hu_box < AIRWAY_LUMEN_HU) & in_box)
        components, _count = ndi.label(lumen)
        areas = np.bincount(components.ravel()) * pixel_mm2
        for index, box in enumerate(ndi.find_objects(components), start=1):
            # size and place first: most lumen components are specks of dark lung
            centre_x = (box[1].start + box[1].stop - 1) / 2
            if not (
                AIRWAY_AREA_MM2[0] <= areas[index] <= AIRWAY_AREA_MM2[1] and band[0] <= centre_x <= band[1]
            ):
                continue
            near = tuple(
                slice(max(0, part.start - grow), part.stop + grow)
                for part, grow in zip(box, reach, strict=True)
            )
            component = components[near] == index
            hu_near = hu_box[near]
            distance = ndi.distance_transform_edt(~component, sampling=spacing_yx)
            ring = (distance > 0) & (distance <= AIRWAY_WALL_MM)
            if (hu_near[ring] > AIRWAY_WALL_HU).mean() >= AIRWAY_WALL_FRACTION:
                # lumen, its partial-volume edge and the wall; aerated lung beyond stays
                edge = ring & (hu_near < AIRWAY_WALL_HU) & (distance <= max(spacing_yx) * 1.5)
                out_box[near][component | edge | (ring & (hu_near > AIRWAY_WALL_HU))] = 0
    return out


def postprocess_lungs(
    lung_mask: np.ndarray, hu: np.ndarray | None = None, spacing_xy_mm: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """Binary lung-stage output → right/left labels with holes filled, dense borders kept and
    central airways taken out.

    Holes closed in 3-D are filled whatever their size; per-slice holes only up to
    ``MAX_SLICE_HOLE_MM2`` (vessels, bronchi, small lesions), not an organ dome ringed by lung.
    With ``hu`` the sides are told apart at the body's midline (``body_midline_x``), else at the
    image's centre.
    """
    mask = fill_holes(lung_mask)
    max_hole = int(MAX_SLICE_HOLE_MM2 / (spacing_xy_mm[0] * spacing_xy_mm[1]))
    # The body's midline, not the image's centre, tells the sides apart: a patient need not lie
    # in the middle of the field of view. Read on the slices with lung only.
    lung_slices = np.flatnonzero(mask.any(axis=(1, 2)))
    midline = None if hu is None else body_midline_x(hu, lung_slices)
    half_chest = None if hu is None else half_chest_side(hu, lung_slices, spacing_xy_mm)
    labels = label_left_right(fill_holes_per_slice(mask, max_hole), midline, half_chest)
    if hu is not None:
        labels = remove_central_airways(recover_dense_border(labels, hu, spacing_xy_mm), hu, spacing_xy_mm)
    return labels


def restrict_to_lungs(infection: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Infection outside both lungs is not counted (and not shown)."""
    return (np.asarray(infection) > 0) & (np.asarray(lungs) > 0)


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 3-D connected components (26-connectivity) smaller than ``min_voxels``."""
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1:
        return mask
    labels, count = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return mask
    keep = label_sizes(labels, count) >= min_voxels
    keep[0] = False
    return keep[labels]
