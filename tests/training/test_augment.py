"""Augmentation keeps image and masks aligned, also where a lesion touches the slice's border."""

from __future__ import annotations

from dataclasses import replace

import torch

from napari_chsnet.training.augment import AugmentSettings, augment_batch

GEOMETRY_ONLY = AugmentSettings(
    rotation_deg=30,
    shift_fraction=0.2,
    zoom_fraction=0.2,
    horizontal_flip=True,
    contrast=0,
    brightness=0,
    gamma=0,
)


def _blob(touching_border: bool) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    if touching_border:  # like a subpleural lesion at the edge of a lung-cropped slice
        return ((xx < 12) & (yy > 10) & (yy < 50)).float()
    return (((yy - 20) ** 2 + (xx - 40) ** 2) < 100).float()


def test_an_image_that_is_its_own_mask_stays_its_own_mask():
    for touching_border in (False, True):
        masks = _blob(touching_border).expand(16, 1, 64, 64).clone()
        images, augmented = augment_batch(
            masks.clone(), masks, GEOMETRY_ONLY, torch.Generator().manual_seed(0)
        )
        assert not torch.equal(augmented, masks), "the warps should move the blob"
        disagreeing = ((images >= 0.5).float() != augmented).flatten(1).sum(1)
        assert disagreeing.max().item() == 0, (
            f"touching the border: {touching_border}; {disagreeing.tolist()}"
        )


def test_no_augmentation_returns_the_inputs():
    images = torch.rand(2, 1, 32, 32)
    masks = (torch.rand(2, 2, 32, 32) > 0.5).float()
    out_images, out_masks = augment_batch(
        images, masks, AugmentSettings.none(), torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)
    assert torch.equal(out_masks, masks)


SIDE = 64


def _warps(settings: AugmentSettings, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The in-plane maps the augmentation applied, read back from coordinate images: channel 0 holds
    each pixel's x, channel 1 its y (linear ramps, which bilinear sampling reproduces exactly), so an
    output pixel's values are the input position it was sampled from. Fitted on the central disk,
    which never samples past the border at these settings. Returns ``(A (n, 2, 2), shift (n, 2))`` in
    pixels: input (x, y) = A @ (output (x, y) - centre) + centre + shift."""
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    ramps = torch.stack([xx, yy]).float() / (SIDE - 1)
    images, _ = augment_batch(
        ramps.expand(n, 2, SIDE, SIDE).clone(),
        torch.zeros(n, 1, SIDE, SIDE),
        settings,
        torch.Generator().manual_seed(seed),
    )
    centre = (SIDE - 1) / 2
    inside = ((xx - centre) ** 2 + (yy - centre) ** 2) < (SIDE / 4) ** 2
    design = torch.stack(
        [xx[inside] - centre, yy[inside] - centre, torch.ones(int(inside.sum()))], 1
    ).double()
    sampled = images[:, :, inside].double() * (SIDE - 1)  # (n, 2, pixels)
    fitted = torch.linalg.lstsq(design.expand(n, -1, -1), sampled.transpose(1, 2)).solution  # (n, 3, 2)
    return fitted[:, :2].transpose(1, 2), fitted[:, 2] - centre


def test_the_rotation_setting_is_in_degrees_and_warps_are_rigid_mirrored_in_x_only():
    """EAMC's ±10° rotation with flips: every warp is a rotation by at most 10° (not 10 radians),
    times a mirror of x alone for about half the samples; lengths and right angles are kept."""
    matrix, _ = _warps(replace(AugmentSettings.none(), rotation_deg=10, horizontal_flip=True))
    eye = torch.eye(2, dtype=torch.float64).expand_as(matrix)
    torch.testing.assert_close(matrix.transpose(1, 2) @ matrix, eye, atol=2e-3, rtol=0)  # orthogonal
    # A = R(angle) @ diag(flip, 1): the y column is the rotated y axis, untouched by the x mirror
    angle = torch.rad2deg(torch.atan2(-matrix[:, 0, 1], matrix[:, 1, 1]))
    assert angle.abs().max() <= 10.1, angle.tolist()
    assert angle.abs().max() >= 7, angle.tolist()  # 64 draws of U(-10°, 10°) reach past 7°
    flip = torch.linalg.det(matrix)
    torch.testing.assert_close(flip.abs(), torch.ones_like(flip), atol=2e-3, rtol=0)
    # the mirrored samples' x column is the rotated x axis reversed: (-cos, -sin), not (-cos, sin)
    radians = torch.deg2rad(angle)
    mirrored = flip < 0
    torch.testing.assert_close(
        matrix[mirrored, :, 0],
        -torch.stack([torch.cos(radians), torch.sin(radians)], 1)[mirrored],
        atol=2e-3,
        rtol=0,
    )
    assert 16 <= int(mirrored.sum()) <= 48, "flips happen to about half of the samples"


def test_shifts_reach_the_shift_fraction_of_the_image_side():
    """``shift_fraction`` 0.2 (EAMC's ±0.2) moves the content by up to 20 % of the side along each axis."""
    matrix, shift = _warps(replace(AugmentSettings.none(), shift_fraction=0.2))
    eye = torch.eye(2, dtype=torch.float64).expand_as(matrix)
    torch.testing.assert_close(matrix, eye, atol=2e-3, rtol=0)  # a pure translation
    reach = shift.abs().amax(0) / SIDE  # per axis, as a fraction of the side
    assert (reach <= 0.2 + 1e-3).all(), reach.tolist()
    assert (reach >= 0.17).all(), reach.tolist()  # 64 draws of U(-0.2, 0.2) reach past 0.17
