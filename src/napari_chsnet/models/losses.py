"""Segmentation losses of the papers. Every loss takes logits ``(N, C, H, W)`` and a binary target of the same
shape, and returns a scalar: region losses are computed per image and channel, then averaged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(logits: Tensor, target: Tensor, name: str) -> None:
    if logits.shape != target.shape:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape"
        )


def _sums(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image and channel: sum(y * p), sum(y), sum(p) over the spatial axes."""
    dims = tuple(range(2, probs.ndim))
    return (probs * target).sum(dims), target.sum(dims), probs.sum(dims)


class DiceLoss(nn.Module):
    """EAMC Eq. 4: ``1 - (2 sum(y p) + s) / (sum(y) + sum(p) + s)`` with smoothing ``s = 1``.

    ``s`` keeps an empty target with an empty prediction at loss 0.
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        intersection, target_sum, prob_sum = _sums(logits.sigmoid(), target.float())
        return (1 - (2 * intersection + self.smooth) / (target_sum + prob_sum + self.smooth)).mean()


class BCEDiceLoss(nn.Module):
    """CHS-Net Eq. 13-15: ``0.5 * BCE + 0.5 * (1 - 2 sum(y p) / (sum(y^2) + sum(p^2)))``.

    BCE (Eq. 13) is averaged over pixels rather than summed, so that both terms are of order one whatever the
    image size; the squared Dice (Eq. 14) gets the smoothing ``s = 1`` of EAMC Eq. 4 in numerator and
    denominator, since Eq. 14 is undefined for an empty target and an empty prediction.
    """

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = bce_weight
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        target = target.float()
        probs = logits.sigmoid()
        dims = tuple(range(2, probs.ndim))
        intersection = (probs * target).sum(dims)
        denominator = (target * target).sum(dims) + (probs * probs).sum(dims)
        dice = (1 - (2 * intersection + self.smooth) / (denominator + self.smooth)).mean()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.bce_weight * bce + (1 - self.bce_weight) * dice


class FocalLoss(nn.Module):
    """EAMC Eq. 1-3 (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log(p_t)``, averaged over pixels.

    ``alpha_t = alpha`` on infection pixels and ``1 - alpha`` on background ("alpha-balanced"); EAMC uses
    ``alpha = 0.8``, ``gamma = 2``.
    """

    def __init__(self, alpha: float = 0.8, gamma: float = 2.0):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        target = target.float()
        cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-cross_entropy)
        alpha_t = self.alpha * target + (1 - self.alpha) * (1 - target)
        return (alpha_t * (1 - p_t) ** self.gamma * cross_entropy).mean()


class IoULoss(nn.Module):
    """EAMC Eq. 6: ``1 - (sum(y p) + s) / (sum(y) + sum(p) - sum(y p) + s)``.

    The printed Eq. 6 adds ``y p`` in the denominator; the Jaccard index it names subtracts it (union =
    ``|y| + |p| - |y p|``), which we follow.
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        intersection, target_sum, prob_sum = _sums(logits.sigmoid(), target.float())
        union = target_sum + prob_sum - intersection
        return (1 - (intersection + self.smooth) / (union + self.smooth)).mean()


def _tversky_loss(logits: Tensor, target: Tensor, alpha: float, beta: float, smooth: float) -> Tensor:
    """Per image and channel ``1 - TI``, ``TI = (TP + s) / (TP + alpha FN + beta FP + s)`` (soft counts)."""
    probs = logits.sigmoid()
    target = target.float()
    true_pos, target_sum, prob_sum = _sums(probs, target)
    false_neg = target_sum - true_pos
    false_pos = prob_sum - true_pos
    return 1 - (true_pos + smooth) / (true_pos + alpha * false_neg + beta * false_pos + smooth)


class TverskyLoss(nn.Module):
    """EAMC Eq. 7 (Salehi et al. 2017): ``1 - (TP + s) / (TP + alpha FN + beta FP + s)``.

    The paper gives no values; ``alpha = 0.7`` (false negatives) and ``beta = 0.3`` (false positives) are those
    of Abraham & Khan's focal Tversky paper it cites.
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, smooth: float = 1.0):
        super().__init__()
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        return _tversky_loss(logits, target, self.alpha, self.beta, self.smooth).mean()


class FocalTverskyLoss(nn.Module):
    """EAMC Eq. 8 (Abraham & Khan 2019): ``(1 - TI)^(1/gamma)`` with ``gamma = 2``.

    The printed Eq. 8 writes ``(1 - TL)^(1/gamma)`` with ``TL`` already ``1 - TI``, which would reward missing
    the lesion; we follow Abraham & Khan. The base is clamped at 1e-7 so the gradient stays finite at TI = 1.
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, gamma: float = 2.0, smooth: float = 1.0):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        tversky = _tversky_loss(logits, target, self.alpha, self.beta, self.smooth)
        return (tversky.clamp_min(1e-7) ** (1 / self.gamma)).mean()


class CEDiceLoss(nn.Module):
    """EAMC Eq. 5: binary cross-entropy (averaged over pixels) + Dice loss of Eq. 4."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.dice = DiceLoss(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        return F.binary_cross_entropy_with_logits(logits, target.float()) + self.dice(logits, target)


class BCETverskyLoss(nn.Module):
    """``0.5 * BCE + 0.5 * Tversky`` (our choice, in no paper): CHS-Net's loss with its Dice term
    swapped for the Tversky loss of EAMC Eq. 7 (``alpha = 0.7`` on false negatives), for a model whose
    errors are mostly missed lesion (recall below precision). BCE keeps the probabilities calibrated.
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, smooth: float = 1.0):
        super().__init__()
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check(logits, target, type(self).__name__)
        bce = F.binary_cross_entropy_with_logits(logits, target.float())
        tversky = _tversky_loss(logits, target, self.alpha, self.beta, self.smooth).mean()
        return 0.5 * bce + 0.5 * tversky
