"""Plain convolution units: 3 x 3 conv + BN + ReLU, and the baseline U-Net's double convolution."""

from __future__ import annotations

from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """``k x k`` convolution (optionally dilated), BatchNorm, ReLU; keeps H and W."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Module):
    """Baseline U-Net unit (Ronneberger et al. 2015; "BU" of CHS-Net Tables 4-5): two ConvBNReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_1 = ConvBNReLU(in_channels, out_channels)
        self.conv_2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_2(self.conv_1(x))
