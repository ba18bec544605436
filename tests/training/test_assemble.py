"""Assembling a cascade from two CHS-Net runs: each stage comes from its own run, exactly."""

from __future__ import annotations

import pytest
import torch

from napari_chsnet.errors import OutputExistsError, WeightsError
from napari_chsnet.models.factory import build_model
from napari_chsnet.training.assemble import assemble_chsnet
from napari_chsnet.training.checkpoints import load_checkpoint, save_checkpoint


def _run(path, seed, lung_size, infection_size, **network):
    torch.manual_seed(seed)
    preprocessing = {
        "window_hu": [-1110, 255],
        "lung_input_size": lung_size,
        "infection_input_size": infection_size,
    }
    metadata = {"role": "lungs", "preprocessing": preprocessing, "metrics": {"val_dice_mean": seed / 10}}
    settings = {"base_channels": 4, **network}
    save_checkpoint(path, build_model("chsnet", **settings), "chsnet", metadata=metadata, half_precision=True)
    return load_checkpoint(path, expected_model="chsnet")


def test_each_stage_and_its_input_size_come_from_its_own_run(tmp_path):
    lungs = _run(tmp_path / "lungs.safetensors", 1, lung_size=128, infection_size=64)
    infection = _run(tmp_path / "infection.safetensors", 2, lung_size=64, infection_size=160)
    out = tmp_path / "cascade.safetensors"
    assemble_chsnet(lungs.path, infection.path, out)

    cascade = load_checkpoint(out, expected_model="chsnet")
    network = cascade.build()
    for mine, source in (
        (network.lung_net, lungs.build().lung_net),
        (network.infection_net, infection.build().infection_net),
    ):
        for name, value in source.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[name], value)
    sizes = cascade.metadata["preprocessing"]
    assert (sizes["lung_input_size"], sizes["infection_input_size"]) == (128, 160)
    assert cascade.metadata["metrics"] == {
        "lungs": {"val_dice_mean": 0.1},
        "infection": {"val_dice_mean": 0.2},
    }
    with pytest.raises(OutputExistsError):
        assemble_chsnet(lungs.path, infection.path, out)


def test_runs_of_different_widths_are_refused(tmp_path):
    narrow = _run(tmp_path / "narrow.safetensors", 1, 64, 64)
    wide = _run(tmp_path / "wide.safetensors", 1, 64, 64, base_channels=8)
    with pytest.raises(WeightsError, match="different network settings"):
        assemble_chsnet(narrow.path, wide.path, tmp_path / "out.safetensors")
