"""Metrics against confusion counts worked out by hand, including the empty-mask conventions."""

import numpy as np
import pytest

from napari_chsnet.models import metrics

# pred [[1, 1], [0, 0]] vs true [[1, 0], [1, 0]]: TP = FP = FN = TN = 1.
PRED = np.array([[1, 1], [0, 0]], dtype=bool)
TRUE = np.array([[1, 0], [1, 0]], dtype=bool)
EMPTY = np.zeros((2, 2), dtype=bool)
FULL = np.ones((2, 2), dtype=bool)


def test_confusion_counts():
    assert metrics.confusion_counts(PRED, TRUE) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("pred", "true", "expected"),
    [
        (
            PRED,
            TRUE,
            {
                "dice": 0.5,
                "jaccard": 1 / 3,
                "precision": 0.5,
                "recall": 0.5,
                "specificity": 0.5,
                "accuracy": 0.5,
            },
        ),
        (
            EMPTY,
            EMPTY,
            {"dice": 1, "jaccard": 1, "precision": 1, "recall": 1, "specificity": 1, "accuracy": 1},
        ),
        (
            EMPTY,
            TRUE,
            {"dice": 0, "jaccard": 0, "precision": 0, "recall": 0, "specificity": 1, "accuracy": 0.5},
        ),
        (
            PRED,
            EMPTY,
            {"dice": 0, "jaccard": 0, "precision": 0, "recall": 0, "specificity": 0.5, "accuracy": 0.5},
        ),
        (FULL, FULL, {"dice": 1, "jaccard": 1, "precision": 1, "recall": 1, "specificity": 1, "accuracy": 1}),
        (
            PRED,
            FULL,
            {"dice": 2 / 3, "jaccard": 0.5, "precision": 1, "recall": 0.5, "specificity": 0, "accuracy": 0.5},
        ),
    ],
    ids=["mixed", "both-empty", "missed-all", "false-alarm", "all-foreground", "partial-on-full"],
)
def test_metrics_of_one_image(pred, true, expected):
    """The counts' formulas, and segmentation_metrics on one image (its mean and pooled values are the image's)."""
    from_counts = metrics._from_counts(*metrics.confusion_counts(pred, true))
    result = metrics.segmentation_metrics([pred], [true])
    assert metrics.dice(pred, true) == pytest.approx(expected["dice"])
    for name, value in expected.items():
        assert from_counts[name] == pytest.approx(value), name
        for kind in ("mean", "pooled"):
            assert result[kind][name] == pytest.approx(value), (kind, name)
        assert result["per_image"][0][name] == pytest.approx(value), name


def test_auc_by_pairs_and_ties():
    # Positives 0.9, 0.4; negatives 0.35, 0.8: 3 of 4 pairs ranked correctly.
    assert metrics.auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert metrics.auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert metrics.auc(np.array([0, 0]), np.array([0.1, 0.7])) is None


def test_segmentation_metrics_mean_and_pooled():
    probs = np.array([[[0.9, 0.6], [0.4, 0.1]], [[0.2, 0.2], [0.2, 0.2]]])
    result = metrics.segmentation_metrics(np.stack([PRED, EMPTY]), np.stack([TRUE, EMPTY]), probs)
    assert result["n_images"] == 2
    assert set(result["mean"]) == set(result["pooled"]) == set(metrics.METRIC_NAMES)
    # Per image: dice 0.5 and 1 (both empty) -> mean 0.75. Pooled: TP 1, FP 1, FN 1, TN 5.
    assert result["mean"]["dice"] == pytest.approx(0.75)
    assert result["pooled"]["dice"] == pytest.approx(0.5)
    assert result["pooled"]["accuracy"] == pytest.approx(6 / 8)
    assert result["pooled"]["specificity"] == pytest.approx(5 / 6)
    # Image 1: positives 0.9, 0.4 vs negatives 0.6, 0.1 -> 3/4; image 2 is one-class and skipped in the mean.
    assert result["mean"]["auc"] == pytest.approx(0.75)
    # Pooled: positives 0.9, 0.4 vs negatives 0.6, 0.1 and four of 0.2 -> (6 + 5) / 12.
    assert result["pooled"]["auc"] == pytest.approx(11 / 12)


def test_segmentation_metrics_without_probabilities_has_no_auc():
    result = metrics.segmentation_metrics([PRED], [TRUE])
    assert result["mean"]["auc"] is None and result["pooled"]["auc"] is None


def test_segmentation_metrics_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="got 2 predicted masks, 1 true masks"):
        metrics.segmentation_metrics([PRED, PRED], [TRUE])
    with pytest.raises(ValueError, match="same shape"):
        metrics.dice(PRED, np.zeros((3, 3)))
