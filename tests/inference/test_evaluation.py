"""Scoring a volume's segmentation against a reference mask (inference/evaluation.py) and the metrics
accumulated scan by scan (models/metrics.MetricsAccumulator)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.factory import small_phantom
from napari_chsnet.inference.evaluation import lung_sides, patient_x_mm, score_volume
from napari_chsnet.inference.pipeline import SegmentationResult
from napari_chsnet.inference.run_info import RunInfo
from napari_chsnet.io.volume import Geometry
from napari_chsnet.models.metrics import MetricsAccumulator, segmentation_metrics

X_FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # column index grows towards the patient's right


@pytest.fixture(scope="module")
def phantom():
    return small_phantom()


def _result(lungs, infection, probability=None) -> SegmentationResult:
    probability = infection.astype(np.float32) if probability is None else probability
    return SegmentationResult(
        lungs, infection, probability, RunInfo(model="chsnet", device="cpu", runtime_s=0.0), "cpu"
    )


def test_patient_x_follows_the_grid_s_direction_and_origin():
    geometry = Geometry((0.5, 2.0, 3.0), (10.0, 0.0, 0.0), X_FLIPPED)
    x = patient_x_mm((np.array([0, 1]), np.array([0, 4]), np.array([2, 2])), geometry)
    assert x.tolist() == [9.0, 9.0]  # 10 - 2 * 0.5; y and z do not move x
    assert patient_x_mm((np.array([0]),) * 2 + (np.array([4]),), Geometry((0.5, 1, 1))).tolist() == [2.0]


def test_lung_labels_are_told_apart_by_the_side_they_lie_on_not_by_their_value(phantom):
    swapped = np.where(phantom.lungs == 1, 7, np.where(phantom.lungs == 2, 3, 0)).astype(np.uint8)
    sides = lung_sides(swapped, phantom.ct.geometry)
    assert (sides.right_label, sides.left_label) == (7, 3)
    # stored with x running the other way (as a RAS-ordered array read without reorienting would be)
    mirrored = Geometry(phantom.ct.geometry.spacing_mm, direction=X_FLIPPED)
    assert (lung_sides(swapped[..., ::-1], mirrored).right_label) == 7


def test_a_map_whose_labels_are_not_one_lung_each_is_not_split(phantom):
    lungs_and_infection = np.where(phantom.infection > 0, 2, (phantom.lungs > 0).astype(np.uint8))
    sides = lung_sides(lungs_and_infection.astype(np.uint8), phantom.ct.geometry)
    assert not sides.found and sides.n_labels == 2 and "both sides" in sides.reason
    one_label = lung_sides((phantom.lungs > 0).astype(np.uint8), phantom.ct.geometry)
    assert not one_label.found and one_label.n_labels == 1


def test_scores_of_known_masks(phantom):
    """Right lung found whole, left lung half: Dice of both lungs and per side from the counts."""
    truth = phantom.lungs
    predicted = truth.copy()
    left = np.argwhere(truth == 2)
    half = left[: len(left) // 2]
    predicted[tuple(half.T)] = 0
    accumulator = MetricsAccumulator()
    geometry = phantom.ct.geometry
    score = score_volume(
        _result(predicted, phantom.infection),
        truth,
        geometry,
        "lungs",
        accumulator,
        lung_sides(truth, geometry),
    )
    n_true, n_pred = int((truth > 0).sum()), int((predicted > 0).sum())
    assert score.metrics["dice"] == pytest.approx(2 * n_pred / (n_true + n_pred))
    assert score.right_lung_dice == 1.0
    assert score.left_lung_dice == pytest.approx(2 * (len(left) - len(half)) / (2 * len(left) - len(half)))
    assert score.reference_ml == pytest.approx(n_true * geometry.voxel_volume_ml)
    assert score.segmented_ml == pytest.approx(n_pred * geometry.voxel_volume_ml)
    assert score.metrics["auc"] is None  # no lung probability

    infection = score_volume(
        _result(truth, phantom.infection), phantom.infection, geometry, "infection", accumulator
    )
    assert infection.metrics["dice"] == 1.0 and infection.metrics["auc"] == 1.0
    assert infection.right_lung_dice is None
    with pytest.raises(ValueError, match="target"):
        score_volume(_result(truth, phantom.infection), truth, geometry, "vessels", accumulator)


def test_the_accumulator_gives_segmentation_metrics_figures_pair_by_pair():
    rng = np.random.default_rng(0)
    truths = [rng.random((4, 9, 7)) > 0.6 for _ in range(3)]
    probabilities = [np.clip(t * 0.6 + rng.random(t.shape) * 0.5, 0, 1) for t in truths]
    predictions = [p >= 0.5 for p in probabilities]
    accumulator = MetricsAccumulator()
    for prediction, truth, probability in zip(predictions, truths, probabilities, strict=True):
        accumulator.add(prediction, truth, probability)
    assert accumulator.result() == segmentation_metrics(predictions, truths, probabilities)
    accumulator.add(predictions[0], truths[0])  # one pair without probabilities: no pooled AUC
    result = accumulator.result()
    assert result["pooled"]["auc"] is None and result["mean"]["auc"] is not None and result["n_images"] == 4
    with pytest.raises(ValueError, match="no images"):
        MetricsAccumulator().result()


def test_a_pair_that_fails_leaves_the_figures_as_they_were(monkeypatch):
    """A scan that runs out of memory while its AUC is binned is a failed scan: its voxels must not
    stay in the pooled counts (they did, while mean and AUC left it out)."""
    import napari_chsnet.models.metrics as metrics_module

    truth = np.zeros((3, 8, 8), bool)
    truth[1, 2:5, 2:5] = True
    accumulator = MetricsAccumulator()
    accumulator.add(truth, truth, truth.astype(np.float32))
    before = accumulator.result()

    def runs_out(*_args):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(metrics_module, "_auc_histograms", runs_out)
    with pytest.raises(MemoryError):
        accumulator.add(np.ones_like(truth), truth, truth.astype(np.float32))
    assert accumulator.result() == before
