"""Figures of masks on slices and their paired change against a bar, as the comparison scripts print them.

With 10-40 slices a difference of means says little without its spread: each row gets the mean
per-slice Dice change against the bar and that change's standard error (the scripts' rules are
written in both).
"""

from __future__ import annotations

import numpy as np

from napari_chsnet.models.metrics import dice, segmentation_metrics


def slice_figures(masks: list[np.ndarray], truths: list[np.ndarray], probabilities=None) -> dict:
    """Mean and pooled Dice, mean precision and recall, and every slice's Dice."""
    scores = segmentation_metrics(masks, truths, probabilities)
    return {
        "mean_dice": scores["mean"]["dice"],
        "pooled_dice": scores["pooled"]["dice"],
        "mean_precision": scores["mean"]["precision"],
        "mean_recall": scores["mean"]["recall"],
        "per_slice_dice": [dice(m, t) for m, t in zip(masks, truths, strict=True)],
    }


def paired_change(row: dict, bar: dict) -> tuple[float, float]:
    """Mean per-slice Dice change of ``row`` against ``bar`` and its standard error."""
    change = np.array(row["per_slice_dice"]) - np.array(bar["per_slice_dice"])
    return float(change.mean()), float(change.std(ddof=1) / np.sqrt(len(change)))


def add_paired_changes_and_print(results: dict[str, dict], bar: str) -> None:
    """Adds ``paired_change`` and ``paired_standard_error`` against ``results[bar]`` to every row, and
    prints one line per row."""
    width = max(len(name) for name in results) + 1
    for name, row in results.items():
        row["paired_change"], row["paired_standard_error"] = paired_change(row, results[bar])
        print(
            f"{name:{width}s} mean Dice {row['mean_dice']:.4f}  pooled {row['pooled_dice']:.4f}  "
            f"precision {row['mean_precision']:.4f}  recall {row['mean_recall']:.4f}  "
            f"vs {bar} {row['paired_change']:+.4f} ± {row['paired_standard_error']:.4f}"
        )
