"""Training configurations: every shipped config loads; wrong settings fail with a message naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_chsnet.errors import ConfigError
from napari_chsnet.training.config import config_from_dict, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.input_size % 16 == 0


def test_paper_eamc_config_has_ten_members_on_512_slices():
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "eamc_paper.yaml")
    assert (config.eamc.members, config.eamc.slice_size, config.batch_size) == (10, 512, 16)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": "unet"}, "model must be one of"),
        ({"model": "rdunet", "stage": "lungs"}, "trains stage"),
        ({"model": "chsnet", "loss": "mse"}, "loss must be one of"),
        ({"model": "chsnet", "input_size": 100}, "multiple of 16"),
        ({"model": "chsnet", "epoch": 3}, "unknown setting"),
        ({"model": "chsnet", "data": {"phantom": 1}}, "data: unknown setting"),
        ({"model": "chsnet", "data": {"phantom_shape": [8, 64]}}, "phantom_shape"),
        ({"model": "chsnet", "ema_decay": 1.0}, "ema_decay must lie in"),
        ({"model": "chsnet", "data": {"pseudo_weight": 0}}, "pseudo_weight must lie in"),
        ({"model": "rdunet", "init_from": "x.safetensors", "fresh_stage": True}, "fresh_stage needs"),
        ({"model": "chsnet", "fresh_stage": True}, "fresh_stage needs"),
    ],
)
def test_invalid_settings_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, "test.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
