"""The training device: checked when the config is (before any data or output), resolved as inference
resolves ``auto`` (CUDA, then MPS, then the CPU; torchrun: this rank's GPU or the CPU), the same for
the teacher and the lung-map steps, and the process group's backend follows it. GPUs are faked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import napari_chsnet.inference.device as device_module
import napari_chsnet.inference.pipeline as pipeline
from napari_chsnet.errors import ConfigError
from napari_chsnet.training import distributed, recipes
from napari_chsnet.training.config import check_inputs, load_config
from napari_chsnet.training.lung_maps import with_predicted_lung_maps
from napari_chsnet.training.pseudo_labels import _write_mask, label_with_teacher

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    """No torchrun variables from the environment the tests run in."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A CUDA machine with two GPUs (no MPS); moving anything there would fail, so nothing may."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def mac(monkeypatch):
    """Apple silicon with a torch whose MPS backend has FFTs: MPS, no CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch, "__version__", "2.5.1")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def torchrun(monkeypatch, world_size: int, local_rank: int) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))


def test_auto_trains_on_mps_as_inference_runs_there(mac, monkeypatch):
    assert distributed.training_device("auto") == device_module.resolve_device("auto") == torch.device("mps")
    torchrun(monkeypatch, 2, 1)  # process groups are NCCL's or gloo's: the CPU under torchrun
    assert distributed.training_device("auto") == torch.device("cpu")


def test_auto_and_cuda_under_torchrun_are_this_rank_s_gpu(two_gpus, monkeypatch):
    assert distributed.training_device("auto") == torch.device("cuda", 0)
    torchrun(monkeypatch, 2, 1)
    assert distributed.training_device("auto") == torch.device("cuda", 1)
    assert distributed.training_device("cuda") == torch.device("cuda", 1)
    assert distributed.training_device("cpu") == torch.device("cpu")


@pytest.fixture
def process_group_calls(monkeypatch):
    """init_process_group and set_device recorded, not run."""
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("group", backend)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    return calls


def test_a_cpu_config_joins_gloo_on_a_gpu_machine_with_more_processes_than_gpus(
    two_gpus, monkeypatch, process_group_calls
):
    """It joined NCCL and called set_device(LOCAL_RANK), which fails past the GPU count."""
    torchrun(monkeypatch, 4, 3)
    distributed.init_from_env("cpu")
    assert process_group_calls == [("group", "gloo")]


def test_a_cuda_config_joins_nccl_on_this_rank_s_gpu(two_gpus, monkeypatch, process_group_calls):
    torchrun(monkeypatch, 2, 1)
    distributed.init_from_env("cuda")
    assert process_group_calls == [("set_device", torch.device("cuda", 1)), ("group", "nccl")]


def test_more_processes_than_gpus_is_one_line_before_the_group_is_joined(
    two_gpus, monkeypatch, process_group_calls
):
    torchrun(monkeypatch, 3, 2)
    for device in ("auto", "cuda"):
        with pytest.raises(ConfigError, match="LOCAL_RANK 2 has no GPU of its own: this machine has 2 CUDA"):
            distributed.init_from_env(device)
    assert process_group_calls == []


@pytest.mark.parametrize("device", ["cuda:1", "mps"])
def test_one_fixed_gpu_is_refused_under_torchrun(two_gpus, monkeypatch, device):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    torchrun(monkeypatch, 2, 0)
    with pytest.raises(ConfigError, match=f"device '{device}' does not suit torchrun's 2 processes"):
        distributed.checked_training_device(device)


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("cuda", "device 'cuda' is not available on this machine (available: cpu)"),
        ("mps", "device 'mps' is not available on this machine (available: cpu)"),
        ("cuda:1", "device 'cuda' is not available on this machine (available: cpu)"),
    ],
)
def test_a_device_this_machine_lacks_is_refused_when_the_config_is_checked(no_gpu, device, fragment):
    config = dataclasses.replace(load_config(TINY_CONFIG), device=device)
    with pytest.raises(ConfigError) as refused:
        check_inputs(config)
    assert fragment in str(refused.value)


def test_a_gpu_past_the_count_is_refused_when_the_config_is_checked(two_gpus):
    check_inputs(dataclasses.replace(load_config(TINY_CONFIG), device="cuda:1"))
    config = dataclasses.replace(load_config(TINY_CONFIG), device="cuda:2")
    with pytest.raises(ConfigError, match=r"'cuda:2' is not available on this machine: it has 2 CUDA device"):
        check_inputs(config)


def test_run_training_refuses_an_absent_device_before_reading_data_or_making_the_output(
    no_gpu, monkeypatch, tmp_path
):
    monkeypatch.setattr(recipes, "gather_slices", lambda *a, **k: pytest.fail("data was read"))
    config = dataclasses.replace(load_config(TINY_CONFIG), device="cuda", output=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="device 'cuda' is not available"):
        recipes.run_training(config, log=lambda message: None)
    assert list(tmp_path.iterdir()) == []


class _Built(Exception):
    """build_stages reached, with the device it was given."""


@pytest.fixture
def device_given_to_build_stages(monkeypatch):
    def record(settings, device, *_):
        raise _Built(device)

    monkeypatch.setattr(pipeline, "build_stages", record)


def test_the_teacher_runs_on_the_training_device_cuda_n(
    two_gpus, device_given_to_build_stages, tiny_set, tmp_path
):
    """A config's cuda:1 passed load_config and then was a ConfigError of inference's resolve_device."""
    with pytest.raises(_Built) as built:
        label_with_teacher(
            tiny_set / "chsnet.safetensors",
            [tmp_path / "slice_1.jpg"],
            tmp_path / "cache",
            0,
            "cuda:1",
            print,
        )
    assert built.value.args[0] == torch.device("cuda", 1)


def test_the_lung_maps_come_from_the_training_device_cuda_n(two_gpus, device_given_to_build_stages, tiny_set):
    with pytest.raises(_Built) as built:
        with_predicted_lung_maps([], tiny_set / "chsnet.safetensors", "cuda:1", print)
    assert built.value.args[0] == torch.device("cuda", 1)


def test_ranks_writing_the_same_teacher_label_at_once_both_succeed(monkeypatch, tmp_path):
    """Under torchrun every rank labels the same slices into one folder: with one temporary name per
    slice, a rank renamed the other's half-written file away and then failed on its own rename."""
    from PIL import Image

    save = Image.Image.save
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    other_rank = [True]

    def save_while_another_rank_writes(image, path, *args, **kwargs):
        save(image, path, *args, **kwargs)
        if other_rank:  # the other rank writes and renames the same slice's label meanwhile
            other_rank.clear()
            _write_mask(mask, tmp_path, "slice_1")

    monkeypatch.setattr(Image.Image, "save", save_while_another_rank_writes)
    _write_mask(mask, tmp_path, "slice_1")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["slice_1.png"]
    assert (np.asarray(Image.open(tmp_path / "slice_1.png")) > 127).sum() == 9


def test_a_lung_label_cache_write_that_fails_leaves_no_half_file(monkeypatch, tmp_path, phantom):
    """np.save straight into the cache name: a failed (or concurrent) write left a file a later run
    would load as the volume's labels."""
    from napari_chsnet.io.writers import write_volume
    from napari_chsnet.training import lung_labels

    volume = tmp_path / "ct.nii.gz"
    write_volume(volume, phantom.ct.hu, phantom.ct.geometry)
    monkeypatch.setattr(lung_labels, "lung_labels_from_hu", lambda hu, spacing: phantom.lungs)

    def disk_full(file, array, *args, **kwargs):
        handle = open(file, "wb") if isinstance(file, (str, Path)) else file  # noqa: SIM115
        handle.write(b"\x93NUMPY partial")
        handle.flush()
        raise OSError(28, "No space left on device")

    cache = tmp_path / "cache"
    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        recipes._cached_volume_slices(str(volume), 1, cache)
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(lung_labels, "lung_labels_from_hu", lambda hu, spacing: phantom.lungs)
    slices = recipes._cached_volume_slices(str(volume), 1, cache)
    (cached,) = cache.iterdir()
    assert cached.name.startswith("lunglabels_") and cached.suffix == ".npy"
    np.testing.assert_array_equal(np.load(cached), phantom.lungs)
    assert len(slices) == phantom.ct.shape[0]
