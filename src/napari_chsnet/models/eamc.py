"""EAMC: an ensemble of AMC-Nets combined by majority voting (Pal Das, Mitra & Uma Shankar 2023, Sec. 2.2,
Fig. 1). doi:10.1101/2022.12.21.22283793."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .amcnet import AMCNet


class EAMC(nn.Module):
    """``n_members`` AMC-Nets (ten in the paper, one per leave-one-patient-out split).

    ``forward`` returns every member's logits stacked, ``(K, N, out_channels, H, W)``; :meth:`vote` turns them
    into the ensemble's mask and mean probability. Members are trained one by one (``model.members[k]``).

    Args:
        n_members: ensemble size ``K``.
        in_channels, out_channels, base_channels, dropout: passed to every :class:`AMCNet`.
    """

    size_divisor = AMCNet.size_divisor

    def __init__(
        self,
        n_members: int = 10,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        dropout: float = 0.2,
    ):
        super().__init__()
        if n_members < 1:
            raise ValueError(f"EAMC needs at least one member; got n_members={n_members}")
        self.config = {
            "n_members": n_members,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "dropout": dropout,
        }
        self.members = nn.ModuleList(
            AMCNet(in_channels, out_channels, base_channels, dropout) for _ in range(n_members)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> member logits ``(K, N, out_channels, H, W)``."""
        return torch.stack([member(x) for member in self.members])

    @staticmethod
    def vote(member_logits: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
        """Majority vote of the members' binary outputs, and their mean probability (EAMC Sec. 2.2).

        A member votes "infection" where its probability is ``>= threshold``. A pixel is positive when more
        than half of the ``K`` members vote for it; a tie (possible for even ``K``, e.g. 5 of 10) is broken by
        the mean probability: positive when it is ``>= threshold``.

        Args:
            member_logits: ``(K, N, C, H, W)`` as returned by :meth:`forward`.
            threshold: probability threshold of each member's binary output.

        Returns:
            ``(mask, mean_prob)``: bool ``(N, C, H, W)`` and float ``(N, C, H, W)``.
        """
        return EAMC.vote_probabilities(member_logits.sigmoid(), threshold)

    @staticmethod
    def vote_probabilities(probs: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
        """:meth:`vote` on the members' probabilities ``(K, N, C, H, W)`` instead of their logits."""
        n_members = probs.shape[0]
        mean_prob = probs.mean(dim=0)
        doubled_votes = 2 * (probs >= threshold).sum(dim=0)
        tie = (doubled_votes == n_members) & (mean_prob >= threshold)
        return (doubled_votes > n_members) | tie, mean_prob
