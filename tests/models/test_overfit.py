"""Each network (small width) fits four synthetic disk slices: the wiring can learn."""

import pytest
import torch

from napari_chsnet.models import build_model
from napari_chsnet.models.losses import BCEDiceLoss
from napari_chsnet.models.metrics import dice

# (config, steps, learning rate): the fewest steps that reach Dice > 0.97 in eval mode on one thread, with
# margin; BatchNorm's running statistics, used in eval mode, are what lag behind the training loss.
CASES = {
    "raiunet": ({"base_channels": 4}, 60, 3e-2),
    "amcnet": ({"base_channels": 4, "dropout": 0.0}, 60, 1e-2),
    "rdunet": ({"base_channels": 8, "dropout": 0.0}, 60, 1e-2),
}


def _fit(model, forward, images, masks, steps, lr=1e-2):
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = BCEDiceLoss()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = loss_fn(forward(images), masks)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.inference_mode():
        return dice(forward(images).sigmoid().numpy() >= 0.5, masks.numpy())


@pytest.mark.parametrize("key", list(CASES))
def test_network_overfits_disks(key, disk_slices):
    torch.manual_seed(0)
    config, steps, lr = CASES[key]
    model = build_model(key, **config)
    score = _fit(model, model, *disk_slices, steps, lr)
    assert score > 0.9, f"{key}: Dice {score:.3f} after {steps} steps"


def test_chsnet_infection_stage_overfits_on_contour_maps(disk_slices):
    torch.manual_seed(0)
    images, masks = disk_slices
    model = build_model("chsnet", base_channels=4)
    lung_prob = torch.zeros_like(masks)
    lung_prob[..., 8:56, 8:56] = 1.0  # a "lung" box that holds every disk
    score = _fit(model, lambda x: model.infection_net(model.infection_input(x, lung_prob)), images, masks, 60)
    assert score > 0.9, f"chsnet infection stage: Dice {score:.3f}"


def test_eamc_member_overfits_and_vote_agrees(disk_slices):
    torch.manual_seed(0)
    images, masks = disk_slices
    model = build_model("eamc", n_members=1, base_channels=4, dropout=0.0)
    _fit(model.members[0], model.members[0], images, masks, 60)
    with torch.inference_mode():
        mask, _ = model.vote(model(images))
    assert dice(mask.numpy(), masks.numpy()) > 0.9
