"""Known answers of the lung post-processing on the phantom, whose true lungs are exact."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet.inference.postprocess import fill_holes_per_slice, largest_components, postprocess_lungs
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG

from .factory import small_phantom


def test_true_lungs_come_back_labelled_right_at_small_x(phantom):
    truth = phantom.lungs
    labels = postprocess_lungs(truth > 0, phantom.ct.hu, phantom.ct.geometry.spacing_mm[:2])
    assert np.nonzero(labels == RIGHT_LUNG)[2].mean() < np.nonzero(labels == LEFT_LUNG)[2].mean()
    # every true lung voxel keeps its own label ...
    assert np.array_equal(labels[truth > 0], truth[truth > 0])
    # ... and what is added is what per-slice hole filling encloses (here the right diaphragm dome, which
    # the phantom's axial slices ring with lung) or lesion-like HU at the border: nothing else
    added = (labels > 0) & (truth == 0)
    enclosed = fill_holes_per_slice(truth > 0) & (truth == 0)
    assert (added & ~enclosed).sum() <= 10
    assert added.sum() < 0.1 * (truth > 0).sum()


def test_touching_lungs_are_split_into_right_and_left():
    touching = small_phantom(seed=3, shape=(16, 96, 96), lungs_touch_anteriorly=True)
    truth = touching.lungs
    assert len(largest_components(truth > 0, keep=2)) == 1, "the phantom's lungs should form one component"
    labels = postprocess_lungs(truth > 0)
    agreement = (labels[truth > 0] == truth[truth > 0]).mean()
    assert agreement > 0.99, f"only {agreement:.1%} of the lung voxels got their own side's label"


@pytest.mark.xfail(
    strict=True,
    reason="postprocess.recover_dense_border closes bites up to ~2 x 10 mm; the phantom's subpleural "
    "consolidation is a crescent along the pleura that leaves no bite to close (about 1 % is recovered). "
    "Reported to the lead; this test turns green when the recovery handles it.",
)
def test_subpleural_consolidation_missed_by_the_lung_stage_is_put_back(phantom):
    """A lung stage that learned aerated lung misses consolidation; post-processing restores it."""
    consolidation = phantom.consolidation & (phantom.lungs > 0)
    assert consolidation.sum() > 50, "the phantom should have consolidation to test with"
    aerated = (phantom.lungs > 0) & ~consolidation
    recovered = postprocess_lungs(aerated, phantom.ct.hu, phantom.ct.geometry.spacing_mm[:2])
    kept = consolidation[recovered > 0].sum() / consolidation.sum()
    assert kept >= 0.95, f"only {kept:.1%} of the consolidation is inside the lungs"
