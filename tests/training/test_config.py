"""Training configurations: every shipped config loads; wrong settings fail with a message naming them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_chsnet.errors import ConfigError
from napari_chsnet.models.factory import build_model
from napari_chsnet.models.losses import CEDiceLoss, FocalTverskyLoss, IoULoss
from napari_chsnet.training import recipes
from napari_chsnet.training.augment import AugmentSettings
from napari_chsnet.training.config import config_from_dict, load_config
from napari_chsnet.training.loop import FitSettings, fit
from napari_chsnet.training.stage_data import StageArrays

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
        ({"model": "rdunet", "loss": "dice", "loss_options": {"alpha": 0.3}}, "takes no option"),
        ({"model": "rdunet", "loss": "tversky", "loss_options": {"beta": -1}}, "must be a number"),
        ({"model": "rdunet", "loss": "tversky", "loss_options": [0.3, 0.7]}, "must be a mapping"),
        ({"model": "chsnet", "input_size": 100}, "multiple of 16"),
        ({"model": "chsnet", "epoch": 3}, "unknown setting"),
        ({"model": "chsnet", "data": {"phantom": 1}}, "data: unknown setting"),
        ({"model": "chsnet", "data": {"phantom_shape": [8, 64]}}, "phantom_shape"),
        ({"model": "chsnet", "ema_decay": 1.0}, "ema_decay must lie in"),
        ({"model": "chsnet", "data": {"pseudo_weight": 0}}, "pseudo_weight must lie in"),
        ({"model": "chsnet", "data": {"validation_slices": -1}}, "validation_slices must be a whole"),
        ({"model": "chsnet", "data": {"validation_slices": 2.0}}, "validation_slices must be a whole"),
        ({"model": "chsnet", "data": {"expert_repeat": 0}}, "expert_repeat must be a whole number"),
        ({"model": "chsnet", "data": {"expert_repeat": 2.5}}, "expert_repeat must be a whole number"),
        ({"model": "eamc", "data": {"expert_repeat": 2}}, "expert_repeat is not for eamc"),
        ({"model": "rdunet", "init_from": "x.safetensors", "fresh_stage": True}, "fresh_stage needs"),
        ({"model": "chsnet", "fresh_stage": True}, "fresh_stage needs"),
        ({"model": "chsnet", "data": {"lung_maps": "expert"}}, "lung_maps must be one of labels, predicted"),
        ({"model": "chsnet", "data": {"lung_maps": "predicted"}}, "needs an init_from"),
        (
            {"model": "rdunet", "init_from": "x.safetensors", "data": {"lung_maps": "predicted"}},
            "is for CHS-Net",
        ),
        (
            {
                "model": "chsnet",
                "stage": "lungs",
                "init_from": "x.safetensors",
                "data": {"lung_maps": "predicted"},
            },
            "infection stage",
        ),
        ({"model": "chsnet", "epochs": "2"}, "epochs must be a whole number; got '2'"),
        ({"model": "chsnet", "batch_size": 0}, "batch_size must be ≥ 1"),
        ({"model": "chsnet", "learning_rate": 0}, "learning_rate must be > 0"),
        ({"model": "chsnet", "learning_rate": "fast"}, "learning_rate must be a number"),
        ({"model": "chsnet", "half_precision": "no"}, "half_precision must be true or false"),
        ({"model": "chsnet", "device": "gpu0"}, "device must be auto, cpu, cuda"),
        ({"model": "chsnet", "augment": {"rotation_deg": "big"}}, "augment: rotation_deg must be a number"),
        ({"model": "chsnet", "data": {"hu_volumes": "ct.nii.gz"}}, "hu_volumes must be a list"),
        ({"model": "eamc", "eamc": {"members": 0}}, "members must be ≥ 1"),
        ({"model": "eamc", "eamc": {"learning_rates": []}}, "learning_rates must be numbers > 0"),
        ({"model": "chsnet", "loss_options": {"bce_weight": 2}}, "bce_weight is a share"),
        ({"model": "eamc", "loss": "focal", "loss_options": {"alpha": 1.5}}, "alpha is a share"),
        ({"model": "eamc", "loss": "focal_tversky", "loss_options": {"gamma": 0}}, "gamma must be > 0"),
        ({"model": "eamc", "loss": "iou", "loss_options": {"smooth": 0}}, "smooth must be > 0"),
        ({"model": "rdunet", "loss": "dice", "loss_options": {"smooth": 0.0}}, "smooth must be > 0"),
        ({"model": "eamc", "loss": "iou", "loss_options": {"alpha": 0.3}}, "takes no option"),
    ],
)
def test_invalid_settings_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, "test.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(ConfigError, match="emptydir is a folder, not a config file") as raised:
        load_config(empty)
    assert "does not exist" not in str(raised.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_loss_options_reach_the_loss_a_recipe_trains_with():
    """A precision-weighted Tversky loss (false positives 0.7) costs more for invented lesion than for missed."""
    config = config_from_dict(
        {"model": "rdunet", "loss": "tversky", "loss_options": {"alpha": 0.3, "beta": 0.7}}
    )
    loss = recipes._loss(config)
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1  # 16 lesion pixels
    confident = 20.0
    invented = torch.where(target > 0, confident, -confident)
    invented[..., 0, :] = confident  # 8 false positives
    missed = torch.where(target > 0, confident, -confident)
    missed[..., 2, 2:6] = -confident
    missed[..., 3, 2:6] = -confident  # 8 false negatives
    assert (loss.alpha, loss.beta) == (0.3, 0.7)
    assert loss(invented, target).item() > loss(missed, target).item()
    recall_weighted = recipes._loss(config_from_dict({"model": "rdunet", "loss": "tversky"}))
    assert recall_weighted(invented, target).item() < recall_weighted(missed, target).item()


def test_a_folder_of_configs_is_named_with_the_configs_it_holds(tmp_path):
    (tmp_path / "rdunet.yaml").write_text("model: rdunet\n")
    with pytest.raises(ConfigError, match=r"is a folder, not a config file; .*holds rdunet\.yaml"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("name", "cls", "options", "reached"),
    [
        ("ce_dice", CEDiceLoss, {"smooth": 0.5}, lambda loss: loss.dice.smooth),
        ("iou", IoULoss, {"smooth": 0.5}, lambda loss: loss.smooth),
        ("focal_tversky", FocalTverskyLoss, {"gamma": 1.5}, lambda loss: loss.gamma),
    ],
)
def test_eamc_comparison_losses_are_selectable_and_train_a_step(name, cls, options, reached):
    """EAMC Eq. 5, 6, 8 by their config names: built with their options, they train an AMC-Net member."""
    config = config_from_dict({"model": "eamc", "loss": name, "loss_options": options})
    loss = recipes._loss(config)
    assert type(loss) is cls and reached(loss) == next(iter(options.values()))
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:20, 10:22] = 1
    train = StageArrays(images, masks, torch.ones(2))
    network = build_model("amcnet", base_channels=4, dropout=0.0)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    steps = []
    settings = FitSettings(epochs=1, batch_size=2, augment=AugmentSettings.none())
    result = fit(
        network, train, StageArrays.empty(1, 32), loss, settings, on_step=lambda *step: steps.append(step)
    )
    assert len(steps) == 1 and torch.isfinite(torch.tensor(steps[0][2])) and steps[0][2] > 0
    assert any(not torch.equal(before[k], v) for k, v in result.best_state.items())


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("model: rdunet\nlearning_rate: 1e-3\neamc:\n  learning_rates: [1e-4, 2e-4]\n")
    config = load_config(path)  # PyYAML reads 1e-3 as text
    assert config.learning_rate == 0.001 and config.eamc.learning_rates == (1e-4, 2e-4)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": "chsnet"}, "names no training data"),
        ({"model": "chsnet", "data": {"semiseg": "/nowhere/covid-semiseg"}}, "holds no train/images"),
        (
            {"model": "chsnet", "init_from": "/nowhere/chsnet.safetensors", "data": {"phantoms": 1}},
            "init_from",
        ),
        ({"model": "chsnet", "data": {"hu_volumes": ["/nowhere/ct.nii.gz"]}}, "hu_volumes: /nowhere"),
        ({"model": "chsnet", "data": {"volume_folders": ["/nowhere"]}}, "is not a folder"),
    ],
)
def test_missing_inputs_are_named_before_any_data_is_read(tmp_path, raw, message):
    config = config_from_dict({**raw, "output": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=message):
        recipes.run_training(config, log=lambda _message: None)
    assert not (tmp_path / "run").exists()


def test_the_torchrun_entry_point_has_help_and_refuses_a_missing_config_in_one_line(tmp_path):
    module = [sys.executable, "-m", "napari_chsnet.training.recipes"]
    shown = subprocess.run([*module, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "config" in shown.stdout
    missing = tmp_path / "absent.yaml"
    refused = subprocess.run([*module, str(missing)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "absent.yaml" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"learning_rate": "nan"}, "learning_rate"),
        ({"learning_rate": "1e999"}, "learning_rate"),
        ({"max_minutes": float("inf")}, "max_minutes"),
        ({"ema_decay": float("nan")}, "ema_decay"),
        ({"data": {"pseudo_weight": float("nan")}}, "data: pseudo_weight"),
        ({"data": {"phantom_anatomy_variation": float("inf")}}, "data: phantom_anatomy_variation"),
        ({"augment": {"rotation_deg": float("nan")}}, "augment: rotation_deg"),
        ({"augment": {"gamma": float("inf")}}, "augment: gamma"),
        ({"eamc": {"learning_rates": [1e-3, float("nan")]}}, "eamc: learning_rates[1]"),
        ({"loss": "tversky", "loss_options": {"alpha": float("nan")}}, "loss_options.alpha"),
        ({"loss": "tversky", "loss_options": {"beta": float("inf")}}, "loss_options.beta"),
        ({"network": {"base_channels": 4, "dropout": float("nan")}}, "network.dropout"),
    ],
)
def test_every_float_setting_must_be_finite(raw, key):
    """NaN or infinity crashed training (exit 1) or trained to a NaN loss and wrote Infinity to metrics.json."""
    with pytest.raises(ConfigError, match=rf"test.yaml:? {re.escape(key)} must be a finite number"):
        config_from_dict({"model": "eamc" if "eamc" in raw else "rdunet", **raw}, "test.yaml")


def test_yaml_nan_and_inf_are_refused_by_name(tmp_path):
    path = tmp_path / "lr.yaml"
    for text in (".nan", ".inf", "-.inf", ".NaN"):
        path.write_text(f"model: rdunet\nlearning_rate: {text}\n")
        with pytest.raises(ConfigError, match="learning_rate must be a finite number") as error:
            load_config(path)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("model: chsnet\nstage: [lungs\n", ("line 3, column 1", "expected ','", "flow sequence at line 2")),
        ("model: chsnet\n epochs: 2\n  x: 1\n", ("line 2, column 8", "mapping values are not allowed")),
        ("model: chsnet\n\tepochs: 2\n", ("line 2, column 1", "cannot start any token")),
        ("model: *undefined\n", ("line 1, column 8", "undefined alias")),
    ],
)
def test_malformed_yaml_is_one_line_with_where_and_what(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path} is not valid YAML: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_training_never_writes_into_the_bundled_weights_even_under_torchrun(tmp_path):
    """``chsnet train`` refused an output in the bundled weights folder, but torchrun's entry point
    (python -m napari_chsnet.training.recipes) reached run_training without that check."""
    from napari_chsnet.errors import OutputExistsError
    from napari_chsnet.resources_path import bundled_weights_dir

    config = config_from_dict(
        {"model": "rdunet", "output": str(bundled_weights_dir()), "data": {"phantoms": 1}}
    )
    before = {p.name: p.stat().st_mtime_ns for p in bundled_weights_dir().iterdir()}
    with pytest.raises(OutputExistsError, match="only read, never written"):
        recipes.run_training(config, log=lambda _message: None)
    assert {p.name: p.stat().st_mtime_ns for p in bundled_weights_dir().iterdir()} == before


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"base_chanels": 8}, "network: unknown setting(s) base_chanels; rdunet takes"),
        ({"base_channels": "8"}, "network.base_channels must be a whole number; got '8'"),
        ({"base_channels": 0}, "network.base_channels must be ≥ 1"),
        ({"dropout": "much"}, "network.dropout must be a number"),
        ({"dc_rates": 3}, "network.dc_rates must be a list"),
        ({"base_channels": 4}, "reduction 8 is too large for 4 channels"),
        ({"dropout": 2}, "dropout probability has to be between 0 and 1"),
    ],
)
def test_network_settings_are_checked_when_the_config_is_loaded(network, message):
    """A typo, text for a number or a value the network rejects failed only after all data was read
    (a TypeError traceback for the text), leaving an empty output folder."""
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        config_from_dict({"model": "rdunet", "network": network}, "test.yaml")
    assert str(refused.value).startswith("test.yaml:")


def test_network_numbers_written_as_text_are_numbers():
    config = config_from_dict({"model": "rdunet", "network": {"dropout": "2e-1", "base_channels": 8}})
    assert config.network == {"dropout": 0.2, "base_channels": 8}


def test_eamc_takes_its_member_count_from_eamc_members_only():
    with pytest.raises(ConfigError, match="network.n_members is not a network setting; set eamc.members"):
        config_from_dict({"model": "eamc", "network": {"n_members": 3}})


def test_build_model_reports_a_setting_of_the_wrong_type_as_a_config_error():
    from napari_chsnet.models.factory import build_model

    with pytest.raises(ConfigError, match="model 'rdunet'"):
        build_model("rdunet", dropout="0.2")


def test_loss_options_written_as_text_are_numbers():
    """``{alpha: 3e-1}`` (text to PyYAML) was refused as 'must be a number'."""
    config = config_from_dict({"model": "rdunet", "loss": "tversky", "loss_options": {"alpha": "3e-1"}})
    assert config.loss_options == {"alpha": 0.3}
    with pytest.raises(ConfigError, match="loss_options.alpha must be a number; got 'much'"):
        config_from_dict({"model": "rdunet", "loss": "tversky", "loss_options": {"alpha": "much"}})


def _paper(name: str):
    return load_config(CONFIGS[0].parent / f"{name}.yaml")


@pytest.mark.parametrize("name", ["chsnet_paper_lungs", "chsnet_paper", "rdunet_paper", "eamc_paper"])
def test_the_paper_configs_are_supervised_as_the_papers(name):
    assert _paper(name).data.unlabelled == 0


def test_the_paper_chsnet_infection_run_starts_from_the_paper_lung_run():
    lungs, infection = _paper("chsnet_paper_lungs"), _paper("chsnet_paper")
    assert (lungs.stage, lungs.init_from, infection.stage) == ("lungs", None, "infection")
    assert infection.init_from == f"{lungs.output}/chsnet.safetensors"


@pytest.mark.parametrize("name", ["rdunet_paper", "eamc_paper"])
def test_the_paper_configs_without_intensity_jitter_have_none(name):
    augment = _paper(name).augment
    assert (augment.contrast, augment.brightness, augment.gamma) == (0.0, 0.0, 0.0)
