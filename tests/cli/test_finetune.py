"""``chsnet finetune`` refuses a device this machine lacks before it reads any data (as segment does)."""

from __future__ import annotations

import pytest

from napari_chsnet.cli import finetune as finetune_command
from napari_chsnet.cli import main
from napari_chsnet.inference.device import available_devices


def finetune_on(device: str, tmp_path) -> int:
    missing = tmp_path / "not_read.nii.gz"  # a device error must come before this is read
    args = ["--image", missing, "--lungs", missing, "--infection", missing, "-o", tmp_path / "out"]
    return main(["finetune", *map(str, args), "--device", device])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("gpu7", "unknown device 'gpu7'"),
        ("cuda:x", "unknown device 'cuda:x'"),
        ("cpu:1", "unknown device 'cpu:1'"),
        ("cuda:99", "is not available on this machine"),
    ],
)
def test_a_bad_device_is_one_line_and_exit_2(tmp_path, capsys, device, fragment):
    assert finetune_on(device, tmp_path) == 2
    assert fragment in one_error_line(capsys)


def test_an_absent_gpu_is_refused(tmp_path, capsys):
    absent = [kind for kind in ("cuda", "mps") if kind not in available_devices()]
    if not absent:
        pytest.skip("this machine has both CUDA and MPS")
    for kind in absent:
        assert finetune_on(kind, tmp_path) == 2
        assert f"device '{kind}' is not available" in one_error_line(capsys)


def test_present_devices_pass_normalised():
    assert finetune_command._checked_device(" CPU ") == "cpu"
    assert finetune_command._checked_device("auto") == "auto"
