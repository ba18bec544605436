"""Squeeze-and-excitation unit (Hu et al. 2018; Residual Dilated U-Net Sec. 3.2, reduction r = 8)."""

from __future__ import annotations

from torch import Tensor, nn


class SqueezeExcitation(nn.Module):
    """RD-UNet Sec. 3.2: global average pooling, FC ``C -> C/r`` + ReLU, FC ``C/r -> C`` + sigmoid, rescale.

    The two fully connected layers are 1 x 1 convolutions on the pooled ``(N, C, 1, 1)`` map.
    Input and output ``(N, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"SqueezeExcitation: reduction {reduction} is too large for {channels} channels; "
                f"use a reduction of at most {channels}"
            )
        self.excitation = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.excitation(x)
