"""AMC-Net, the attention multi-scale U-Net that EAMC ensembles (Pal Das, Mitra & Uma Shankar 2023,
Sec. 4, Fig. 2, Tables 7-9). doi:10.1101/2022.12.21.22283793."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_input
from .blocks import AttentionGate, ConvBNReLU, MSBlock


class AMCStage(nn.Module):
    """One row of EAMC Table 7: ``conv 3x3 -> MS-block -> conv 3x3`` at ``n`` features."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv_in = ConvBNReLU(in_channels, channels)
        self.multi_scale = MSBlock(channels)
        self.conv_out = ConvBNReLU(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.multi_scale(self.conv_in(x)))


class AMCNet(nn.Module):
    """EAMC Table 7: four encoder stages (16-128 features) with MS-blocks, a 256-feature bottleneck, four
    decoder stages whose skips pass attention gates (Table 9), and a 1 x 1 output convolution (logits).

    Up-sampling is a parameter-free 2 x nearest up-sampling (Keras ``UpSampling2D``, which the parameter counts
    of Table 6 imply); every 3 x 3 convolution is followed by BN and ReLU; dropout sits after the bottleneck.
    Trained on 128 x 128 patches but fully convolutional.

    Args:
        in_channels: channels of the input patch.
        out_channels: logit channels.
        base_channels: features of the first stage (16 in the paper: 3.34M parameters).
        dropout: dropout probability after the bottleneck (0.2 in the paper).

    Input ``(N, in_channels, H, W)`` float32 in [0, 1], H and W multiples of ``size_divisor`` (16);
    output logits ``(N, out_channels, H, W)``.
    """

    size_divisor = 16
    depth = 4

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 16, dropout: float = 0.2
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "dropout": dropout,
        }
        self.in_channels = in_channels
        widths = [base_channels * 2**level for level in range(self.depth + 1)]
        self.encoders = nn.ModuleList(
            AMCStage(cin, cout) for cin, cout in zip([in_channels, *widths[:-2]], widths[:-1], strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.bridge = nn.Sequential(
            ConvBNReLU(widths[-2], widths[-1]), ConvBNReLU(widths[-1], widths[-1]), nn.Dropout2d(dropout)
        )
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        coarse, fine = widths[:0:-1], widths[-2::-1]
        # Table 7: AG(conv_8, Upsampling_1), 64 -- the gate's inner width is half the skip's.
        self.gates = nn.ModuleList(
            AttentionGate(cc, cf, cf // 2) for cc, cf in zip(coarse, fine, strict=True)
        )
        self.decoders = nn.ModuleList(AMCStage(cc + cf, cf) for cc, cf in zip(coarse, fine, strict=True))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bridge(x)
        for skip, gate, decoder in zip(reversed(skips), self.gates, self.decoders, strict=True):
            up = self.up(x)
            x = decoder(torch.cat([up, gate(up, skip)], dim=1))
        return self.head(x)
