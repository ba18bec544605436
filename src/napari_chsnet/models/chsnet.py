"""CHS-Net: two cascaded RAIU-Nets, lungs first, then infection on the lung contour map
(Punn & Agarwal 2021, Sec. 3, Fig. 5). doi:10.1002/ima.22672 (arXiv:2012.07079)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .raiunet import RAIUNet


class CHSNet(nn.Module):
    """Hierarchical segmentation: ``lung_net`` segments the lungs, ``infection_net`` the infection inside them.

    The main path is stage by stage (what inference and training do)::

        lung_logits = model.lung_net(image)
        infection_logits = model.infection_net(model.infection_input(image, lung_logits.sigmoid()))

    ``forward(image)`` chains both and returns the tuple ``(lung_logits, infection_logits)``; it is the only
    network here that returns a tuple.

    Args:
        in_channels: channels of the CT slice (1).
        out_channels: logit channels of the infection stage (the lung stage always has one).
        base_channels: width of both RAIU-Nets (20: 2 x 3.98M parameters, paper 8.4M).
        use_rib, use_hybrid_pooling, use_ssd: ablation flags of CHS-Net Table 5, applied to both stages.
        stack_lung_prob: the infection stage reads ``[image * lung_prob, lung_prob]`` (``in_channels + 1``
            channels, see :meth:`infection_input`); ``False`` gives it only the masked image.

    Input ``(N, in_channels, H, W)`` float32 in [0, 1], H and W multiples of ``size_divisor`` (16).
    """

    size_divisor = RAIUNet.size_divisor

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 20,
        use_rib: bool = True,
        use_hybrid_pooling: bool = True,
        use_ssd: bool = True,
        stack_lung_prob: bool = True,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "use_rib": use_rib,
            "use_hybrid_pooling": use_hybrid_pooling,
            "use_ssd": use_ssd,
            "stack_lung_prob": stack_lung_prob,
        }
        self.stack_lung_prob = stack_lung_prob
        flags = {"use_rib": use_rib, "use_hybrid_pooling": use_hybrid_pooling, "use_ssd": use_ssd}
        self.lung_net = RAIUNet(in_channels, 1, base_channels, **flags)
        infection_channels = in_channels + 1 if stack_lung_prob else in_channels
        self.infection_net = RAIUNet(infection_channels, out_channels, base_channels, **flags)

    def infection_input(self, image: Tensor, lung_prob: Tensor) -> Tensor:
        """Form the "lung contour map" that the infection stage reads (CHS-Net Fig. 5b).

        The paper says only that contour maps "are generated from the predicted lungs mask". We restrict the
        CT to the lungs, ``image * lung_prob`` (what discards the background the paper wants gone, Sec. 1.4),
        and, with ``stack_lung_prob``, add ``lung_prob`` as a last channel so that the infection stage can tell
        dark lung parenchyma from masked-out background.

        Args:
            image: ``(N, C, H, W)`` in [0, 1].
            lung_prob: ``(N, 1, H, W)`` lung probability in [0, 1], or a binary lung mask as float (e.g. the
                ground truth while training the infection stage).

        Returns:
            ``(N, C + 1, H, W)`` with ``stack_lung_prob``, else ``(N, C, H, W)``.
        """
        if lung_prob.shape[1] != 1 or lung_prob.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"infection_input: lung_prob must be (N, 1, H, W) matching the image {tuple(image.shape)}; "
                f"got {tuple(lung_prob.shape)}"
            )
        masked = image * lung_prob
        return torch.cat([masked, lung_prob], dim=1) if self.stack_lung_prob else masked

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``image (N, C, H, W)`` -> ``(lung_logits (N, 1, H, W), infection_logits (N, out_channels, H, W))``.

        The lung probability passed on is not detached, so the cascade can be fine-tuned end to end.
        """
        lung_logits = self.lung_net(image)
        infection_logits = self.infection_net(self.infection_input(image, lung_logits.sigmoid()))
        return lung_logits, infection_logits
