"""A COVID-SemiSeg folder laid out wrong is one line naming the folder and what was expected, before the
output folder is made; slices left out for want of a mask are named in a warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_chsnet.cli import main
from napari_chsnet.errors import ConfigError
from napari_chsnet.training.config import check_inputs, config_from_dict
from napari_chsnet.training.datasets import semiseg_validation_names
from napari_chsnet.training.recipes import gather_slices

SLICES = range(1, 7)


@pytest.fixture
def semiseg(tmp_path, phantom, write_semiseg_slices) -> Path:
    """Six phantom slices laid out as COVID-SemiSeg's labelled ones (slice_1 ... slice_6)."""
    root = tmp_path / "semiseg"
    write_semiseg_slices(phantom, root / "train", SLICES, phantom.infection, "infection_gt")
    return root


def config_for(root: Path, tmp_path: Path, **data):
    return config_from_dict(
        {
            "model": "rdunet",
            "network": {"base_channels": 4, "se_reduction": 2},
            "input_size": 64,
            "epochs": 1,
            "device": "cpu",
            "data": {"semiseg": str(root), "validation_slices": 2, **data},
            "output": str(tmp_path / "run"),
        }
    )


def refusal(root: Path, tmp_path: Path, **data) -> str:
    with pytest.raises(ConfigError) as refused:
        check_inputs(config_for(root, tmp_path, **data))
    return str(refused.value)


def renamed(folder: Path, rename) -> None:
    for path in list(folder.iterdir()):
        path.rename(folder / rename(path.name))


def test_masks_saved_as_jpg_are_named_with_what_was_expected(semiseg, tmp_path):
    renamed(semiseg / "train" / "infection_gt", lambda name: name.replace(".png", ".jpg"))
    message = refusal(semiseg, tmp_path)
    assert f"{semiseg / 'train' / 'infection_gt'} holds no mask of the 6 slices" in message
    assert "slice_1.jpg" in message and "infection_gt/NAME.png" in message


def test_masks_named_otherwise_are_refused(semiseg, tmp_path):
    renamed(semiseg / "train" / "infection_gt", lambda name: f"mask_{name}")
    assert "holds no mask of the 6 slices" in refusal(semiseg, tmp_path)


def test_images_saved_as_png_are_refused(semiseg, tmp_path):
    images = semiseg / "train" / "images"
    renamed(images, lambda name: name.replace(".jpg", ".png"))
    message = refusal(semiseg, tmp_path)
    assert f"{images} holds no NAME.jpg slices (it holds 6 file(s): slice_1.png" in message


def test_an_empty_image_folder_is_refused(semiseg, tmp_path):
    for path in (semiseg / "train" / "images").iterdir():
        path.unlink()
    assert "holds no NAME.jpg slices (it is empty)" in refusal(semiseg, tmp_path)


def test_holding_out_every_slice_is_refused(semiseg, tmp_path):
    """It crashed deep in training: "Expected non-zero, positive output size"."""
    message = refusal(semiseg, tmp_path, validation_slices=6)
    assert "validation_slices 6 holds out every labelled slice" in message and "none is left" in message


def test_a_held_out_slice_without_its_mask_is_refused(semiseg, tmp_path):
    """The epoch was chosen on fewer slices, or by the training loss when none had a mask."""
    held_out = semiseg_validation_names(semiseg, 2)
    (semiseg / "train" / "infection_gt" / f"{held_out[0]}.png").unlink()
    message = refusal(semiseg, tmp_path)
    assert f"held-out validation slice(s) {held_out[0]} have no mask" in message


def test_unlabelled_slices_without_inf_net_labels_are_refused(
    semiseg, tmp_path, phantom, write_semiseg_slices
):
    write_semiseg_slices(phantom, semiseg / "unlabelled", SLICES, phantom.infection, "infnet_pseudo_gt")
    check_inputs(config_for(semiseg, tmp_path, unlabelled=2))
    for path in (semiseg / "unlabelled" / "infnet_pseudo_gt").iterdir():
        path.unlink()
    (semiseg / "unlabelled" / "infnet_pseudo_gt").rmdir()
    message = refusal(semiseg, tmp_path, unlabelled=2)
    assert "infnet_pseudo_gt does not exist" in message and "pseudo_teacher" in message


def test_slices_without_a_mask_are_named_in_a_warning(semiseg, tmp_path):
    """They were left out silently: only the sample count showed it."""
    held_out = set(semiseg_validation_names(semiseg, 2))
    missing = sorted(f"slice_{z}" for z in SLICES if f"slice_{z}" not in held_out)[:2]
    for name in missing:
        (semiseg / "train" / "infection_gt" / f"{name}.png").unlink()
    config = config_for(semiseg, tmp_path)
    check_inputs(config)
    messages: list[str] = []
    gather_slices(config, tmp_path / "cache", log=messages.append)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 1
    assert "2 of 6 slices have no NAME.png mask" in warnings[0]
    assert all(f"{name}.jpg" in warnings[0] for name in missing)


def test_a_mask_of_another_size_is_one_line_and_leaves_no_output(semiseg, tmp_path, capsys):
    """It was a numpy broadcasting traceback (exit 1) with an output folder left behind."""
    mask = semiseg / "train" / "infection_gt" / "slice_3.png"
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask)
    config = tmp_path / "c.yaml"
    config.write_text(
        "model: rdunet\nnetwork: {base_channels: 4, se_reduction: 2}\ninput_size: 64\nepochs: 1\n"
        f"device: cpu\ndata: {{semiseg: {semiseg}, validation_slices: 2}}\n"
    )
    output = tmp_path / "out" / "run"
    assert main(["train", "--config", str(config), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and f"mask {mask} is 7x5 px but its image is" in error
    assert not (tmp_path / "out").exists()


def test_a_data_folder_mistake_from_the_cli_is_one_line_and_makes_no_output(semiseg, tmp_path, capsys):
    renamed(semiseg / "train" / "infection_gt", lambda name: name.replace(".png", ".jpg"))
    config = tmp_path / "c.yaml"
    config.write_text(f"model: rdunet\ndevice: cpu\ndata: {{semiseg: {semiseg}}}\n")
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("chsnet train: error: data.semiseg:")
    assert not (tmp_path / "run").exists()
