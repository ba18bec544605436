"""Work on volume-sized masks without volume-sized temporaries: counts a slab of slices at a time,
and the bounding box that work can be cut down to.

A thin-slice chest CT has 150 M voxels: ``np.bincount`` of its int32 labels makes an int64 copy
(1.2 GB), and a boolean test of a whole label volume another 150 MB. Counted over slabs of about
``SLAB_VOXELS`` voxels (16 slices of 512 x 512), the temporaries stay at 32 MB or less.
"""

from __future__ import annotations

import numpy as np

SLAB_VOXELS = 1 << 22


def slab_step(shape: tuple[int, ...]) -> int:
    """Slices (first-axis entries) per slab of about ``SLAB_VOXELS`` voxels, at least one."""
    return max(1, SLAB_VOXELS // max(1, int(np.prod(shape[1:]))))


def label_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxels of each label 0..``count`` (int64), as ``np.bincount(labels.ravel())`` but slab by slab."""
    sizes = np.zeros(count + 1, dtype=np.int64)
    step = slab_step(labels.shape)
    for start in range(0, labels.shape[0], step):
        sizes += np.bincount(labels[start : start + step].ravel(), minlength=count + 1)
    return sizes


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...]:
    """The smallest box holding ``mask``'s voxels, grown by ``pad`` within the array (mask not empty)."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(present[0]) - pad), min(mask.shape[axis], int(present[-1]) + 1 + pad)))
    return tuple(box)
