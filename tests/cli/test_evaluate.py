"""``chsnet evaluate`` on 8-bit slices laid out like COVID-SemiSeg (lung-cropped, rotated 90°)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_chsnet.cli import main
from napari_chsnet.cli.evaluate import foreground_of_masks
from napari_chsnet.inference.orientation import upright
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models.metrics import METRIC_NAMES
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.datasets import read_gray_image


@pytest.fixture
def semiseg_like(tmp_path, phantom, write_semiseg_slices):
    images, masks = write_semiseg_slices(phantom, tmp_path, (4, 6, 8), phantom.infection)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "no_mask.png")
    return images, masks


def test_json_output_has_the_paper_metrics_mean_and_pooled(semiseg_like, tiny_weights, capsys):
    images, masks = semiseg_like
    args = ["evaluate", "--images", str(images), "--masks", str(masks), "--weights", str(tiny_weights)]
    assert main([*args, "--model", "eamc", "--rotate", "90", "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out)
    keys = {"n_images", "target", "rotation", "rotation_estimate", "mean", "pooled", "precision", "per_image"}
    assert set(scores) == keys and scores["n_images"] == 3 and scores["rotation"] == 90
    assert scores["precision"] == "float32"  # tests/conftest.py pins it; bfloat16 on an AMX CPU otherwise
    assert scores["target"] == "infection"
    per_image = scores["per_image"]
    assert sorted(per_image) == sorted(p.stem for p in masks.iterdir())
    assert np.mean([m["dice"] for m in per_image.values()]) == pytest.approx(scores["mean"]["dice"])
    for kind in ("mean", "pooled"):
        assert set(scores[kind]) == set(METRIC_NAMES)
        assert all(v is None or 0.0 <= v <= 1.0 for v in scores[kind].values())
    assert "1 image(s) without a mask" in captured.err


def test_the_table_lists_every_metric(semiseg_like, tiny_weights, capsys):
    images, masks = semiseg_like
    assert (
        main(["evaluate", "--images", str(images), "--masks", str(masks), "--weights", str(tiny_weights)])
        == 0
    )
    out = capsys.readouterr().out
    for name in METRIC_NAMES:
        assert name in out


def test_an_explicit_rotation_is_used_and_reported(semiseg_like, tiny_weights, capsys):
    images, masks = semiseg_like
    args = ["evaluate", "--images", str(images), "--masks", str(masks), "--weights", str(tiny_weights)]
    assert main([*args, "--json", "--rotate", "270"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["rotation"] == 270 and result["rotation_estimate"] is None
    assert "--rotate auto" not in captured.err
    assert main([*args, "--rotate", "-90"]) == 2
    assert "choose from auto, 0, 90, 180, 270" in capsys.readouterr().err


def test_rotate_90_turns_semiseg_slices_anterior_up(tmp_path):
    anterior_up = np.zeros((6, 4), np.uint8)
    anterior_up[0, :] = 255  # anterior row at the top
    path = tmp_path / "rotated.png"
    Image.fromarray(np.rot90(anterior_up, 1)).save(path)  # COVID-SemiSeg: anterior on the left
    assert np.array_equal(upright(read_gray_image(path), 90), anterior_up)
    assert np.array_equal(upright(read_gray_image(path), 0), np.rot90(anterior_up, 1))


def _label_copies(masks, tmp_path):
    """The 0/255 masks rewritten as 0/1 grey PNGs and as palette PNGs whose foreground is split into
    labels 1 and 2, with colours whose grey value (255 and 38) is not the label."""
    binary, palette = tmp_path / "masks_01", tmp_path / "masks_palette"
    binary.mkdir()
    palette.mkdir()
    for path in masks.iterdir():
        foreground = read_gray_image(path) > 127
        Image.fromarray(foreground.astype(np.uint8)).save(binary / path.name)
        labels = foreground.astype(np.uint8)
        labels[:, labels.shape[1] // 2 :] *= 2  # right half of the target: label 2
        image = Image.fromarray(labels, mode="P")
        image.putpalette([0, 0, 0, 255, 255, 255, 128, 0, 0] + [0] * 759)
        image.save(palette / path.name)
    return binary, palette


def test_label_image_masks_score_as_the_same_0_255_masks(semiseg_like, tiny_weights, tmp_path, capsys):
    """0/1 and palette label masks (COVID-SemiSeg's multiclass masks are palette PNGs 0/1/2) score
    exactly as the 0/255 masks, and stderr says how they were read; read as 0/255 they scored nothing."""
    images, masks = semiseg_like
    args = ["evaluate", "--images", str(images), "--weights", str(tiny_weights), "--rotate", "90", "--json"]
    assert main([*args, "--masks", str(masks)]) == 0
    reference = json.loads(capsys.readouterr().out)
    # the scores depend on the masks (read as empty, every accuracy of the tiny model's output would differ)
    assert all(m["accuracy"] < 1 for m in reference["per_image"].values())
    for folder in _label_copies(masks, tmp_path):
        assert main([*args, "--masks", str(folder)]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["per_image"] == reference["per_image"], folder.name
        assert "read as label images, any non-zero value is the target" in captured.err
    assert "values 1, 2)" in captured.err


def test_target_labels_score_one_label_of_a_multiclass_mask(semiseg_like, tiny_weights, tmp_path, capsys):
    """Known answer: --target-labels 1 on the palette masks (target split into labels 1 and 2) scores
    exactly as 0/1 masks holding label 1 alone; 1,2 as the whole target; a label no mask holds exits 2."""
    images, masks = semiseg_like
    args = ["evaluate", "--images", str(images), "--weights", str(tiny_weights), "--rotate", "90", "--json"]
    _, palette = _label_copies(masks, tmp_path)
    only_1 = tmp_path / "only_label_1"
    only_1.mkdir()
    for path in palette.iterdir():
        Image.fromarray((np.asarray(Image.open(path)) == 1).astype(np.uint8)).save(only_1 / path.name)
    assert main([*args, "--masks", str(only_1)]) == 0
    expected = json.loads(capsys.readouterr().out)["per_image"]
    assert main([*args, "--masks", str(palette), "--target-labels", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["per_image"] == expected
    assert main([*args, "--masks", str(masks)]) == 0
    whole = json.loads(capsys.readouterr().out)["per_image"]
    assert main([*args, "--masks", str(palette), "--target-labels", "2,1"]) == 0
    assert json.loads(capsys.readouterr().out)["per_image"] == whole != expected
    assert main([*args, "--masks", str(palette), "--target-labels", "3"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the note on the image without a mask
    assert (
        error.startswith("chsnet: error: no mask in")
        and "holds --target-labels 3 (their values: 1, 2)" in error
    )


def test_0_255_masks_keep_jpeg_noise_as_background():
    noisy_empty = np.array([[0, 3], [2, 0]], np.uint8)  # an empty slice's mask saved as JPEG
    lesion = np.array([[250, 4], [0, 255]], np.uint8)
    assert [m.tolist() for m in foreground_of_masks([noisy_empty, lesion])] == [
        [[False, False], [False, False]],
        [[True, False], [False, True]],
    ]


def test_bad_evaluation_inputs_exit_2(tmp_path, semiseg_like, tiny_weights, capsys):
    images, masks = semiseg_like
    weights = ["--weights", str(tiny_weights)]
    assert main(["evaluate", "--images", str(tmp_path / "none"), "--masks", str(masks), *weights]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--images", str(images), "--masks", str(empty), *weights]) == 2
    assert "holds no" in capsys.readouterr().err
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "slice_4.png")  # wrong size
    assert main(["evaluate", "--images", str(images), "--masks", str(masks), *weights]) == 2
    assert "must match their images" in capsys.readouterr().err
    assert main(["evaluate", "--images", str(images), "--masks", str(masks), "--rotate", "45"]) == 2


def test_two_images_sharing_a_name_are_refused_not_one_silently_kept(semiseg_like, tiny_weights, capsys):
    images, masks = semiseg_like
    Image.open(images / "slice_4.jpg").save(images / "slice_4.png")  # e.g. a re-export beside the original
    args = ["evaluate", "--images", str(images), "--masks", str(masks), "--weights", str(tiny_weights)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "slice_4.jpg" in err and "slice_4.png" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_target_lungs_scores_the_bundled_lung_stage_against_lung_masks(
    tmp_path, capsys, write_semiseg_slices
):
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    phantom = make_phantom(seed=2)
    images, masks = write_semiseg_slices(phantom, tmp_path, (14, 24, 34), phantom.lungs)
    args = [
        "evaluate",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--rotate",
        "90",
        "--json",
        "--device",
        "cpu",
    ]
    assert main([*args, "--target", "lungs"]) == 0
    lungs = json.loads(capsys.readouterr().out)
    assert lungs["target"] == "lungs" and lungs["n_images"] == 3
    assert lungs["mean"]["dice"] > 0.93, f"lung Dice {lungs['mean']['dice']:.3f} on phantom slices"
    assert main(args) == 0
    infection = json.loads(capsys.readouterr().out)
    assert infection["mean"]["dice"] < 0.7, "lung masks are not infection: the default target must differ"


@pytest.mark.slow
def test_auto_rotation_turns_semiseg_like_slices_back_and_says_so(tmp_path, capsys, write_semiseg_slices):
    """The default, --rotate auto, finds the 90° turn of phantom slices stored like COVID-SemiSeg's
    with the bundled lung stage, and scores them as --rotate 90 does."""
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    phantom = make_phantom(seed=2)
    images, masks = write_semiseg_slices(phantom, tmp_path, (14, 20, 24, 30, 34), phantom.infection)
    args = ["evaluate", "--images", str(images), "--masks", str(masks), "--json", "--device", "cpu"]
    assert main(args) == 0
    captured = capsys.readouterr()
    auto = json.loads(captured.out)
    assert auto["rotation"] == 90 and auto["rotation_estimate"]["votes"]["90"] >= 4
    assert "chsnet evaluate: --rotate auto: 90° (lung-stage certainty" in captured.err
    assert "uncertain" not in captured.err
    assert main([*args, "--rotate", "90"]) == 0
    explicit = json.loads(capsys.readouterr().out)
    assert auto["per_image"] == explicit["per_image"]


def test_16_bit_images_are_refused_and_16_bit_masks_are_kept(semiseg_like, tiny_weights, tmp_path, capsys):
    """A 16-bit slice (an HU + 1024 export) was squeezed into 8 bits and scored Dice 0 with exit 0."""
    images, masks = semiseg_like
    wide = tmp_path / "images_16bit"
    wide.mkdir()
    for path in sorted(images.glob("slice_*")):
        pixels = np.asarray(Image.open(path).convert("L")).astype(np.uint16) * 16
        Image.fromarray(pixels).save(wide / f"{path.stem}.png")
    assert Image.open(wide / "slice_4.png").mode.startswith("I;16")
    args = ["evaluate", "--masks", str(masks), "--weights", str(tiny_weights), "--rotate", "90", "--json"]
    assert main([*args, "--images", str(wide)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    assert "images_16bit" in lines[0] and "16-bit" in lines[0] and "I;16" in lines[0] and "8-bit" in lines[0]

    assert main([*args, "--images", str(images)]) == 0
    reference = json.loads(capsys.readouterr().out)["per_image"]
    for scale in (1, 65535):  # 16-bit masks of 0/1 and of 0/65535 score as the 0/255 ones
        folder = tmp_path / f"masks_16bit_{scale}"
        folder.mkdir()
        for path in sorted(masks.iterdir()):
            target = np.asarray(Image.open(path).convert("L")) > 127
            Image.fromarray((target * scale).astype(np.uint16)).save(folder / path.name)
        assert main([*args, "--images", str(images), "--masks", str(folder)]) == 0
        assert json.loads(capsys.readouterr().out)["per_image"] == reference, scale
