import numpy as np
import pytest
import torch


@pytest.fixture
def disk_slices():
    """Four 64 x 64 slices with one bright disk each on a noisy background, and the disk masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    images, masks = [], []
    for _ in range(4):
        cy, cx, radius = rng.integers(18, 46), rng.integers(18, 46), rng.integers(6, 14)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        images.append(0.3 + 0.4 * mask + 0.05 * rng.standard_normal((64, 64)))
        masks.append(mask)
    as_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32))  # noqa: E731
    return as_tensor(images), as_tensor(masks)
