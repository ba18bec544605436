"""Inception convolution (CHS-Net Sec. 3.1.2, Eq. 3-5, Fig. 9) and residual inception block (Sec. 3.1, Fig. 7)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .pooling import HybridPool2d, MaxPool3x3Same
from .separable import DepthwiseSeparableConv2d


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class InceptionConv(nn.Module):
    """CHS-Net Eq. 3-4: parallel DSC 1x1, 3x3, 5x5 and same-size pooling, each BN+ReLU, fused by 1x1+BN+ReLU.

    Args:
        in_channels: ``d`` of the input ``(N, d, H, W)``.
        out_channels: ``r``; every branch and the fused output ``(N, r, H, W)`` have ``r`` channels.
        use_hybrid_pooling: pooling branch is hybrid (max + spectral, Sec. 3.1.1); ``False`` gives the
            "+RIB" ablation of Tables 4-5, where the branch is a 3 x 3 stride-1 max pooling and a 1 x 1 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, use_hybrid_pooling: bool = True):
        super().__init__()
        self.branch_1x1 = nn.Sequential(
            DepthwiseSeparableConv2d(in_channels, out_channels, 1), _bn_relu(out_channels)
        )
        self.branch_3x3 = nn.Sequential(
            DepthwiseSeparableConv2d(in_channels, out_channels, 3), _bn_relu(out_channels)
        )
        self.branch_5x5 = nn.Sequential(
            DepthwiseSeparableConv2d(in_channels, out_channels, 5), _bn_relu(out_channels)
        )
        if use_hybrid_pooling:
            pool = HybridPool2d(in_channels, out_channels, downsample=False)
        else:
            pool = nn.Sequential(MaxPool3x3Same(), nn.Conv2d(in_channels, out_channels, 1))
        self.branch_pool = nn.Sequential(pool, _bn_relu(out_channels))
        self.fuse = nn.Sequential(
            nn.Conv2d(4 * out_channels, out_channels, 1, bias=False), _bn_relu(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch_1x1(x), self.branch_3x3(x), self.branch_5x5(x), self.branch_pool(x)]
        return self.fuse(torch.cat(branches, dim=1))


class ResidualInceptionBlock(nn.Module):
    """CHS-Net Fig. 7 (RIB): ``IC2(IC1(x)) + BN(DSC3x3(x))``.

    Input ``(N, d, H, W)`` -> output ``(N, d', H, W)``; the down-sampling between blocks is done by the network.
    """

    def __init__(self, in_channels: int, out_channels: int, use_hybrid_pooling: bool = True):
        super().__init__()
        self.inception_1 = InceptionConv(in_channels, out_channels, use_hybrid_pooling)
        self.inception_2 = InceptionConv(out_channels, out_channels, use_hybrid_pooling)
        self.shortcut = nn.Sequential(
            DepthwiseSeparableConv2d(in_channels, out_channels, 3), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.inception_2(self.inception_1(x)) + self.shortcut(x)
