"""RAIU-Net, the residual attention inception U-Net of CHS-Net (Punn & Agarwal 2021, Sec. 3, Fig. 6).

doi:10.1002/ima.22672 (arXiv:2012.07079).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_input
from .blocks import DoubleConv, HybridPool2d, ResidualInceptionBlock, SSDSkip


class RAIUNet(nn.Module):
    """Four-stage U-Net of residual inception blocks, hybrid pooling and SSD skip connections.

    Encoder: ``unit(in -> c) -> pool -> unit(c -> 2c) -> pool -> ... -> unit(8c -> 16c)`` (bridge), with
    ``c = base_channels``; decoder: transposed 2 x 2 convolution, SSD-refined skip gated by the coarser decoder
    map, concatenation, ``unit``; a 1 x 1 convolution gives the logits (the paper's sigmoid lives in inference).
    The ablations of CHS-Net Tables 4-5 are flags: all ``False`` is the baseline U-Net ("BU": double 3 x 3
    convolutions, max pooling, plain skips); ``use_rib`` swaps in residual inception blocks, ``use_hybrid_pooling``
    the max + spectral pooling (between stages and inside the inception convolutions), ``use_ssd`` the attention
    skips.

    Args:
        in_channels: channels of the input slice (1 for CT).
        out_channels: logit channels of the output.
        base_channels: width ``c`` of the first stage, doubled at each of the four stages; 20 gives 3.98M
            parameters against the paper's 4.2M (see docs/models/chsnet.md).
        use_rib: residual inception blocks instead of double convolutions.
        use_hybrid_pooling: hybrid pooling instead of max pooling.
        use_ssd: SSD attention on the skip connections.

    Input ``(N, in_channels, H, W)`` float32 in [0, 1], H and W multiples of ``size_divisor`` (16);
    output logits ``(N, out_channels, H, W)``.

    Example:
        >>> import torch
        >>> net = RAIUNet(base_channels=8).eval()
        >>> with torch.inference_mode():
        ...     net(torch.rand(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    size_divisor = 16
    depth = 4

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 20,
        use_rib: bool = True,
        use_hybrid_pooling: bool = True,
        use_ssd: bool = True,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "use_rib": use_rib,
            "use_hybrid_pooling": use_hybrid_pooling,
            "use_ssd": use_ssd,
        }
        self.in_channels = in_channels
        self.use_ssd = use_ssd
        widths = [base_channels * 2**level for level in range(self.depth + 1)]

        def unit(cin: int, cout: int) -> nn.Module:
            return ResidualInceptionBlock(cin, cout, use_hybrid_pooling) if use_rib else DoubleConv(cin, cout)

        def pool(channels: int) -> nn.Module:
            return (
                HybridPool2d(channels, channels, downsample=True) if use_hybrid_pooling else nn.MaxPool2d(2)
            )

        self.encoders = nn.ModuleList(
            unit(cin, cout) for cin, cout in zip([in_channels, *widths[:-2]], widths[:-1], strict=True)
        )
        self.pools = nn.ModuleList(pool(width) for width in widths[:-1])
        self.bridge = unit(widths[-2], widths[-1])
        # Decoder lists run from the deepest stage up; index i joins skip widths[-2 - i] with widths[-1 - i].
        coarse, fine = widths[:0:-1], widths[-2::-1]
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(cc, cf, 2, stride=2) for cc, cf in zip(coarse, fine, strict=True)
        )
        if use_ssd:
            self.skips = nn.ModuleList(SSDSkip(cf, cc) for cc, cf in zip(coarse, fine, strict=True))
        self.decoders = nn.ModuleList(unit(2 * cf, cf) for cf in fine)
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        skips = []
        for encoder, pool in zip(self.encoders, self.pools, strict=True):
            x = encoder(x)
            skips.append(x)
            x = pool(x)
        x = self.bridge(x)
        for i, (up, decoder) in enumerate(zip(self.ups, self.decoders, strict=True)):
            skip = skips[-1 - i]
            if self.use_ssd:
                skip = self.skips[i](skip, x)
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)
