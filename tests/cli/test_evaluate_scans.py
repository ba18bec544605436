"""``chsnet evaluate`` on CT scans: each scan segmented as ``chsnet segment`` does, scored in 3-D against
reference masks named like it and lying on its grid."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from napari_chsnet.cli import main
from napari_chsnet.cli.evaluate_scans import scan_entries
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.pipeline import SegmentationSettings, segment_volume
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import Geometry
from napari_chsnet.io.writers import read_mask, write_volume
from napari_chsnet.models.metrics import dice
from napari_chsnet.resources_path import bundled_weights_dir


def evaluate(images, masks, *options, weights=None):
    args = ["evaluate", "--images", str(images), "--masks", str(masks), "--device", "cpu", *options]
    return main([*args, "--weights", str(weights)] if weights else args)


def _json(capsys):
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


@pytest.fixture
def segmented_case(tmp_path, ras_nifti, tiny_weights):
    """A RAS-stored scan, and the lungs and infection ``chsnet segment`` wrote for it."""
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(ras_nifti, scans / "case_a.nii.gz")
    assert (
        main(
            [
                "segment",
                str(scans / "case_a.nii.gz"),
                "-o",
                str(tmp_path / "out"),
                "--weights",
                str(tiny_weights),
            ]
        )
        == 0
    )
    return scans, tmp_path / "out"


def test_the_segmentation_s_own_masks_score_1(tmp_path, segmented_case, tiny_weights, capsys):
    """Known answer: the masks chsnet segment wrote for a scan (in its RAS grid) are what evaluate scores,
    voxel for voxel, for both targets, and the mask may be named with a _mask suffix."""
    scans, out = segmented_case
    for target, written in (("lungs", "lungs.nii.gz"), ("infection", "infection.nii.gz")):
        masks = tmp_path / f"masks_{target}"
        masks.mkdir()
        shutil.copy(out / written, masks / "case_a_mask.nii.gz")
        assert evaluate(scans, masks, "--target", target, "--json", weights=tiny_weights) == 0
        scores, _ = _json(capsys)
        assert scores["n_scans"] == 1 and scores["failed"] == {} and scores["target"] == target
        assert (
            scores["interrupted"] is False and scores["precision"] == "float32"
        )  # pinned by tests/conftest.py
        case = scores["per_scan"]["case_a"]
        assert case["dice"] == 1.0 and case["reference_ml"] == case["segmented_ml"] > 0
        assert scores["mean"] == scores["pooled"] == {k: v for k, v in case.items() if k in scores["mean"]}
    assert case["auc"] is not None  # the infection's probability map gives an AUC; the lungs' none


@pytest.fixture(scope="module")
def unseen_phantom(tmp_path_factory):
    """An unseen phantom (seed 3) as a scan, its lungs numbered the other way round (1 = left) in a
    RAS-stored mask, and its infection mask."""
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    phantom = make_phantom(shape=(12, 256, 256), spacing_mm=(1.4, 1.4, 10.0), seed=3)
    root = tmp_path_factory.mktemp("unseen")
    for folder in ("scans", "lungs", "infection"):
        (root / folder).mkdir()
    geometry = phantom.ct.geometry
    write_volume(root / "scans" / "ph3.nii.gz", phantom.ct.hu, geometry)
    ras = Geometry(geometry.spacing_mm, geometry.origin_mm, geometry.direction, source_orientation="RAS")
    left_is_1 = np.select([phantom.lungs == 1, phantom.lungs == 2], [2, 1], 0).astype(np.uint8)
    write_volume(root / "lungs" / "ph3_seg.nii.gz", left_is_1, ras)
    write_volume(root / "infection" / "ph3.nii.gz", phantom.infection, geometry)
    return phantom, root


@pytest.mark.slow
def test_bundled_weights_on_an_unseen_phantom(unseen_phantom, capsys):
    """Measured with the bundled weights (2026-12-06): lungs Dice 0.979 (right 0.976, left 0.983, the
    mask's labels told apart by side), infection Dice 0.807 — exactly the Dice of segment_volume's mask."""
    phantom, root = unseen_phantom
    assert evaluate(root / "scans", root / "lungs", "--target", "lungs", "--json") == 0
    lungs, _ = _json(capsys)
    case = lungs["per_scan"]["ph3"]
    assert case["dice"] >= 0.97 and case["right_lung_dice"] >= 0.95 and case["left_lung_dice"] >= 0.95
    assert evaluate(root / "scans", root / "infection", "--json") == 0
    infection, _ = _json(capsys)
    result = segment_volume(phantom.ct, SegmentationSettings(device="cpu"))
    assert infection["per_scan"]["ph3"]["dice"] == pytest.approx(
        dice(result.infection, phantom.infection), abs=1e-12
    )
    assert infection["per_scan"]["ph3"]["dice"] >= 0.75
    assert evaluate(root / "scans", root / "lungs", "--target", "lungs") == 0
    table = capsys.readouterr().out
    assert "right dice" in table and "ph3" in table and "pooled" in table


def test_a_dicom_series_subfolder_is_one_scan_and_a_bad_case_does_not_stop_the_others(
    tmp_path, segmented_case, dicom_folder, phantom, tiny_weights, capsys
):
    """Two scans: a DICOM series folder and a NIfTI whose mask lies on another grid. The bad one is named
    on stderr and in the JSON's failed cases; the other is scored; exit 2."""
    scans, out = segmented_case
    shutil.copytree(dicom_folder, scans / "series_a")
    masks = tmp_path / "masks"
    masks.mkdir()
    write_volume(masks / "series_a.nii.gz", phantom.lungs, Geometry((2.5, 2.5, 5.0), (-120.0, -120.0, 0.0)))
    write_volume(masks / "case_a.nii.gz", phantom.lungs, Geometry((2.0, 2.0, 5.0)))  # not case_a's grid
    assert evaluate(scans, masks, "--target", "lungs", "--json", weights=tiny_weights) == 2
    scores, err = _json(capsys)
    assert list(scores["per_scan"]) == ["series_a"] and list(scores["failed"]) == ["case_a"]
    assert "does not lie on the CT's voxel grid" in scores["failed"]["case_a"]
    assert "case_a: " in err and "1 of 2 scans failed" in err
    (masks / "case_a.nii.gz").unlink()  # one scan, one error: exit 2 and one line
    (masks / "series_a.nii.gz").rename(masks / "case_a.nii.gz")
    assert evaluate(scans, masks, weights=tiny_weights) == 2
    err = capsys.readouterr().err
    assert "chsnet evaluate: 1 scan(s) without a mask are left out: series_a" in err
    assert err.strip().splitlines()[-1].startswith("chsnet: error:") and "voxel grid" in err


def test_scans_and_masks_side_by_side_in_one_folder(tmp_path, segmented_case, tiny_weights, capsys):
    scans, out = segmented_case
    shutil.copy(out / "lungs.nii.gz", scans / "case_a_mask.nii.gz")
    assert evaluate(scans, scans, "--target", "lungs", "--json", weights=tiny_weights) == 0
    scores, err = _json(capsys)
    assert list(scores["per_scan"]) == ["case_a"] and scores["per_scan"]["case_a"]["dice"] == 1.0
    assert "without a mask" not in err  # the mask was not taken for a scan of its own


def test_scan_folders_that_cannot_be_scored_exit_2_with_one_line(
    tmp_path, segmented_case, tiny_weights, capsys
):
    scans, out = segmented_case
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(out / "lungs.nii.gz", masks / "case_a.nii.gz")
    shutil.copy(out / "lungs.nii.gz", masks / "case_a_gt.nii.gz")
    assert evaluate(scans, masks, weights=tiny_weights) == 2
    assert "scan case_a has 2 masks (case_a.nii.gz, case_a_gt.nii.gz); keep one" in capsys.readouterr().err
    (masks / "case_a_gt.nii.gz").unlink()
    assert evaluate(scans, masks, "--rotate", "90", weights=tiny_weights) == 2
    assert "--rotate is for 2-D slices" in capsys.readouterr().err
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    shutil.copy(out / "lungs.nii.gz", unrelated / "other.nii.gz")
    assert evaluate(scans, unrelated, weights=tiny_weights) == 2
    assert "no scan in" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scans / "slice.png")
    assert evaluate(scans, masks, weights=tiny_weights) == 2
    assert "holds both 8-bit slices (slice.png) and CT scans (case_a.nii.gz)" in capsys.readouterr().err
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "IM0001.dcm").write_bytes(b"\0" * 200)
    assert evaluate(loose, masks, weights=tiny_weights) == 2
    assert "holds DICOM files (IM0001.dcm)" in capsys.readouterr().err


def test_an_empty_mask_is_a_scan_without_infection_but_no_lung_mask(
    tmp_path, segmented_case, tiny_weights, capsys
):
    """A healthy scan's empty infection mask is scored (what was marked is false positive); an empty lung
    mask is refused."""
    scans, out = segmented_case
    masks = tmp_path / "masks"
    masks.mkdir()
    volume = read_ct(scans / "case_a.nii.gz")
    write_volume(masks / "case_a.nii.gz", np.zeros(volume.shape, np.uint8), volume.geometry)
    assert evaluate(scans, masks, "--json", weights=tiny_weights) == 0
    case = _json(capsys)[0]["per_scan"]["case_a"]
    marked = read_mask(out / "infection.nii.gz", volume.geometry).astype(bool)
    assert case["reference_ml"] == 0 and case["segmented_ml"] == pytest.approx(
        np.count_nonzero(marked) * volume.geometry.voxel_volume_ml
    )
    assert case["dice"] == (1.0 if not marked.any() else 0.0) and case["auc"] is None
    assert evaluate(scans, masks, "--target", "lungs", weights=tiny_weights) == 2
    assert "is empty: a lung mask holds the lungs" in capsys.readouterr().err


def test_target_labels_keep_one_label_of_a_scan_s_mask(tmp_path, segmented_case, tiny_weights, capsys):
    """Known answer: the run's lungs (1 = right, 2 = left) given as a mask with --target-labels 2 score
    the segmented lungs (both) against label 2 alone; a mask holding none of the labels is scored as
    empty and warned about."""
    scans, out = segmented_case
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(out / "lungs.nii.gz", masks / "case_a.nii.gz")
    volume = read_ct(scans / "case_a.nii.gz")
    lungs = read_mask(out / "lungs.nii.gz", volume.geometry)
    assert (
        evaluate(scans, masks, "--target", "lungs", "--target-labels", "2", "--json", weights=tiny_weights)
        == 0
    )
    case = _json(capsys)[0]["per_scan"]["case_a"]
    assert case["dice"] == pytest.approx(dice(lungs > 0, lungs == 2), abs=1e-12) and case["dice"] < 1
    assert case["reference_ml"] == pytest.approx(
        np.count_nonzero(lungs == 2) * volume.geometry.voxel_volume_ml
    )
    assert evaluate(scans, masks, "--target-labels", "3", "--json", weights=tiny_weights) == 0
    case, err = _json(capsys)
    assert case["per_scan"]["case_a"]["reference_ml"] == 0
    assert "the mask holds none of --target-labels (its values: 1, 2): scored as empty" in err


def test_a_lung_mask_scored_as_infection_is_warned_about(tmp_path, segmented_case, tiny_weights, capsys):
    """The default target is infection: a lung mask given without --target lungs scores a meaningless
    Dice, so stderr says what the mask looks like (both lungs of the run, or one label per lung)."""
    scans, out = segmented_case
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(out / "lungs.nii.gz", masks / "case_a.nii.gz")
    assert evaluate(scans, masks, weights=tiny_weights) == 0
    err = capsys.readouterr().err
    assert "the mask covers 100 % of the segmented lungs" in err and "score it with --target lungs" in err


def test_a_0_255_mask_with_a_soft_edge_keeps_the_edge_out_of_the_target(
    tmp_path, segmented_case, tiny_weights, capsys
):
    """A 0/255 mask resampled with interpolation holds 1..254 at its border: read as a 0/255 mask (target
    above 127, as for 2-D masks), not as labels whose every non-zero value is the target."""
    scans, out = segmented_case
    masks = tmp_path / "masks"
    masks.mkdir()
    volume = read_ct(scans / "case_a.nii.gz")
    binary = (read_mask(out / "lungs.nii.gz", volume.geometry) > 0).astype(np.uint8) * 255
    soft = binary.copy()
    edge = (binary == 0) & (np.roll(binary, 1, axis=2) == 255)  # one voxel outside each left border
    soft[edge] = 100
    write_volume(masks / "case_a.nii.gz", soft, volume.geometry)
    assert evaluate(scans, masks, "--target", "lungs", "--json", weights=tiny_weights) == 0
    scores, err = _json(capsys)
    assert edge.any() and scores["per_scan"]["case_a"]["dice"] == 1.0
    assert "the mask holds values 100, 255: read as a 0/255 mask, the target is above 127" in err


def test_an_interrupted_batch_prints_the_scans_it_scored(
    tmp_path, segmented_case, tiny_weights, monkeypatch, capsys
):
    import napari_chsnet.cli._common as common

    scans, out = segmented_case
    shutil.copy(scans / "case_a.nii.gz", scans / "case_b.nii.gz")
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("case_a", "case_b"):
        shutil.copy(out / "lungs.nii.gz", masks / f"{name}.nii.gz")
    segment_for_real = common.segment_with_bar

    def ctrl_c_in_the_second(volume, settings, name):
        if name == "case_b":
            raise KeyboardInterrupt
        return segment_for_real(volume, settings, name)

    monkeypatch.setattr(common, "segment_with_bar", ctrl_c_in_the_second)
    assert evaluate(scans, masks, "--target", "lungs", "--json", weights=tiny_weights) == 130
    scores, err = _json(capsys)
    assert list(scores["per_scan"]) == ["case_a"] and scores["per_scan"]["case_a"]["dice"] == 1.0
    assert scores["interrupted"] is True  # a saved JSON says it is not the whole batch
    assert "stopped after 1 of 2 scans" in err and "chsnet: interrupted" in err


@pytest.mark.realdata
@pytest.mark.slow
def test_p001_scored_against_its_own_segmentation(tmp_path, shared_data, capsys):
    """A real round trip (2 x 70 s): the lungs chsnet segment writes for P001 (an LPS-coded NIfTI), named
    P001_mask, score Dice 1 against P001, and by side too: the side rule, which reads the patient's x and
    not the labels' values, finds our label 1 in the patient's right lung."""
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    scans, masks = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    masks.mkdir()
    (scans / "P001.nii.gz").symlink_to(shared_data / "covid-ct-md" / "P001_ct_hu.nii.gz")
    assert main(["segment", str(scans / "P001.nii.gz"), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    shutil.copy(tmp_path / "out" / "lungs.nii.gz", masks / "P001_mask.nii.gz")
    capsys.readouterr()
    assert evaluate(scans, masks, "--target", "lungs", "--json") == 0
    case = _json(capsys)[0]["per_scan"]["P001"]
    assert case["dice"] == case["right_lung_dice"] == case["left_lung_dice"] == 1.0
    assert case["reference_ml"] == case["segmented_ml"] == pytest.approx(6261.0, abs=1.0)


def test_what_the_reader_converted_is_said_on_stderr(tmp_path, phantom, tiny_weights, capsys):
    """A scan exported as 8-bit display values is read through the shared window, as chsnet segment reads
    it, and stderr says so (the figures then rest on approximate HU)."""
    scans, masks = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    masks.mkdir()
    display8 = np.clip(np.round((phantom.ct.hu.astype(np.float32) + 1250) / 1500 * 255), 0, 255).astype(
        np.uint8
    )
    write_volume(scans / "exported.nii.gz", display8, phantom.ct.geometry)
    write_volume(masks / "exported.nii.gz", phantom.lungs, phantom.ct.geometry)
    assert evaluate(scans, masks, "--target", "lungs", weights=tiny_weights) == 0
    err = capsys.readouterr().err
    assert "chsnet evaluate: warning: exported: the values are not Hounsfield units" in err


def test_which_files_of_a_folder_are_scans(tmp_path, phantom, dicom_folder, capsys):
    """An .mhd scan with its .raw beside it is one scan (the .raw is not opened); other files are
    passed over; a DICOM slice saved without a suffix, as exports name them, is refused as a loose slice."""
    scans = tmp_path / "scans"
    scans.mkdir()
    image = sitk.GetImageFromArray(phantom.ct.hu)
    image.SetSpacing(phantom.ct.geometry.spacing_mm)
    sitk.WriteImage(image, str(scans / "case_b.mhd"))  # MetaImage header + its .raw voxels
    (scans / "notes.csv").write_text("case,comment\n")
    assert sorted(p.name for p in scans.iterdir())[:2] == ["case_b.mhd", "case_b.raw"]
    assert scan_entries(scans) == {"case_b": scans / "case_b.mhd"}
    shutil.copy(next(dicom_folder.glob("*.dcm")), scans / "DICOMDIR")  # stands for a DICOMDIR index
    assert scan_entries(scans) == {"case_b": scans / "case_b.mhd"}
    shutil.copy(next(dicom_folder.glob("*.dcm")), scans / "IM0001")
    with pytest.raises(
        InvalidVolumeError, match=r"holds DICOM files \(IM0001\); give a folder with one subfolder"
    ):
        scan_entries(scans)
    with pytest.raises(InvalidVolumeError, match="masks are read as NIfTI, MHA or NRRD volumes"):
        scan_entries(scans, of_masks=True)


def test_scan_only_options_and_long_names(tmp_path, segmented_case, tiny_weights, capsys):
    from napari_chsnet.cli.evaluate_scans import _short

    scans, out = segmented_case
    slices = tmp_path / "slices"
    slices.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(slices / "a.png")
    assert evaluate(slices, slices, "--intensity", "hu", weights=tiny_weights) == 2
    assert "--intensity is for CT scans" in capsys.readouterr().err
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(out / "lungs.nii.gz", masks / "case_a.nii.gz")
    shutil.copy(out / "lungs.nii.gz", masks / "case_z.nii.gz")
    assert evaluate(scans, masks, "--target", "lungs", "--intensity", "hu", weights=tiny_weights) == 0
    assert "1 mask(s) named like no scan are not used: case_z.nii.gz" in capsys.readouterr().err
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
    assert _short(uid) == "1.3.6.1.4.…059720603192" and _short("P001") == "P001"
    assert _short(uid[:-1] + "3") != _short(uid)  # names that differ at their end stay apart
