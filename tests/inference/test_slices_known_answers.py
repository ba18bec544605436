"""Single 8-bit slices with a scripted lung stage whose answer is known: the lung mask returned is the
post-processed one, at the nominal 0.7 mm pixel; a whole axial slice (not cropped to the lungs, as
COVID-SemiSeg's are) has its infection read on the lungs' box."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_chsnet.inference.postprocess import MAX_SLICE_HOLE_MM2
from napari_chsnet.inference.preprocessing import CropBox, lung_crop_box
from napari_chsnet.inference.slices import LUNG_CROPPED_COVERAGE, segment_cropped_slice

SIDE = 120
LUNG_GREY = 60  # about -790 HU through the display window: aerated lung, no dense border to recover


class ScriptedLungStage:
    """Answers ``probability`` (1 on the lungs) whatever the slice."""

    def __init__(self, probability: np.ndarray) -> None:
        self.probability = probability.astype(np.float32)

    def predict(self, unit_slices: np.ndarray) -> np.ndarray:
        assert unit_slices.shape == (1, *self.probability.shape)
        return self.probability[None]


def _two_lungs_with_a_hole(hole_side: int) -> np.ndarray:
    """Two lungs of 80 x 48 px; the right one (image left) with a square hole the network missed."""
    probability = np.zeros((SIDE, SIDE))
    probability[20:100, 8:56] = 1
    probability[20:100, 64:112] = 1
    probability[40 : 40 + hole_side, 20 : 20 + hole_side] = 0
    return probability


def _lungs(hole_side: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.full((SIDE, SIDE), LUNG_GREY, np.uint8)
    probability = _two_lungs_with_a_hole(hole_side)
    mask, returned = segment_cropped_slice(pixels, ScriptedLungStage(probability), None, target="lungs")
    np.testing.assert_array_equal(returned, probability)  # the network's own probability
    return mask, probability


def test_the_lung_mask_of_a_slice_is_post_processed_not_the_thresholded_probability():
    """A 10 x 10 px hole (a vessel the lung network missed, 49 mm²) is filled, as in a volume."""
    mask, probability = _lungs(hole_side=10)
    assert mask.dtype == bool and not probability[40:50, 20:30].any()
    np.testing.assert_array_equal(mask, _two_lungs_with_a_hole(hole_side=0) > 0)


@pytest.mark.parametrize(("hole_side", "filled"), [(26, True), (30, False)])
def test_holes_are_measured_at_the_nominal_0_7_mm_pixel(hole_side, filled):
    """At 0.7 mm a 26 px square hole is 331 mm² (a vessel: filled, under ``MAX_SLICE_HOLE_MM2`` = 400),
    a 30 px one 441 mm² (an organ dome: kept out). At 1 mm the 26 px hole would be 676 mm²."""
    assert MAX_SLICE_HOLE_MM2 == 400.0
    assert ((hole_side * 0.7) ** 2 < MAX_SLICE_HOLE_MM2) == filled  # COVID-SemiSeg's nominal pixel
    mask, probability = _lungs(hole_side)
    hole = (slice(40, 40 + hole_side), slice(20, 20 + hole_side))
    assert mask[hole].all() if filled else not mask[hole].any()
    np.testing.assert_array_equal(mask[probability > 0], True)  # the lungs themselves kept


class RecordingInfectionStage:
    """Marks the box it is given as infection, so the box read can be seen in the mask."""

    def predict(self, unit_slices, lungs, box):
        self.box = box
        mask = np.zeros(unit_slices.shape, bool)
        mask[:, box.y0 : box.y1, box.x0 : box.x1] = True
        return SimpleNamespace(mask=mask, probability=mask.astype(np.float32))


@pytest.mark.parametrize(
    ("lung_rows", "lung_cols", "reads_box"),
    [((6, 114), (4, 116), False), ((40, 80), (30, 90), True)],
    ids=["cropped to the lungs", "whole slice"],
)
def test_a_whole_slice_is_read_on_its_lungs_box_a_cropped_one_whole(lung_rows, lung_cols, reads_box):
    """Known answer: lungs whose box (with the volume path's 4 % margin) covers 0.98 of the slice (a slice
    cropped to the lungs) leave the infection stage the whole slice; lungs covering 0.21 (a whole axial
    slice) give it that box, as a volume's slice gets, and only with ``whole_slices``."""
    probability = np.zeros((SIDE, SIDE))
    probability[slice(*lung_rows), slice(*lung_cols)] = 1
    pixels = np.full((SIDE, SIDE), LUNG_GREY, np.uint8)
    lungs, _ = segment_cropped_slice(pixels, ScriptedLungStage(probability), None, target="lungs")
    box = lung_crop_box(lungs)
    coverage = box.height * box.width / SIDE**2
    assert (coverage < LUNG_CROPPED_COVERAGE) == reads_box
    for whole_slices in (False, True):
        stage = RecordingInfectionStage()
        segment_cropped_slice(pixels, ScriptedLungStage(probability), stage, whole_slices=whole_slices)
        expected = box if whole_slices and reads_box else CropBox.full(SIDE, SIDE)
        assert stage.box == expected
