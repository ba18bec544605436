"""Residual Dilated U-Net (Amer, Ye & Janan 2021, Sec. 3, Fig. 2). doi:10.1109/ICCVW54120.2021.00379
(arXiv:2108.07344)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input
from .blocks import DilatedConvModule, ResidualBlock, SqueezeExcitation

PAPER_DC_RATES = ((1, 2, 3, 3, 2, 1), (1, 2, 3, 3, 2, 1), (1, 2, 2, 1), (1, 2, 2, 1))


class RDStage(nn.Module):
    """Residual block followed by a squeeze-excitation unit (RD-UNet Sec. 3.1-3.2)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, se_reduction: int):
        super().__init__()
        self.residual = ResidualBlock(in_channels, out_channels, dropout)
        self.excitation = SqueezeExcitation(out_channels, se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        return self.excitation(self.residual(x))


class RDUNet(nn.Module):
    """Residual Dilated U-Net: residual + SE stages, dilated-convolution (DC) modules on the skips, bilinear
    up-sampling, 1 x 1 output convolution (logits).

    Encoder stage ``i`` has ``base_channels * 2**i`` features; ``len(dc_rates)`` skips, each passed through a
    DC module with the given dilation rates (shallowest first), so the network down-samples
    ``len(dc_rates)`` times. The decoder up-samples bilinearly, concatenates the DC output and applies a
    residual + SE stage.

    Args:
        in_channels: channels of the input slice.
        out_channels: logit channels.
        base_channels: features of the first stage. The paper states 16 (-> 256 at the bottom, 2.91M
            parameters) and 4.5M parameters, which no reading of its text reconciles; 20 gives 4.55M
            (see docs/models/rdunet.md).
        dropout: dropout after the first ReLU of every residual block (0.5 in the paper).
        se_reduction: reduction ratio ``r`` of the SE units (8 in the paper).
        dc_rates: dilation rates of the DC module of each skip, shallowest first.

    Input ``(N, in_channels, H, W)`` float32 in [0, 1], H and W multiples of ``size_divisor``
    (``2 ** len(dc_rates)``, 16 by default); output logits ``(N, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 20,
        dropout: float = 0.5,
        se_reduction: int = 8,
        dc_rates: Sequence[Sequence[int]] = PAPER_DC_RATES,
    ):
        super().__init__()
        dc_rates = [list(rates) for rates in dc_rates]
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "dropout": dropout,
            "se_reduction": se_reduction,
            "dc_rates": dc_rates,
        }
        self.in_channels = in_channels
        self.size_divisor = 2 ** len(dc_rates)
        widths = [base_channels * 2**level for level in range(len(dc_rates) + 1)]

        def stage(cin: int, cout: int) -> RDStage:
            return RDStage(cin, cout, dropout, se_reduction)

        self.encoders = nn.ModuleList(
            stage(cin, cout) for cin, cout in zip([in_channels, *widths[:-2]], widths[:-1], strict=True)
        )
        self.dilated = nn.ModuleList(
            DilatedConvModule(width, rates) for width, rates in zip(widths[:-1], dc_rates, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.bridge = stage(widths[-2], widths[-1])
        coarse, fine = widths[:0:-1], widths[-2::-1]
        self.decoders = nn.ModuleList(stage(cc + cf, cf) for cc, cf in zip(coarse, fine, strict=True))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        skips = []
        for encoder, dilated in zip(self.encoders, self.dilated, strict=True):
            x = encoder(x)
            skips.append(dilated(x))
            x = self.pool(x)
        x = self.bridge(x)
        for skip, decoder in zip(reversed(skips), self.decoders, strict=True):
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([up, skip], dim=1))
        return self.head(x)
