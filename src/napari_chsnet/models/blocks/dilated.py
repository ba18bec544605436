"""Dilated-convolution blocks: RD-UNet's DC module (Sec. 3.3, Eq. 3, Fig. 4) and AMC-Net's MS-block
(EAMC Table 8, Fig. 2b)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .convolution import ConvBNReLU


class DilatedConvModule(nn.Sequential):
    """RD-UNet Sec. 3.3: a cascade of 3 x 3 dilated ConvBNReLU with the given rates, channels kept.

    The paper uses rates ``(1, 2, 3, 3, 2, 1)`` on the two shallow skips and ``(1, 2, 2, 1)`` on the two deep
    ones. Input and output ``(N, C, H, W)``.
    """

    def __init__(self, channels: int, rates: Sequence[int]):
        if not rates:
            raise ValueError("DilatedConvModule: give at least one dilation rate")
        super().__init__(*(ConvBNReLU(channels, channels, 3, dilation=rate) for rate in rates))


class MSBlock(nn.Module):
    """EAMC Table 8: parallel 3 x 3 convolutions with dilations ``D = 1, 2, 3, 5``, concatenated, 1 x 1 fusion.

    With ``input_as_first_branch=True`` the ``D = 1`` branch is the block's input itself: the block always
    follows a 3 x 3 (dilation 1) convolution, ``conv_M`` of Table 8, and this reading reproduces the parameter
    counts of EAMC Table 6 (MSU-Net 3.31M, AMC-Net 3.34M); a separate ``D = 1`` convolution gives 3.73M.
    Input and output ``(N, C, H, W)``.
    """

    def __init__(
        self, channels: int, dilations: Sequence[int] = (1, 2, 3, 5), input_as_first_branch: bool = True
    ):
        super().__init__()
        dilations = tuple(dilations)
        self.input_as_first_branch = input_as_first_branch and dilations[0] == 1
        convolved = dilations[1:] if self.input_as_first_branch else dilations
        self.branches = nn.ModuleList(ConvBNReLU(channels, channels, 3, dilation=rate) for rate in convolved)
        self.fuse = ConvBNReLU(channels * len(dilations), channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x] if self.input_as_first_branch else []
        features.extend(branch(x) for branch in self.branches)
        return self.fuse(torch.cat(features, dim=1))
