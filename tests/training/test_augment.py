"""Augmentation keeps image and masks aligned, also where a lesion touches the slice's border."""

from __future__ import annotations

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
