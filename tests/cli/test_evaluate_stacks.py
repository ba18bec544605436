"""``chsnet evaluate --slice-stack``: a volume file whose slices are unrelated 2-D images (MedSeg's
``tr_im.nii.gz``) is scored slice by slice, each slice segmented as a one-slice volume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from napari_chsnet.cli import main
from napari_chsnet.inference.orientation import turned
from napari_chsnet.inference.pipeline import SegmentationSettings, segment_volume
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.models.metrics import dice
from napari_chsnet.resources_path import bundled_weights_dir

PIXEL_MM = (1.4, 1.2)  # (x, y): not square, so a quarter turn must swap them
EFFUSION = 3  # MedSeg's pleural-effusion label, not infection


def _write_stack(path, array_zyx, pixel_mm_xy):
    """A NIfTI whose z axis piles up the 2-D slices (identity directions, as MedSeg's files)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    image.SetSpacing((*pixel_mm_xy, 5.0))
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def phantom_stack(tmp_path_factory):
    """Three unrelated phantom slices (seeds 3-5, their own involvement) piled into one file, with
    masks holding infection (1), a strip of "effusion" (3) and the lungs (1 = right, 2 = left)."""
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    slices, infection, lungs = [], [], []
    for seed, involvement in ((3, (30.0, 10.0)), (4, (10.0, 40.0)), (5, (20.0, 20.0))):
        phantom = make_phantom(
            shape=(8, 224, 256), spacing_mm=(*PIXEL_MM, 10.0), seed=seed, involvement_pct=involvement
        )
        middle = phantom.ct.hu.shape[0] // 2
        slices.append(phantom.ct.hu[middle])
        infection.append(phantom.infection[middle].astype(np.uint8))
        lungs.append(phantom.lungs[middle].astype(np.uint8))
    hu, infection, lungs = np.stack(slices), np.stack(infection), np.stack(lungs)
    infection[:, :6, :] = EFFUSION  # far from the lungs: a target only when label 3 counts
    root = tmp_path_factory.mktemp("stacks")
    for name, pile, labels, turn in (("upright", hu, infection, 0), ("turned", hu, infection, 90)):
        pixel = PIXEL_MM if turn == 0 else PIXEL_MM[::-1]  # the turned image's x runs along the upright y
        for folder, array in (("images", pile), ("infection", labels), ("lungs", lungs)):
            (root / name / folder).mkdir(parents=True, exist_ok=True)
            piled = np.stack([turned(s, turn) for s in array])
            _write_stack(root / name / folder / "stack.nii.gz", piled, pixel)
    return root, hu, infection, lungs


def _evaluate(folder, masks, *options):
    args = ["evaluate", "--images", str(folder / "images"), "--masks", str(folder / masks), "--device", "cpu"]
    return main([*args, "--slice-stack", "--json", *options])


def test_each_slice_scores_as_a_one_slice_volume(phantom_stack, capsys):
    """Known answer: slice k's lungs and infection are what segment_volume makes of a volume holding
    slice k alone (its lungs post-processed, its infection network's mask before the report's
    cleaning), scored against that slice's mask; the effusion label is left out with --target-labels."""
    root, hu, infection, lungs = phantom_stack
    assert _evaluate(root / "upright", "infection", "--rotate", "0", "--target-labels", "1") == 0
    scored = json.loads(capsys.readouterr().out)
    assert _evaluate(root / "upright", "lungs", "--rotate", "0", "--target", "lungs") == 0
    lung_scores = json.loads(capsys.readouterr().out)
    assert scored["n_images"] == 3 and sorted(scored["per_image"]) == ["stack:0", "stack:1", "stack:2"]
    settings = SegmentationSettings(device="cpu")
    stored_mm = read_ct(root / "upright" / "images" / "stack.nii.gz").geometry.spacing_mm  # float32's 1.4
    for k in range(3):
        one = CTVolume(hu[k : k + 1], Geometry(stored_mm), "slice")
        result = segment_volume(one, settings)
        expected = dice(result.probability[0] >= settings.threshold, infection[k] == 1)
        assert scored["per_image"][f"stack:{k}"]["dice"] == pytest.approx(expected, abs=1e-12)
        expected_lungs = dice(result.lungs[0] > 0, lungs[k] > 0)
        assert lung_scores["per_image"][f"stack:{k}"]["dice"] == pytest.approx(expected_lungs, abs=1e-12)
        assert expected_lungs > 0.9  # the bundled lung stage finds the phantom's lungs
    assert np.mean([s["dice"] for s in scored["per_image"].values()]) == pytest.approx(scored["mean"]["dice"])
    # without --target-labels the effusion strip is target too, which no network marks as infection
    assert _evaluate(root / "upright", "infection", "--rotate", "0") == 0
    everything = json.loads(capsys.readouterr().out)
    assert everything["mean"]["recall"] < scored["mean"]["recall"]


def test_a_turned_stack_scores_as_the_upright_one(phantom_stack, capsys):
    """Slices stored turned 90° (pixel sizes swapped with them) turned back with --rotate 90 give the
    upright stack's figures exactly; --rotate auto finds the turn."""
    root, *_ = phantom_stack
    assert _evaluate(root / "upright", "infection", "--rotate", "0", "--target-labels", "1") == 0
    upright_scores = json.loads(capsys.readouterr().out)
    assert _evaluate(root / "turned", "infection", "--rotate", "90", "--target-labels", "1") == 0
    turned_scores = json.loads(capsys.readouterr().out)
    assert turned_scores["per_image"] == upright_scores["per_image"]
    assert _evaluate(root / "turned", "infection", "--target-labels", "1") == 0
    found = json.loads(capsys.readouterr().out)
    assert found["rotation"] == 90 and found["rotation_estimate"]["rotation"] == 90


def test_bad_stack_options_exit_2_with_one_line(phantom_stack, tmp_path, capsys):
    root, *_ = phantom_stack
    assert _evaluate(root / "upright", "infection", "--target-labels", "7") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target-labels 7" in err and "1, 3" in err
    slices = tmp_path / "slices"
    slices.mkdir()
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkUInt8), str(slices / "a.png"))
    args = ["evaluate", "--images", str(slices), "--masks", str(slices), "--slice-stack"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--slice-stack reads volume files" in err
    assert main([*args, "--target-labels", "0,x"]) == 2  # a mistyped option: the usage, then the error
    assert "invalid labels: '0,x'" in capsys.readouterr().err


@pytest.mark.slow
def test_slices_of_two_real_scans_piled_and_turned(shared_data, tmp_path, capsys):
    """Real CT: 6 slices of P001 and 6 of normal001 (two patients) piled into one file, turned 90° as
    COVID-SemiSeg's slices are: --rotate auto finds the turn and the lungs score against the HU-made
    lung labels (docs/training.md) as the lung stage does on volumes. Measured 2026-12-06 (bundled
    weights, float32): 90° chosen by all 12 slices (certainty 0.983, runner-up 270° 0.947), mean lung
    Dice 0.987 (pooled 0.988, slices 0.962-0.993)."""
    from napari_chsnet.training.lung_labels import lung_labels_from_hu

    piles, labels = [], []
    for name in ("P001", "normal001"):
        volume = read_ct(shared_data / "covid-ct-md" / f"{name}_ct_hu.nii.gz")
        reference = lung_labels_from_hu(volume.hu, volume.geometry.spacing_mm)
        area = np.count_nonzero(reference, axis=(1, 2))
        chosen = np.linspace(*np.flatnonzero(area > 0.3 * area.max())[[0, -1]], 6).round().astype(int)
        piles += [turned(volume.hu[z], 90) for z in chosen]
        labels += [turned(reference[z], 90) for z in chosen]
        pixel = volume.geometry.spacing_mm[1::-1]  # turned: x runs along the upright y
    for folder, array in (("images", np.stack(piles)), ("lungs", np.stack(labels).astype(np.uint8))):
        (tmp_path / folder).mkdir()
        _write_stack(tmp_path / folder / "two.nii.gz", array, pixel)
    assert _evaluate(tmp_path, "lungs", "--target", "lungs") == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["rotation"] == 90 and scores["n_images"] == 12
    assert scores["rotation_estimate"]["votes"]["90"] >= 10
    assert scores["mean"]["dice"] >= 0.97
