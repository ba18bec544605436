"""Residual unit of the Residual Dilated U-Net (Sec. 3.1, Eq. 1-2, Fig. 3b)."""

from __future__ import annotations

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """RD-UNet Eq. 1-2: ``relu(h(x) + F(x))`` with ``F = conv3x3-BN-ReLU-Dropout-conv3x3-BN``.

    ``h`` is the identity when the channel count is kept, else a 1 x 1 convolution + BN (the paper's
    "identity short-cut" cannot add maps of different depth). Dropout follows the first ReLU (Sec. 3).
    Input ``(N, C_in, H, W)`` -> output ``(N, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.5):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.shortcut(x) + self.residual(x))
