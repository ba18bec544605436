"""Depthwise-separable convolution (CHS-Net Sec. 1.2, Eq. 1 and Eq. 5)."""

from __future__ import annotations

from torch import Tensor, nn


class DepthwiseSeparableConv2d(nn.Module):
    """CHS-Net Eq. 5: a k x k depthwise convolution (one filter per channel) followed by a 1 x 1 pointwise one.

    Uses ``groups=in_channels`` so the depthwise step costs ``k*k*C`` weights and one grouped kernel call;
    with ``stride=1`` the output keeps the input's height and width ("same" padding).

    Args:
        in_channels: channels of the input ``(N, C_in, H, W)``.
        out_channels: channels of the output ``(N, C_out, H', W')``.
        kernel_size: side of the depthwise kernel (1, 3 or 5 in the inception convolution).
        stride: stride of the depthwise step.
        bias: whether the pointwise step has a bias (off when a BatchNorm follows).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, bias: bool = False
    ):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.depthwise.kernel_size == (1, 1) and self.depthwise.stride == (1, 1):
            # A 1 x 1 depthwise convolution is a per-channel scale; PyTorch's CPU path for it can loop over the
            # groups one by one, so apply the same weights as a broadcast product.
            return self.pointwise(x * self.depthwise.weight.view(1, -1, 1, 1))
        return self.pointwise(self.depthwise(x))
