"""Hybrid pooling: max and spectral pooling in parallel, fused by a 1 x 1 convolution (CHS-Net Sec. 3.1.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spectral import SpectralLowPass2d, SpectralPool2d


class MaxPool3x3Same(nn.Module):
    """3 x 3 max pooling with stride 1 and padding 1 (input and output ``(N, C, H, W)``).

    Without autograd (inference) it takes the maximum of shifted views, rows then columns: same values as
    ``max_pool2d``, about ten times faster on CPU; when gradients are needed ``max_pool2d``'s backward is the
    faster one.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool2d(x, 3, stride=1, padding=1)
        rows = F.pad(x, (0, 0, 1, 1), value=float("-inf"))
        rows = torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])
        cols = F.pad(rows, (1, 1, 0, 0), value=float("-inf"))
        return torch.maximum(torch.maximum(cols[..., :-2], cols[..., 1:-1]), cols[..., 2:])


class HybridPool2d(nn.Module):
    """CHS-Net Sec. 3.1.1 (P_h): ``conv1x1(concat(maxpool(x), spectralpool(x)))``.

    ``downsample=True`` is the "valid" form between residual inception blocks: 2 x 2 max pooling and spectral
    pooling to half size, ``(N, C, H, W) -> (N, C_out, H/2, W/2)``. ``downsample=False`` is the "same" form of
    the inception convolution: 3 x 3 stride-1 max pooling and a spectral low-pass keeping half the frequencies,
    ``(N, C, H, W) -> (N, C_out, H, W)``.

    Args:
        in_channels: channels of the input.
        out_channels: channels after the 1 x 1 fusion (defaults to ``in_channels``).
        downsample: halve the spatial size ("valid") or keep it ("same").
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, downsample: bool = True):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if downsample:
            self.max_pool = nn.MaxPool2d(2)
            self.spectral_pool = SpectralPool2d(2)
        else:
            self.max_pool = MaxPool3x3Same()
            self.spectral_pool = SpectralLowPass2d(2)
        self.fuse = nn.Conv2d(2 * in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.max_pool(x), self.spectral_pool(x)], dim=1))
