"""Which way a folder of 2-D slices is turned: the quarter turn under which the lung stage is surest.

Datasets of single slices are often exported turned: COVID-SemiSeg's are rotated 90° (anterior on
the image's left), and read that way our models score far lower (CHS-Net round 2f, 10 validation
slices: mean Dice 0.666 upright against 0.768 turned back). The lung stage was trained on anterior-up
slices (±10° rotation and left-right flips, never quarter turns), so on a slice read the wrong way up
its probability is less decisive. :func:`estimate_rotation` reads every slice under the four
hypotheses and keeps the one with the highest mean certainty ``|2p - 1|`` over all slices: one
rotation for the folder, as a dataset is exported one way.

Measured on every real slice we have (the 50 labelled and 1600 unlabelled COVID-SemiSeg slices from
20 source volumes; 88 lung crops of covid-ct-md's two volumes, each in the four turns): a single slice
is read right 86-95 % of the time, each of the 29 whole folders (a case in a turn) is read right, and
random folders of 5 / 10 slices from one case are read right 99.0 / 99.8 % of the time. The choice is
flagged as doubtful (:attr:`RotationEstimate.doubtful`) for one slice, when fewer than
``MIN_AGREEMENT`` of the slices would turn the same way on their own, or when the runner-up's certainty
is within ``MIN_MARGIN``: on those random folders of 5 slices or more, 99 % of the wrong choices were
flagged (and 4-7 % of all choices). Figures and how they were made: ``docs/engine.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from napari_chsnet.inference.intensity import display8_to_unit

ROTATIONS = (0, 90, 180, 270)
# A choice is doubtful below this share of slices that would turn the same way on their own ...
MIN_AGREEMENT = 2 / 3
# ... or when the runner-up's mean certainty is this close (measured spread on real folders: 0.003-0.06).
MIN_MARGIN = 0.005


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` turned back to anterior-up from ``rotation`` degrees counter-clockwise."""
    return np.ascontiguousarray(np.rot90(image, k=-_quarter_turns(rotation)))


def turned(image: np.ndarray, rotation: int) -> np.ndarray:
    """An anterior-up ``image`` turned ``rotation`` degrees counter-clockwise (undoes :func:`upright`)."""
    return np.ascontiguousarray(np.rot90(image, k=_quarter_turns(rotation)))


def _quarter_turns(rotation: int) -> int:
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, not {rotation}")
    return rotation // 90


def lung_certainty(lung_probability: np.ndarray) -> float:
    """Mean of ``|2p - 1|``: 1 where the lung stage is sure of every pixel, 0 where it is at 0.5."""
    return float(np.abs(2.0 * np.asarray(lung_probability, np.float32) - 1.0).mean())


@dataclass(frozen=True)
class RotationEstimate:
    """The folder's turn, the mean certainty under each hypothesis and each slice's own best turn."""

    rotation: int
    certainty: dict[int, float]
    votes: dict[int, int]

    @property
    def n_slices(self) -> int:
        return sum(self.votes.values())

    @property
    def agreement(self) -> float:
        """Share of the slices whose own most certain turn is the folder's."""
        return self.votes[self.rotation] / self.n_slices

    @property
    def margin(self) -> float:
        """The folder's mean certainty minus the runner-up's."""
        runner_up = max(c for r, c in self.certainty.items() if r != self.rotation)
        return self.certainty[self.rotation] - runner_up

    @property
    def doubtful(self) -> bool:
        return self.n_slices < 2 or self.agreement < MIN_AGREEMENT or self.margin < MIN_MARGIN

    def describe(self) -> str:
        others = ", ".join(f"{r}°: {self.certainty[r]:.3f}" for r in ROTATIONS if r != self.rotation)
        return (
            f"{self.rotation}° (lung-stage certainty {self.certainty[self.rotation]:.3f}; {others}; "
            f"{self.votes[self.rotation]} of {self.n_slices} slices prefer it)"
        )

    def as_dict(self) -> dict:
        return {
            "rotation": self.rotation,
            "certainty": {str(r): round(c, 5) for r, c in self.certainty.items()},
            "votes": {str(r): v for r, v in self.votes.items()},
        }


def estimate_rotation(images: Iterable[np.ndarray], lung_stage) -> RotationEstimate:
    """The quarter turn (degrees counter-clockwise from anterior-up) of a folder of 8-bit slices.

    Args:
        images: ``(y, x)`` 8-bit slices in the shared display window, as they are stored.
        lung_stage: a ``cascade.LungStage`` (its ``predict`` maps ``(N, H, W)`` [0, 1] inputs to
            lung probability).
    """
    return choose_rotation([rotation_certainties(image, lung_stage) for image in images])


def rotation_certainties(image: np.ndarray, lung_stage) -> list[float]:
    """The lung stage's certainty on one stored 8-bit slice turned back by each of ``ROTATIONS``."""
    return [lung_certainty(lung_stage.predict(display8_to_unit(upright(image, r))[None])) for r in ROTATIONS]


def choose_rotation(certainties) -> RotationEstimate:
    """The folder's choice from its slices' ``(n, 4)`` certainties (columns in ``ROTATIONS`` order)."""
    table = np.asarray(certainties, dtype=np.float64).reshape(-1, len(ROTATIONS))
    if not len(table):
        raise ValueError("choosing a rotation needs at least one slice")
    mean = table.mean(axis=0)
    own_best = np.bincount(table.argmax(axis=1), minlength=len(ROTATIONS))
    return RotationEstimate(
        rotation=ROTATIONS[int(mean.argmax())],
        certainty={r: float(c) for r, c in zip(ROTATIONS, mean, strict=True)},
        votes={r: int(v) for r, v in zip(ROTATIONS, own_best, strict=True)},
    )
