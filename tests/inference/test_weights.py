"""Weights sets: bundled fallback, folders, single files, foreign files, and the network cache."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from napari_chsnet.errors import WeightsError
from napari_chsnet.inference import weights as weights_module
from napari_chsnet.inference.weights import network_for, preprocessing_of, resolve_weights

from .factory import write_tiny_checkpoint


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """An empty stand-in for resources/weights/ (tests put files in it as needed)."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(weights_module, "bundled_weights_dir", lambda: folder)
    return folder


def test_a_folder_gives_its_files_and_the_lung_stage_is_chsnet(tiny_weights, bundled):
    found = resolve_weights("eamc", tiny_weights)
    assert set(found) == {"chsnet", "eamc"}
    assert found["chsnet"].path == tiny_weights / "chsnet.safetensors"
    assert found["eamc"].path == tiny_weights / "eamc.safetensors"
    assert set(resolve_weights("chsnet", tiny_weights)) == {"chsnet"}


def test_files_missing_from_a_folder_come_from_the_bundled_set(tmp_path, tiny_weights, bundled):
    shutil.copy(tiny_weights / "chsnet.safetensors", bundled)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_weights / "rdunet.safetensors", partial)
    found = resolve_weights("rdunet", partial)
    assert found["chsnet"].path == bundled / "chsnet.safetensors"
    assert found["rdunet"].path == partial / "rdunet.safetensors"


def test_a_folder_without_any_of_the_model_s_files_is_refused(tmp_path, tiny_weights, bundled):
    shutil.copy(tiny_weights / "chsnet.safetensors", bundled)
    shutil.copy(tiny_weights / "rdunet.safetensors", bundled)
    (tmp_path / "typo").mkdir()  # would otherwise run the bundled weights without a word
    with pytest.raises(WeightsError, match=r"has no rdunet.safetensors \(it holds no weights\)"):
        resolve_weights("rdunet", tmp_path / "typo")


def test_a_folder_of_another_model_is_refused_not_filled_from_the_bundled_set(
    tmp_path, tiny_weights, bundled
):
    """An RD-UNet fine-tune set (rdunet + its chsnet copy) given with --model eamc once ran the
    bundled EAMC without a word."""
    shutil.copy(tiny_weights / "eamc.safetensors", bundled)
    rdunet_set = tmp_path / "ft_rdunet"
    rdunet_set.mkdir()
    for name in ("chsnet.safetensors", "rdunet.safetensors"):
        shutil.copy(tiny_weights / name, rdunet_set)
    with pytest.raises(WeightsError) as refused:
        resolve_weights("eamc", rdunet_set)
    message = str(refused.value)
    assert "has no eamc.safetensors (it holds chsnet, rdunet weights)" in message
    assert "\n" not in message


def test_another_model_s_fine_tuned_set_is_refused_for_chsnet_too(tmp_path, tiny_weights):
    """Every EAMC/RD-UNet fine-tuned set holds a chsnet.safetensors copy, so `chsnet segment --weights SET`
    (the default model) ran that copy, the bundled CHS-Net, without a word. Its version.json says which
    model the set is for."""
    rdunet_set = tmp_path / "ft_rdunet"
    rdunet_set.mkdir()
    for name in ("chsnet.safetensors", "rdunet.safetensors"):
        shutil.copy(tiny_weights / name, rdunet_set)
    (rdunet_set / "version.json").write_text(json.dumps({"model": "rdunet", "files": ["rdunet.safetensors"]}))
    with pytest.raises(
        WeightsError, match=r"is a fine-tuned rdunet set \(version.json\); segment with --model rdunet"
    ):
        resolve_weights("chsnet", rdunet_set)
    assert set(resolve_weights("rdunet", rdunet_set)) == {"chsnet", "rdunet"}


def test_missing_bundled_weights_say_how_to_get_some(bundled):
    with pytest.raises(WeightsError, match=r"no bundled weights for chsnet .*chsnet train.*--weights"):
        resolve_weights("chsnet", None)


def test_a_single_file_takes_its_sibling_lung_stage_else_the_bundled_one(tmp_path, tiny_weights, bundled):
    assert (
        resolve_weights("eamc", tiny_weights / "eamc.safetensors")["chsnet"].path
        == tiny_weights / "chsnet.safetensors"
    )
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tiny_weights / "eamc.safetensors", alone)
    with pytest.raises(WeightsError, match="no bundled weights for chsnet"):
        resolve_weights("eamc", alone / "eamc.safetensors")
    found = resolve_weights("chsnet", tiny_weights / "chsnet.safetensors")
    assert set(found) == {"chsnet"}


@pytest.mark.parametrize(
    ("model", "file", "message"),
    [
        ("chsnet", "rdunet.safetensors", "holds a 'rdunet' network, not the 'chsnet' asked for"),
        ("eamc", "notes.txt", "is not a napari-chsnet checkpoint"),
        ("rdunet", "missing.safetensors", "does not exist"),
    ],
)
def test_foreign_or_missing_weights_files_are_refused(tmp_path, tiny_weights, bundled, model, file, message):
    (tmp_path / "notes.txt").write_text("not weights")
    shutil.copy(tiny_weights / "rdunet.safetensors", tmp_path)
    with pytest.raises(WeightsError, match=message):
        resolve_weights(model, tmp_path / file)


def test_networks_are_cached_until_their_file_changes(tmp_path):
    write_tiny_checkpoint(tmp_path, "chsnet")  # the lung stage, beside it as in a weights set
    path = write_tiny_checkpoint(tmp_path, "rdunet", seed=1)
    first = resolve_weights("rdunet", path)["rdunet"]
    network = network_for(first, torch.device("cpu"))
    assert network_for(resolve_weights("rdunet", path)["rdunet"], torch.device("cpu")) is network
    assert not network.training and not any(p.requires_grad for p in network.parameters())

    write_tiny_checkpoint(tmp_path, "rdunet", seed=2)  # a fine-tune rewrites the file in place
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = resolve_weights("rdunet", path)["rdunet"]
    rebuilt = network_for(second, torch.device("cpu"))
    assert second.sha256 != first.sha256
    assert rebuilt is not network
    assert not torch.equal(rebuilt.head.weight, network.head.weight)


@pytest.mark.parametrize("model", ["chsnet", "eamc", "rdunet"])
def test_cpu_networks_keep_channels_last_weights_and_give_the_same_probabilities(tmp_path, model):
    """oneDNN runs channels-last convolutions faster on the CPU (inference/weights.py); the layout must
    not change what a network computes."""
    write_tiny_checkpoint(tmp_path, "chsnet")  # the lung stage, beside it as in a weights set
    checkpoint = resolve_weights(model, write_tiny_checkpoint(tmp_path, model))[model]
    network = network_for(checkpoint, torch.device("cpu"))
    convolutions = [
        m.weight for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
    ]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    plain = checkpoint.build().eval()
    inputs = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    if model == "chsnet":
        network, plain = network.lung_net, plain.lung_net
    with torch.inference_mode():
        torch.testing.assert_close(network(inputs), plain(inputs), rtol=1e-4, atol=1e-5)


def test_preprocessing_comes_from_the_checkpoint_with_package_defaults(tmp_path, tiny_weights):
    stated = preprocessing_of(resolve_weights("eamc", tiny_weights)["eamc"])
    assert (stated.lung_input_size, stated.infection_input_size, stated.patch_size) == (64, 64, 32)
    shutil.copy(tiny_weights / "chsnet.safetensors", tmp_path)
    checkpoint = resolve_weights("eamc", write_tiny_checkpoint(tmp_path, "eamc", infection_input_size=80))[
        "eamc"
    ]
    with pytest.raises(WeightsError, match="EAMC slice size 80 is not a multiple of its patch size 32"):
        preprocessing_of(checkpoint)
