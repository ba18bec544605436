"""``chsnet train`` and ``chsnet finetune`` in-process, as the CLI main registers them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from napari_chsnet.cli import finetune as finetune_command
from napari_chsnet.cli import train as train_command
from napari_chsnet.io.writers import write_volume
from napari_chsnet.models.checkpoints import file_sha256, load_checkpoint

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


def chsnet(argv: list[str]) -> int:
    """The `chsnet` command with the two training subcommands (the real main adds segment/evaluate)."""
    try:
        from napari_chsnet.cli import main
    except ImportError:
        main = None
    if main is not None:
        return main(argv)
    parser = argparse.ArgumentParser(prog="chsnet")
    subparsers = parser.add_subparsers(dest="command", required=True)
    train_command.add_parser(subparsers)
    finetune_command.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


def test_train_writes_a_checkpoint_and_keeps_it_without_overwrite(tmp_path, capsys):
    output = tmp_path / "run"
    assert chsnet(["train", "--config", str(TINY_CONFIG), "--output", str(output)]) == 0
    checkpoint = load_checkpoint(output / "chsnet.safetensors", expected_model="chsnet")
    assert checkpoint.metadata["training"]["train_data"]["cases"] == 1
    capsys.readouterr()
    assert chsnet(["train", "--config", str(TINY_CONFIG), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--overwrite" in error[0]


def test_train_reports_a_bad_config_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model: chsnet\nepoch: 3\n")
    assert chsnet(["train", "--config", str(config)]) == 2
    assert "unknown setting(s) epoch" in capsys.readouterr().err


def test_finetune_on_nifti_files_writes_a_usable_set(tmp_path, tiny_set, phantom, capsys):
    paths = {}
    for name, array, label in (
        ("ct", phantom.ct.hu, False),
        ("lungs", phantom.lungs, True),
        ("infection", phantom.infection, True),
    ):
        paths[name] = write_volume(tmp_path / f"{name}.nii.gz", array, phantom.ct.geometry, is_label=label)
    out = tmp_path / "tuned"
    before = file_sha256(tiny_set / "rdunet.safetensors")
    argv = [
        "finetune",
        "--model",
        "rdunet",
        "--image",
        str(paths["ct"]),
        "--lungs",
        str(paths["lungs"]),
        "--infection",
        str(paths["infection"]),
        "--weights",
        str(tiny_set),
        "--epochs",
        "1",
        "--replay",
        "0",
        "-o",
        str(out),
    ]
    assert chsnet(argv) == 0
    assert "Dice on the corrected slices" in capsys.readouterr().out
    assert load_checkpoint(out / "rdunet.safetensors", expected_model="rdunet").metadata["finetune"][
        "cases"
    ] == ["ct"]
    assert (out / "chsnet.safetensors").is_file() and file_sha256(tiny_set / "rdunet.safetensors") == before
    assert chsnet(argv) == 2  # the output exists
    assert "--overwrite" in capsys.readouterr().err


def test_finetune_needs_matching_triples(tmp_path, capsys):
    assert chsnet(["finetune", "--image", "a.nii.gz", "--lungs", "b.nii.gz", "-o", str(tmp_path / "x")]) == 2
    assert "one --lungs and one --infection per --image" in capsys.readouterr().err


@pytest.mark.parametrize("rate", ["nan", "inf", "0", "-1e-4"])
def test_finetune_refuses_a_learning_rate_that_cannot_train(tmp_path, capsys, rate):
    argv = ["finetune", "--image", "a.nii.gz", "--lungs", "b.nii.gz", "--infection", "c.nii.gz"]
    assert chsnet([*argv, f"--learning-rate={rate}", "-o", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # argparse prints its usage above
    assert "argument --learning-rate: expected a finite number above 0" in error
    assert not (tmp_path / "x").exists()
