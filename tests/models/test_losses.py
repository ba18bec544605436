"""Losses against values worked out by hand.

Case: one 2 x 2 image, target [[1, 0], [0, 0]], logits 0 (p = 0.5 everywhere), so
sum(y p) = 0.5, sum(y) = 1, sum(p) = 2, sum(p^2) = 1, soft FN = 0.5, soft FP = 1.5.
"""

import math

import pytest
import torch

from napari_chsnet.models.losses import (
    BCEDiceLoss,
    BCETverskyLoss,
    CEDiceLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    IoULoss,
    TverskyLoss,
)

TARGET = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
HALF = torch.zeros(1, 1, 2, 2)
LN2 = math.log(2)

CASES = [
    (DiceLoss(), 1 - (2 * 0.5 + 1) / (1 + 2 + 1)),  # EAMC Eq. 4 = 0.5
    (BCEDiceLoss(), 0.5 * LN2 + 0.5 * (1 - (2 * 0.5 + 1) / (1 + 1 + 1))),  # CHS-Net Eq. 15
    (FocalLoss(), (0.8 + 3 * 0.2) / 4 * 0.25 * LN2),  # alpha_t mean 0.35, (1 - p_t)^2 = 0.25
    (IoULoss(), 1 - (0.5 + 1) / (1 + 2 - 0.5 + 1)),
    (TverskyLoss(), 1 - (0.5 + 1) / (0.5 + 0.7 * 0.5 + 0.3 * 1.5 + 1)),
    (FocalTverskyLoss(), math.sqrt(1 - (0.5 + 1) / (0.5 + 0.7 * 0.5 + 0.3 * 1.5 + 1))),
    (CEDiceLoss(), LN2 + 0.5),
    (BCETverskyLoss(), 0.5 * LN2 + 0.5 * (1 - (0.5 + 1) / (0.5 + 0.7 * 0.5 + 0.3 * 1.5 + 1))),
]


@pytest.mark.parametrize(("loss", "expected"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_loss_matches_hand_value(loss, expected):
    assert loss(HALF, TARGET).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), IoULoss(), TverskyLoss(), BCEDiceLoss(), BCETverskyLoss()],
    ids=lambda loss: type(loss).__name__,
)
def test_empty_target_and_empty_prediction_cost_nothing(loss):
    empty = torch.zeros(2, 1, 4, 4)
    assert loss(torch.full_like(empty, -30.0), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_focal_tversky_stays_finite_at_perfect_prediction():
    empty = torch.zeros(1, 1, 4, 4)
    logits = torch.full_like(empty, -30.0).requires_grad_()
    loss = FocalTverskyLoss()(logits, empty)
    loss.backward()
    assert loss.item() < 1e-3 and torch.isfinite(logits.grad).all()


def test_empty_target_with_uncertain_prediction_is_penalised():
    # Dice (Eq. 4) of an empty target against p = 0.5 on 4 pixels: 1 - 1 / (0 + 2 + 1).
    assert DiceLoss()(HALF, torch.zeros_like(TARGET)).item() == pytest.approx(2 / 3, abs=1e-6)


def test_region_losses_average_per_image():
    logits = torch.cat([HALF, torch.full_like(HALF, -30.0)])
    target = torch.cat([TARGET, torch.zeros_like(TARGET)])
    assert DiceLoss()(logits, target).item() == pytest.approx(0.25, abs=1e-6)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"logits \(1, 1, 2, 2\) and target \(1, 2, 2\)"):
        DiceLoss()(HALF, TARGET[0])


def test_bce_tversky_charges_a_missed_pixel_more_than_a_false_alarm():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1  # a 4-pixel lesion
    confident = torch.where(target > 0, 30.0, -30.0)
    missed, false_alarm = confident.clone(), confident.clone()
    missed[..., 0, 0] = -30.0  # one lesion pixel left out
    false_alarm[..., 3, 3] = 30.0  # one healthy pixel marked
    loss = BCETverskyLoss()
    assert loss(missed, target).item() > loss(false_alarm, target).item() > 0
    assert BCEDiceLoss()(missed, target).item() == pytest.approx(
        BCEDiceLoss()(false_alarm, target).item(), rel=0.2
    )  # CHS-Net's loss charges the two about the same


def test_bce_dice_weight_goes_to_the_bce_term():
    """``bce_weight`` weighs BCE (the rest weighs the Dice term): at bce_weight 0.8 on the hand case,
    0.8 ln 2 + 0.2 (1 - 2/3), not 0.8 (1 - 2/3) + 0.2 ln 2."""
    expected = 0.8 * LN2 + 0.2 * (1 - (2 * 0.5 + 1) / (1 + 1 + 1))
    assert BCEDiceLoss(bce_weight=0.8)(HALF, TARGET).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("target", [1.0, 0.0])
def test_focal_loss_down_weights_the_confident_pixel_by_one_minus_p_t(target):
    """EAMC Eq. 3 at one pixel of logit 3 (p = sigmoid(3) = 0.9526): a right answer (y = 1, p_t = p)
    costs alpha (1 - p)^2 ln(1 + e^-3) = 8.7e-5; a wrong one (y = 0, p_t = 1 - p) costs
    (1 - alpha) p^2 ln(1 + e^3) = 0.553."""
    p = 1 / (1 + math.exp(-3))
    if target:
        expected = 0.8 * (1 - p) ** 2 * math.log(1 + math.exp(-3))
    else:
        expected = 0.2 * p**2 * math.log(1 + math.exp(3))
    logits, labels = torch.full((1, 1, 1, 1), 3.0), torch.full((1, 1, 1, 1), target)
    assert FocalLoss()(logits, labels).item() == pytest.approx(expected, rel=1e-5)
