"""Device choice: auto order, absent devices refused (never a silent CPU run), no autocast on the CPU."""

from __future__ import annotations

import contextlib

import pytest
import torch

from napari_chsnet.errors import ConfigError
from napari_chsnet.inference.device import autocast, available_devices, describe_device, resolve_device


def test_cpu_is_always_available_and_listed_last():
    devices = available_devices()
    assert devices[-1] == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_takes_the_first_available_device():
    assert resolve_device("auto").type == available_devices()[0]


@pytest.mark.parametrize("absent", ["cuda", "mps"])
def test_an_absent_device_is_a_config_error_naming_the_available_ones(absent):
    if absent in available_devices():
        pytest.skip(f"{absent} is present on this machine")
    with pytest.raises(ConfigError, match=f"'{absent}' is not available.*available: .*cpu"):
        resolve_device(absent)


def test_an_unknown_device_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_no_mixed_precision_on_the_cpu():
    assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)
    assert describe_device(torch.device("cpu")) == "cpu"
