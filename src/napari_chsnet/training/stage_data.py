"""Turn labelled slices into the fixed-size tensors each network stage trains on.

Uses the inference code's crop/resize (inference/preprocessing.py), so training and
inference inputs match. Masks are stacked as channels: channel 0 is the target, channel 1
(infection stages) the lung mask that CHS-Net's infection stage reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_chsnet.inference.preprocessing import (
    EAMC_PATCH_SIZE,
    CropBox,
    crop_and_resize,
    resize_masks,
    to_patches,
)
from napari_chsnet.training.datasets import LabelledSlice


@dataclass
class StageArrays:
    """``images (N, 1, S, S)`` float32, ``masks (N, M, S, S)`` float32 0/1, ``weights (N,)``."""

    images: torch.Tensor
    masks: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor | Sequence[int]) -> StageArrays:
        index = torch.as_tensor(index, dtype=torch.long)
        return StageArrays(self.images[index], self.masks[index], self.weights[index])

    @staticmethod
    def empty(mask_channels: int, size: int) -> StageArrays:
        """No samples (e.g. a run without held-out validation slices)."""
        return StageArrays(
            torch.zeros(0, 1, size, size), torch.zeros(0, mask_channels, size, size), torch.zeros(0)
        )

    @staticmethod
    def concat(parts: Sequence[StageArrays]) -> StageArrays:
        parts = [p for p in parts if len(p)]
        return StageArrays(
            torch.cat([p.images for p in parts]),
            torch.cat([p.masks for p in parts]),
            torch.cat([p.weights for p in parts]),
        )


def _one(
    image: np.ndarray, masks: list[np.ndarray], box: CropBox, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    img = crop_and_resize(image[None], box, size)
    stacked = torch.cat([resize_masks(m[None], box, size) for m in masks], dim=1)
    return img, stacked


def lung_stage_arrays(slices: Sequence[LabelledSlice], size: int) -> StageArrays:
    """Whole slices and their lung masks (slices without a lung mask are skipped)."""
    images, masks = [], []
    for item in slices:
        if item.lungs is None:
            continue
        img, mask = _one(item.image, [item.lungs], CropBox.full(*item.image.shape), size)
        images.append(img)
        masks.append(mask)
    if not images:
        return StageArrays.empty(1, size)
    return StageArrays(torch.cat(images), torch.cat(masks), torch.ones(len(images)))


def infection_stage_arrays(slices: Sequence[LabelledSlice], size: int) -> StageArrays:
    """Lung-cropped slices; masks = [infection, lungs]; weights = infection label weights."""
    images, masks, weights = [], [], []
    for item in slices:
        if item.infection is None or item.lungs is None:
            continue
        img, mask = _one(item.image, [item.infection, item.lungs], item.infection_box(), size)
        images.append(img)
        masks.append(mask)
        weights.append(item.infection_weight)
    if not images:
        return StageArrays.empty(2, size)
    return StageArrays(torch.cat(images), torch.cat(masks), torch.tensor(weights, dtype=torch.float32))


def eamc_patches(
    slices: StageArrays,
    lesion_boxes: int,
    random_patches: int,
    generator: torch.Generator,
    patch: int = EAMC_PATCH_SIZE,
) -> StageArrays:
    """EAMC Sec. 5.1 patch extraction from ``slices`` already resized to the EAMC slice size.

    Infected slice: ``lesion_boxes`` random 128x128 boxes that each contain a lesion pixel, plus
    the 12 boundary patches of the 4x4 grid. Non-infected slice: ``random_patches`` random boxes.
    """
    size = slices.images.shape[-1]
    grid = size // patch
    boundary = [
        r * grid + c for r in range(grid) for c in range(grid) if r in (0, grid - 1) or c in (0, grid - 1)
    ]
    images, masks, weights = [], [], []

    def add(i: int, y: int, x: int) -> None:
        images.append(slices.images[i, :, y : y + patch, x : x + patch])
        masks.append(slices.masks[i, :, y : y + patch, x : x + patch])
        weights.append(slices.weights[i])

    for i in range(len(slices)):
        lesion = slices.masks[i, 0].nonzero()
        if len(lesion):
            picks = torch.randint(len(lesion), (lesion_boxes,), generator=generator)
            for y_c, x_c in lesion[picks].tolist():
                offset = torch.randint(patch, (2,), generator=generator).tolist()
                add(
                    i,
                    int(np.clip(y_c - offset[0], 0, size - patch)),
                    int(np.clip(x_c - offset[1], 0, size - patch)),
                )
            tiles_img = to_patches(slices.images[i : i + 1], patch)
            tiles_mask = to_patches(slices.masks[i : i + 1], patch)
            for b in boundary:
                images.append(tiles_img[b])
                masks.append(tiles_mask[b])
                weights.append(slices.weights[i])
        else:
            for _ in range(random_patches):
                y, x = torch.randint(size - patch + 1, (2,), generator=generator).tolist()
                add(i, y, x)
    return StageArrays(torch.stack(images), torch.stack(masks), torch.stack(weights).float())
