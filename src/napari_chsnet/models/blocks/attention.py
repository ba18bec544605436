"""Attention blocks: CHS-Net's spectral spatial and depth attention (SSD, Sec. 3.2, Eq. 8-12) and
AMC-Net's attention gate (EAMC Table 9, after Oktay et al. 2018)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .spectral import GlobalSpectralPool2d


class SpectralDepthAttention(nn.Module):
    """CHS-Net Sec. 3.2.1, Eq. 8-9: channel attention from global spectral pooling.

    ``A_d = sigmoid(conv1x1_p(relu(conv1x1_{p/2}(P_gsp(F)))))``, ``F_d = relu(BN(conv1x1_p(A_d * F)))``.
    The paper activates both 1 x 1 convolutions of Eq. 8 with ReLU; the second one here uses a sigmoid as in
    the SE/CBAM attention the paper builds on, so the descriptor is a bounded weight that cannot switch a
    channel off permanently. Input and output ``(N, p, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"SpectralDepthAttention: reduction {reduction} leaves no hidden channel for {channels} channels; "
                f"use a reduction of at most {channels}"
            )
        self.pool = GlobalSpectralPool2d()
        self.descriptor = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.refine(self.descriptor(self.pool(x)) * x)


class SpectralSpatialAttention(nn.Module):
    """CHS-Net Sec. 3.2.2, Eq. 10-12: spatial attention on a skip map, gated by the next coarser map.

    ``gamma = relu(BN(conv2x2/2(F_d) + conv1x1(G)))``; ``A_s = up(sigmoid(conv1x1_1(gamma)))``;
    ``F_s = BN(conv1x1(A_s * F_d))``.

    Args:
        skip_channels: channels ``p/2`` of the skip map ``F_d`` at ``(2m, 2n)``.
        gating_channels: channels of the gating map ``G`` at ``(m, n)``.
        inter_channels: channels ``p`` of ``gamma`` (defaults to ``gating_channels``).

    Shapes: ``F_d (N, p/2, 2m, 2n)``, ``G (N, C_g, m, n)`` -> ``(N, p/2, 2m, 2n)``.
    """

    def __init__(self, skip_channels: int, gating_channels: int, inter_channels: int | None = None):
        super().__init__()
        inter_channels = gating_channels if inter_channels is None else inter_channels
        self.skip_down = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.gating_proj = nn.Conv2d(gating_channels, inter_channels, 1)
        self.gamma = nn.Sequential(nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        self.attention = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.Sigmoid())
        self.refine = nn.Sequential(
            nn.Conv2d(skip_channels, skip_channels, 1, bias=False), nn.BatchNorm2d(skip_channels)
        )

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        gamma = self.gamma(self.skip_down(skip) + self.gating_proj(gating))
        attention = F.interpolate(
            self.attention(gamma), size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.refine(attention * skip)


class SSDSkip(nn.Module):
    """CHS-Net Sec. 3.2: the SSD skip connection, depth attention then spatial attention (Eq. 8-12).

    ``forward(skip (N, p/2, 2m, 2n), gating (N, C_g, m, n)) -> (N, p/2, 2m, 2n)``.
    """

    def __init__(self, skip_channels: int, gating_channels: int):
        super().__init__()
        self.depth = SpectralDepthAttention(skip_channels)
        self.spatial = SpectralSpatialAttention(skip_channels, gating_channels)

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        return self.spatial(self.depth(skip), gating)


class AttentionGate(nn.Module):
    """EAMC Table 9 (Oktay et al. 2018): ``x * sigmoid(conv_c(relu(conv_a(g) + conv_b(x))))``.

    The gating map ``g`` is the up-sampled decoder map, at the same size as the skip map ``x``.
    Shapes: ``g (N, C_g, H, W)``, ``x (N, C_x, H, W)`` -> ``(N, C_x, H, W)``.
    """

    def __init__(self, gating_channels: int, skip_channels: int, inter_channels: int):
        super().__init__()
        self.conv_a = nn.Conv2d(gating_channels, inter_channels, 1)
        self.conv_b = nn.Conv2d(skip_channels, inter_channels, 1)
        self.conv_c = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, gating: Tensor, skip: Tensor) -> Tensor:
        attention = self.conv_c(F.relu(self.conv_a(gating) + self.conv_b(skip)))
        return skip * attention.sigmoid()
