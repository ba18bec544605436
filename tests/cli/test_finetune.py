"""``chsnet finetune`` refuses a device this machine lacks before it reads any data (as segment does)."""

from __future__ import annotations

import json

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


# ---------------------------------------------------------------- bad inputs and outputs: one line, exit 2


@pytest.fixture(scope="module")
def masks_of_ras_nifti(tmp_path_factory, phantom):
    """Lung labels and infection of the phantom, on ``ras_nifti``'s grid."""
    from napari_chsnet.io.volume import Geometry
    from napari_chsnet.io.writers import write_volume

    geometry = Geometry(phantom.ct.geometry.spacing_mm, (-100.0, -80.0, 20.0), source_orientation="RAS")
    folder = tmp_path_factory.mktemp("masks")
    lungs = write_volume(folder / "lungs.nii.gz", phantom.lungs.astype("uint8"), geometry, is_label=True)
    infection = write_volume(
        folder / "infection.nii.gz", phantom.infection.astype("uint8"), geometry, is_label=True
    )
    return lungs, infection


@pytest.mark.parametrize("missing", ["--lungs", "--infection"])
def test_a_missing_mask_is_one_line_and_exit_2(tmp_path, capsys, ras_nifti, masks_of_ras_nifti, missing):
    """Was a FileNotFoundError traceback and exit 1 (--image was checked, the masks were not)."""
    paths = {"--image": ras_nifti, "--lungs": masks_of_ras_nifti[0], "--infection": masks_of_ras_nifti[1]}
    paths[missing] = tmp_path / "nope.nii.gz"
    args = [str(a) for option, path in paths.items() for a in (option, path)]
    assert main(["finetune", *args, "-o", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert f"{missing} {tmp_path / 'nope.nii.gz'} does not exist" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def _finetune_args(ras_nifti, masks, output, weights) -> list[str]:
    lungs, infection = masks
    return [
        "finetune",
        *("--image", str(ras_nifti), "--lungs", str(lungs), "--infection", str(infection)),
        *("--weights", str(weights), "--epochs", "1", "--replay", "0", "--device", "cpu", "-o", str(output)),
    ]


def test_an_output_that_cannot_be_written_is_one_line_before_training(
    tmp_path, capsys, ras_nifti, masks_of_ras_nifti, tiny_weights
):
    """Was an OSError traceback from mkdtemp (a read-only -o); here a file stands where the folder goes."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(_finetune_args(ras_nifti, masks_of_ras_nifti, blocker / "out", tiny_weights)) == 2
    line = one_error_line(capsys)
    assert "cannot write the new weights set" in line and "choose a writable output folder" in line


def test_the_cli_says_when_no_epoch_improved(
    tmp_path, capsys, ras_nifti, masks_of_ras_nifti, tiny_weights, monkeypatch
):
    from napari_chsnet.training import finetune as finetune_module

    monkeypatch.setattr(finetune_module, "pooled_score_value", lambda *_args: -1.0)  # every epoch worse
    output = tmp_path / "out"
    assert main(_finetune_args(ras_nifti, masks_of_ras_nifti, output, tiny_weights)) == 0
    out = capsys.readouterr().out
    assert (
        "note: no epoch improved on the corrected slices; the new version holds the starting weights" in out
    )
    assert out.count("no epoch improved") == 1  # was said twice: in the log line and as a note
    assert (output / "version.json").is_file()


def test_the_printed_segment_command_uses_the_tuned_model(
    tmp_path, capsys, ras_nifti, masks_of_ras_nifti, tiny_weights
):
    """The hint once left out --model: an eamc or rdunet set (it also holds a chsnet.safetensors copy)
    then segmented with CHS-Net."""
    model, output = "rdunet", tmp_path / "set"
    args = _finetune_args(ras_nifti, masks_of_ras_nifti, output, tiny_weights)
    assert main([*args, "--model", model]) == 0
    hint = capsys.readouterr().out.strip().splitlines()[-1]
    command = hint.split("(use: ", 1)[1].rstrip(")").split()
    assert command[:2] == ["chsnet", "segment"]
    assert main([*command[1:], str(ras_nifti), "-o", str(tmp_path / "seg"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert report["model"] == model
    assert finetune_command.segment_command("chsnet", output) == f"chsnet segment --weights {output}"
