"""Run-time augmentation on batches (torch), applied identically to images and masks.

Geometric: rotation, shift and zoom (EAMC Sec. 5.1: rotation ±10°, shifts ±0.2, zoom ±0.2),
horizontal flips (RD-UNet Sec. 3). Intensity: contrast, brightness and gamma jitter, which
also covers the spread of display windows among the 8-bit training slices (docs/intensity.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    rotation_deg: float = 10.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.1
    horizontal_flip: bool = True
    contrast: float = 0.15
    brightness: float = 0.05
    gamma: float = 0.2

    @classmethod
    def none(cls) -> AugmentSettings:
        return cls(0.0, 0.0, 0.0, False, 0.0, 0.0, 0.0)


def _uniform(n: int, half_width: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * half_width


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images (N, C, H, W)`` in [0, 1] and ``masks (N, M, H, W)`` in {0, 1} → augmented copies."""
    n = images.shape[0]
    angle = _uniform(n, math.radians(settings.rotation_deg), generator)
    scale = 1.0 + _uniform(n, settings.zoom_fraction, generator)
    shift_x = _uniform(n, settings.shift_fraction * 2, generator)  # affine_grid spans [-1, 1]
    shift_y = _uniform(n, settings.shift_fraction * 2, generator)
    flip = torch.ones(n)
    if settings.horizontal_flip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Image and masks are padded alike (edge pixels repeated): a lesion or lung that touches the
    # border of a lung-cropped slice continues into the padded strip in both, never as lesion-like
    # pixels labelled background.
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    masks = (
        F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=False) >= 0.5
    ).float()
    contrast = (1.0 + _uniform(n, settings.contrast, generator)).view(n, 1, 1, 1)
    brightness = _uniform(n, settings.brightness, generator).view(n, 1, 1, 1)
    gamma = torch.exp(_uniform(n, settings.gamma, generator)).view(n, 1, 1, 1)
    images = ((images.clamp(0, 1) ** gamma) * contrast + brightness).clamp(0, 1)
    return images, masks
