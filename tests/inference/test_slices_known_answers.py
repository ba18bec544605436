"""Single lung-cropped 8-bit slices (COVID-SemiSeg style) with a scripted lung stage whose answer is
known: the lung mask returned is the post-processed one, at the nominal 0.7 mm pixel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet.inference.postprocess import MAX_SLICE_HOLE_MM2
from napari_chsnet.inference.slices import segment_cropped_slice

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
