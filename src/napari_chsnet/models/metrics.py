"""Segmentation metrics over binary masks (numpy), as the papers report them.

Each metric comes from the confusion counts TP, FP, TN, FN of a mask pair. Where a ratio is 0/0 the empty
cases are defined so that a correct "nothing there" scores 1:

- dice ``2TP / (2TP + FP + FN)`` and jaccard ``TP / (TP + FP + FN)``: 1 when both masks are empty;
- precision ``TP / (TP + FP)`` with nothing predicted: 1 if nothing was to be found (FN = 0), else 0;
- recall (sensitivity) ``TP / (TP + FN)`` with nothing to find: 1 if nothing was predicted (FP = 0), else 0;
- specificity ``TN / (TN + FP)`` with no background: 1 if FN = 0, else 0;
- accuracy ``(TP + TN) / n`` is always defined;
- auc (area under the ROC curve, needs probabilities) is undefined (``None``) when the truth holds one class
  only; per-image means skip such images and are ``None`` if no image has both classes.

:func:`segmentation_metrics` reports the mean over images (how Inf-Net and the papers report) and the value
pooled over all pixels; it is what ``chsnet evaluate --json`` prints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("dice", "jaccard", "precision", "recall", "specificity", "accuracy", "auc")
_AUC_BINS = 65536
_AUC_CHUNK = 1 << 22  # pixels binned at a time (a 4M-pixel chunk's copies take about 80 MB)


def confusion_counts(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int, int]:
    """``(TP, FP, TN, FN)`` of two same-shape masks (non-zero = positive)."""
    pred, true = _as_bool(pred, true)
    true_pos = int(np.count_nonzero(pred & true))
    false_pos = int(np.count_nonzero(pred)) - true_pos
    false_neg = int(np.count_nonzero(true)) - true_pos
    return true_pos, false_pos, pred.size - true_pos - false_pos - false_neg, false_neg


def _as_bool(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"predicted mask {pred.shape} and true mask {true.shape} must have the same shape")
    return pred.astype(bool, copy=False), true.astype(bool, copy=False)


def _ratio(numerator: int, denominator: int, empty_value: float) -> float:
    return numerator / denominator if denominator else empty_value


def _from_counts(true_pos: int, false_pos: int, true_neg: int, false_neg: int) -> dict[str, float]:
    total = true_pos + false_pos + true_neg + false_neg
    return {
        "dice": _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg, 1.0),
        "jaccard": _ratio(true_pos, true_pos + false_pos + false_neg, 1.0),
        "precision": _ratio(true_pos, true_pos + false_pos, 1.0 if false_neg == 0 else 0.0),
        "recall": _ratio(true_pos, true_pos + false_neg, 1.0 if false_pos == 0 else 0.0),
        "specificity": _ratio(true_neg, true_neg + false_pos, 1.0 if false_neg == 0 else 0.0),
        "accuracy": _ratio(true_pos + true_neg, total, 1.0),
    }


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice coefficient (F1), 1 when both masks are empty."""
    return _from_counts(*confusion_counts(pred, true))["dice"]


def _auc_histograms(true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of positive and negative pixels per probability bin (probabilities quantised to 16 bits),
    binned ``_AUC_CHUNK`` pixels at a time: a whole CT volume's float64 and int64 copies would take
    six times the probability map's memory (0.9 GB for 148 slices of 512²)."""
    true = np.asarray(true).reshape(-1)
    probs = np.asarray(probs).reshape(-1)
    if true.shape != probs.shape:
        raise ValueError(
            f"mask ({true.size} pixels) and probabilities ({probs.size} pixels) must have the same size"
        )
    positives = np.zeros(_AUC_BINS, dtype=np.int64)
    negatives = np.zeros(_AUC_BINS, dtype=np.int64)
    for start in range(0, probs.size, _AUC_CHUNK):
        chunk = probs[start : start + _AUC_CHUNK].astype(np.float64)
        bins = np.clip(np.rint(chunk * (_AUC_BINS - 1)), 0, _AUC_BINS - 1).astype(np.int64)
        positive = true[start : start + _AUC_CHUNK].astype(bool, copy=False)
        positives += np.bincount(bins[positive], minlength=_AUC_BINS)
        negatives += np.bincount(bins[~positive], minlength=_AUC_BINS)
    return positives, negatives


def _auc_from_histograms(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    n_pos, n_neg = int(positives.sum()), int(negatives.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    # Mann-Whitney: P(score_pos > score_neg) + 0.5 P(equal), bin by bin.
    negatives_below = np.cumsum(negatives) - negatives
    wins = np.dot(positives.astype(np.float64), negatives_below + 0.5 * negatives)
    return float(wins / (n_pos * n_neg))


def auc(true: np.ndarray, probs: np.ndarray) -> float | None:
    """Area under the ROC curve of ``probs`` against the binary ``true`` mask; ``None`` for a one-class truth.

    Probabilities are quantised to 65536 levels (steps of 1.5e-5) so that whole volumes take O(n) time and
    little memory; ties count one half (Mann-Whitney U).
    """
    return _auc_from_histograms(*_auc_histograms(true, probs))


class MetricsAccumulator:
    """Metrics of masks given one pair at a time (a slice, or a whole volume): each pair's, their mean
    and the values pooled over all pixels, without keeping any pair's arrays (a batch of CT volumes
    would not fit in memory at once). :func:`segmentation_metrics` is the same over a list."""

    def __init__(self) -> None:
        self._per_item: list[dict[str, float | None]] = []
        self._totals = np.zeros(4, dtype=np.int64)
        self._positives = np.zeros(_AUC_BINS, dtype=np.int64)
        self._negatives = np.zeros(_AUC_BINS, dtype=np.int64)
        self._all_have_probabilities = True

    def add(
        self, pred: np.ndarray, true: np.ndarray, probs: np.ndarray | None = None
    ) -> dict[str, float | None]:
        """Score one pair (``probs`` for its AUC) and return its metrics. All is computed before any of
        it is added, so a pair that fails (out of memory) leaves the figures as they were."""
        counts = confusion_counts(pred, true)
        metrics: dict[str, float | None] = dict(_from_counts(*counts))
        histograms = None if probs is None else _auc_histograms(true, probs)
        metrics["auc"] = None if histograms is None else _auc_from_histograms(*histograms)
        self._totals += counts
        if histograms is None:
            self._all_have_probabilities = False
        else:
            self._positives += histograms[0]
            self._negatives += histograms[1]
        self._per_item.append(metrics)
        return metrics

    def result(self) -> dict:
        """``{"mean": {name: value}, "pooled": {name: value}, "per_image": [...], "n_images": n}``; the
        pooled AUC only when every pair came with probabilities."""
        if not self._per_item:
            raise ValueError("segmentation_metrics: no images given")
        mean: dict[str, float | None] = {
            name: float(np.mean([item[name] for item in self._per_item]))
            for name in METRIC_NAMES
            if name != "auc"
        }
        defined_auc = [item["auc"] for item in self._per_item if item["auc"] is not None]
        mean["auc"] = float(np.mean(defined_auc)) if defined_auc else None
        pooled: dict[str, float | None] = dict(_from_counts(*(int(count) for count in self._totals)))
        pooled["auc"] = (
            _auc_from_histograms(self._positives, self._negatives) if self._all_have_probabilities else None
        )
        per_image = [dict(item) for item in self._per_item]
        return {"mean": mean, "pooled": pooled, "per_image": per_image, "n_images": len(per_image)}


def segmentation_metrics(
    pred_masks: Sequence[np.ndarray] | np.ndarray,
    true_masks: Sequence[np.ndarray] | np.ndarray,
    probs: Sequence[np.ndarray] | np.ndarray | None = None,
) -> dict:
    """Metrics per image, averaged over images ("mean") and over all pixels at once ("pooled").

    Args:
        pred_masks: predicted binary masks, one per image (an array's first axis indexes the images).
        true_masks: ground-truth masks, same shapes.
        probs: optional probabilities in [0, 1], same shapes, for the AUC.

    Returns:
        ``{"mean": {name: value}, "pooled": {name: value}, "per_image": [{name: value}, ...], "n_images": n}``
        with the names of ``METRIC_NAMES`` (``per_image`` in the order given); ``auc`` is ``None``
        without probabilities or when undefined (see module docstring).
    """
    if len(pred_masks) != len(true_masks) or (probs is not None and len(probs) != len(pred_masks)):
        raise ValueError(
            f"segmentation_metrics: got {len(pred_masks)} predicted masks, {len(true_masks)} true masks"
            + ("" if probs is None else f" and {len(probs)} probability maps")
            + "; give one of each per image"
        )
    accumulator = MetricsAccumulator()
    for index in range(len(pred_masks)):
        accumulator.add(pred_masks[index], true_masks[index], None if probs is None else probs[index])
    return accumulator.result()
