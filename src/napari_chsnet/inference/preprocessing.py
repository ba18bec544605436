"""Slice preparation shared by inference and training, so both see identical inputs.

* Lung stage: the whole axial slice through the shared HU window, resized to
  ``LUNG_INPUT_SIZE`` squared.
* Infection stages: the slice cropped to the in-plane bounding box of both lungs (plus a
  margin) and resized — the framing of the COVID-SemiSeg training slices, which are cropped to
  the lungs. One box is used for every slice of a volume so the probability map stays
  coherent along z. EAMC cuts its crop, resized to ``EAMC_SLICE_SIZE``, into 128x128 patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

LUNG_INPUT_SIZE = 256
INFECTION_INPUT_SIZE = 256
EAMC_SLICE_SIZE = 512
EAMC_PATCH_SIZE = 128
# Margin around the lungs' bounding box, as a fraction of its size (COVID-SemiSeg crops keep a
# thin rim of chest wall around the lungs).
CROP_MARGIN_FRACTION = 0.04


@dataclass(frozen=True)
class CropBox:
    """In-plane box ``[y0, y1) x [x0, x1)`` of a slice."""

    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def full(cls, height: int, width: int) -> CropBox:
        return cls(0, height, 0, width)

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def lung_crop_box(lung_mask: np.ndarray, margin_fraction: float = CROP_MARGIN_FRACTION) -> CropBox:
    """Bounding box of the lungs in-plane (over all slices of a 3-D mask), with a margin.

    Falls back to the whole slice when there is no lung, so an empty lung stage never crops
    the infection stage to nothing.
    """
    mask = np.asarray(lung_mask) > 0
    height, width = mask.shape[-2:]
    if not mask.any():
        return CropBox.full(height, width)
    projection = mask.reshape(-1, height, width).any(axis=0)
    ys, xs = np.nonzero(projection.any(axis=1))[0], np.nonzero(projection.any(axis=0))[0]
    margin_y = int(round(margin_fraction * (ys[-1] - ys[0] + 1))) + 1
    margin_x = int(round(margin_fraction * (xs[-1] - xs[0] + 1))) + 1
    return CropBox(
        max(0, ys[0] - margin_y),
        min(height, ys[-1] + 1 + margin_y),
        max(0, xs[0] - margin_x),
        min(width, xs[-1] + 1 + margin_x),
    )


def crop_and_resize(slices: np.ndarray | torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """``(N, H, W)`` images → ``(N, 1, size, size)`` float32 tensor of the box's content."""
    tensor = torch.as_tensor(np.ascontiguousarray(slices) if isinstance(slices, np.ndarray) else slices)
    tensor = tensor[:, box.y0 : box.y1, box.x0 : box.x1].float().unsqueeze(1)
    if tensor.shape[-2:] == (size, size):
        return tensor
    shrinking = tensor.shape[-2] > size or tensor.shape[-1] > size
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def resize_masks(masks: np.ndarray | torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """Binary masks cropped and resized like the images (bilinear, then 0.5 threshold)."""
    return (crop_and_resize(np.asarray(masks, dtype=np.float32), box, size) >= 0.5).float()


def restore_probabilities(probabilities: torch.Tensor, box: CropBox, height: int, width: int) -> np.ndarray:
    """``(N, 1, s, s)`` probabilities → ``(N, height, width)`` float32 on the original grid.

    Probabilities are resampled before any threshold (a thresholded mask resampled gives
    staircase borders); outside the box they are 0.
    """
    resized = F.interpolate(
        probabilities.float(), size=(box.height, box.width), mode="bilinear", align_corners=False
    )
    out = np.zeros((probabilities.shape[0], height, width), dtype=np.float32)
    out[:, box.y0 : box.y1, box.x0 : box.x1] = resized[:, 0].clamp_(0, 1).cpu().numpy()
    return out


def tile_count(size: int, patch: int, stride: int) -> int:
    """Tiles of side ``patch`` every ``stride`` pixels along one side of ``size``; the tiles must cover
    it exactly (``size - patch`` a multiple of ``stride``), else ``ValueError``."""
    if not 0 < stride <= patch <= size or (size - patch) % stride:
        raise ValueError(f"{patch}-pixel tiles every {stride} pixels do not cover a {size}-pixel side")
    return (size - patch) // stride + 1


def to_tiles(images: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """``(N, C, S, S)`` → ``(N * T, C, patch, patch)``: the tiles every ``stride`` pixels, row-major
    (``stride == patch``: the patches of :func:`to_patches`)."""
    n, c, size, _ = images.shape
    per_side = tile_count(size, patch, stride)
    columns = F.unfold(images, patch, stride=stride)  # (N, C * patch², T)
    return columns.transpose(1, 2).reshape(n * per_side**2, c, patch, patch)


def from_tiles(tiles: torch.Tensor, n: int, size: int, stride: int) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: each pixel is the mean of the tiles that cover it."""
    c, patch = tiles.shape[1], tiles.shape[-1]
    columns = tiles.reshape(n, tile_count(size, patch, stride) ** 2, c * patch * patch).transpose(1, 2)
    total = F.fold(columns, (size, size), patch, stride=stride)
    covering = F.fold(torch.ones_like(columns[:1]), (size, size), patch, stride=stride)
    return total / covering


def to_patches(images: torch.Tensor, patch: int = EAMC_PATCH_SIZE) -> torch.Tensor:
    """``(N, C, S, S)`` → ``(N * (S/patch)^2, C, patch, patch)`` non-overlapping patches, row-major."""
    n, c, s, _ = images.shape
    k = s // patch
    tiles = images.reshape(n, c, k, patch, k, patch).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(n * k * k, c, patch, patch)


def from_patches(patches: torch.Tensor, n: int, size: int) -> torch.Tensor:
    """Inverse of :func:`to_patches`."""
    c, patch = patches.shape[1], patches.shape[-1]
    k = size // patch
    tiles = patches.reshape(n, k, k, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(n, c, size, size)
