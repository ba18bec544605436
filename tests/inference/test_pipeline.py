"""The whole-volume engine on a small phantom with tiny random-weight networks: contracts, not accuracy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

import napari_chsnet.inference.pipeline as pipeline_module
from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.inference.cascade import StageOutput
from napari_chsnet.inference.ensemble import EAMCInfectionStage
from napari_chsnet.inference.pipeline import (
    STAGES,
    SegmentationSettings,
    iter_segmentation,
    segment_volume,
)
from napari_chsnet.inference.preprocessing import CropBox
from napari_chsnet.inference.weights import network_for, resolve_weights
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.models.metrics import dice as mask_dice
from napari_chsnet.report import RunInfo, build_report_json, compute_severity
from napari_chsnet.report.case import CASE_STAGES, iter_case, segment_case
from napari_chsnet.resources_path import bundled_weights_dir

from .factory import ImageInLungsStage, use_infection_stage

MODELS = ("chsnet", "eamc", "rdunet")


def _settings(weights, **changes) -> SegmentationSettings:
    return SegmentationSettings(weights=weights, device="cpu", **changes)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_returns_masks_on_the_ct_grid(phantom, tiny_weights, model):
    result = segment_case(phantom.ct, _settings(tiny_weights, model=model))
    shape = phantom.ct.shape
    assert result.lungs.shape == result.infection.shape == result.probability.shape == shape
    assert (result.lungs.dtype, result.infection.dtype, result.probability.dtype) == (
        np.uint8,
        np.uint8,
        np.float32,
    )
    assert set(np.unique(result.lungs)) <= {0, 1, 2}
    assert set(np.unique(result.infection)) <= {0, 1}
    assert (result.lungs > 0).any(), "the calibrated tiny lung stage should find some lung"
    assert not (result.infection.astype(bool) & (result.lungs == 0)).any(), "infection outside the lungs"
    assert result.probability.min() >= 0.0 and result.probability.max() <= 1.0
    # the report counts exactly the mask returned (small lesions were removed by the same rule)
    again = compute_severity(
        result.lungs, result.infection, phantom.ct.geometry, result.severity.min_lesion_ml
    )
    assert again.to_dict() == result.severity.to_dict()
    # run manifest
    checkpoints = resolve_weights(model, tiny_weights)
    assert result.run_info.model == model and result.run_info.weights_sha256 == checkpoints[model].sha256
    # the lungs decide every volume: the report names the file the lung stage came from too
    assert result.run_info.lung_weights_sha256 == checkpoints["chsnet"].sha256
    assert (result.run_info.lung_weights_sha256 == result.run_info.weights_sha256) == (model == "chsnet")
    assert result.device == result.run_info.device == "cpu"
    assert tuple(result.timings_s) == CASE_STAGES and all(t >= 0 for t in result.timings_s.values())
    assert result.run_info.runtime_s == pytest.approx(sum(result.timings_s.values()))


class ScriptedInfectionStage:
    """An infection stage whose mask is known: on the k-th slice with lung it marks one voxel
    outside the lungs, one lung voxel on k = 1 and k = 5 (two one-voxel islands) and the largest
    2-D lung component on k = 3 (the one lesion kept)."""

    window_hu = (-1000.0, 400.0)

    def __init__(self) -> None:
        self.seen = 0
        self.lesion_voxels = 0

    def predict(self, unit, lung_masks, box) -> StageOutput:
        mask = np.zeros(lung_masks.shape, bool)
        for i, lungs in enumerate(lung_masks):
            k = self.seen + i
            mask[i][tuple(np.argwhere(~lungs)[0])] = True
            if k in (1, 5):
                mask[i][tuple(np.argwhere(lungs)[0])] = True
            elif k == 3:
                parts, _ = ndimage.label(lungs)
                mask[i] |= parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
                self.lesion_voxels = int((mask[i] & lungs).sum())
        self.seen += len(lung_masks)
        return StageOutput(np.zeros(mask.shape, np.float32), mask)


def test_report_counts_the_islands_and_outside_infection_the_pipeline_removed(
    phantom, tiny_weights, monkeypatch
):
    stage = ScriptedInfectionStage()
    use_infection_stage(monkeypatch, stage)
    result = segment_case(phantom.ct, _settings(tiny_weights, model="rdunet", batch_size=2))
    voxel_ml = phantom.ct.geometry.voxel_volume_ml  # 0.03125 mL: one voxel is below 0.1 mL
    lung_slices = int(result.lungs.any(axis=(1, 2)).sum())
    assert stage.seen == lung_slices >= 6 and stage.lesion_voxels * voxel_ml >= 0.1

    severity = result.severity
    assert (severity.removed_components, severity.removed_ml) == (2, pytest.approx(2 * voxel_ml))
    assert severity.outside_lungs_ml == pytest.approx(lung_slices * voxel_ml)
    assert severity.overall_infected_ml == pytest.approx(stage.lesion_voxels * voxel_ml)
    assert int(result.infection.sum()) == stage.lesion_voxels  # the mask returned is the mask counted
    # a rim this small beside the lesion is a figure, not a warning (OUTSIDE_WARNING_SHARE)
    assert not any("outside both lung masks" in w for w in severity.warnings)
    assert result.run_info.uncounted_infection == severity.uncounted.to_dict()
    report = build_report_json(severity, RunInfo(model="rdunet", device="cpu", runtime_s=1.0))
    assert report["small_lesions_removed"] == {"components": 2, "volume_ml": pytest.approx(2 * voxel_ml)}
    assert report["infection_outside_lungs_ml"] == pytest.approx(lung_slices * voxel_ml)


def test_progress_counts_every_batch_and_ends_at_its_total(phantom, tiny_weights):
    seen = []
    result = segment_case(phantom.ct, _settings(tiny_weights, batch_size=5), on_progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages.count("lungs") == math.ceil(phantom.ct.shape[0] / 5)
    lung_slices = int(result.lungs.any(axis=(1, 2)).sum())
    assert stages.count("infection") == math.ceil(lung_slices / 5)
    assert [p.done for p in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].done == seen[-1].total and seen[-1].stage == "report"
    assert set(stages) == set(CASE_STAGES) - ({"infection"} if lung_slices == 0 else set())


def test_the_volume_pipeline_alone_gives_the_case_masks_without_figures(phantom, tiny_weights):
    """inference.pipeline stops at the cleaned masks and the run manifest; the report's figures are
    report.case's, which adds one step and one timing and changes no mask."""
    seen = []
    settings = _settings(tiny_weights, batch_size=5)
    masks = segment_volume(phantom.ct, settings, on_progress=seen.append)
    case = segment_case(phantom.ct, settings)
    assert not hasattr(masks, "severity")
    assert seen[-1].done == seen[-1].total and seen[-1].stage == "postprocess_infection"
    assert tuple(masks.timings_s) == STAGES and masks.run_info.stage_timings_s.keys() == set(STAGES)
    assert np.array_equal(masks.lungs, case.lungs) and np.array_equal(masks.infection, case.infection)
    assert np.array_equal(masks.probability, case.probability)
    assert case.run_info.stage_timings_s.keys() == set(CASE_STAGES)
    assert masks.uncounted == case.severity.uncounted
    assert masks.min_lesion_ml == case.severity.min_lesion_ml == settings.min_lesion_ml


def test_results_do_not_depend_on_the_batch_size(phantom, tiny_weights):
    one = segment_case(phantom.ct, _settings(tiny_weights, model="rdunet", batch_size=1))
    many = segment_case(phantom.ct, _settings(tiny_weights, model="rdunet", batch_size=7))
    assert np.array_equal(one.lungs, many.lungs)
    np.testing.assert_allclose(one.probability, many.probability, atol=1e-5)


def test_each_slice_s_infection_comes_from_that_slice_whatever_the_batch_size(
    phantom, tiny_weights, monkeypatch
):
    """A known-answer stage (the probability is the slice's network input inside the lungs it is
    given): slice z's probability and mask are computed from the CT's slice z and its lungs, the
    same for every batch size. The tiny random networks give maps too flat to show slices swapped
    within a batch."""
    stage = ImageInLungsStage()
    use_infection_stage(monkeypatch, stage)
    results = {
        size: segment_volume(
            phantom.ct, _settings(tiny_weights, model="rdunet", batch_size=size, min_lesion_ml=0.0)
        )
        for size in (1, 3, 7)
    }
    lungs = results[1].lungs
    expected = stage.expected_probability(phantom.ct.hu, lungs)
    infected = (expected >= stage.threshold) & (lungs > 0)
    lung_slices = np.flatnonzero(lungs.any(axis=(1, 2)))
    assert len(lung_slices) >= 6 and infected.any() and (expected[lungs > 0] < stage.threshold).any()
    # neighbouring slices differ, so a slice's answer given to its neighbour would show
    assert all(not np.array_equal(expected[z], expected[z + 1]) for z in lung_slices[:-1])
    for size, result in results.items():
        assert np.array_equal(result.lungs, lungs), f"batch size {size}"
        for z in range(phantom.ct.shape[0]):
            np.testing.assert_array_equal(
                result.probability[z], expected[z], err_msg=f"batch {size}, slice {z}"
            )
        assert np.array_equal(result.infection, infected), f"batch size {size}"


@pytest.mark.parametrize("steps_of", [iter_segmentation, iter_case])
def test_stopping_early_leaves_nothing_behind(phantom, tiny_weights, steps_of):
    settings = _settings(tiny_weights, batch_size=2)
    reference = segment_case(phantom.ct, settings)
    steps = steps_of(phantom.ct, settings)
    for _ in range(3):
        next(steps)
    steps.close()  # what napari's worker.quit() amounts to
    again = segment_case(phantom.ct, settings)
    assert np.array_equal(again.lungs, reference.lungs)
    assert np.array_equal(again.probability, reference.probability)


def test_a_single_slice_is_a_volume_of_one_slice(phantom, tiny_weights):
    z = phantom.ct.shape[0] // 2
    single = CTVolume(phantom.ct.hu[z : z + 1].copy(), phantom.ct.geometry, "one slice")
    result = segment_case(single, _settings(tiny_weights, model="eamc"))
    assert result.lungs.shape == result.probability.shape == (1, *phantom.ct.shape[1:])


def test_eamc_patches_are_predicted_independently(tiny_weights):
    """Non-overlapping 32 px patches: changing one patch changes nothing in the other fifteen."""
    checkpoint = resolve_weights("eamc", tiny_weights)["eamc"]
    stage = EAMCInfectionStage(network_for(checkpoint, __import__("torch").device("cpu")), 128, 32, (0, 1),
                               __import__("torch").device("cpu"), 0.5)  # fmt: skip
    rng = np.random.default_rng(0)
    image = rng.random((1, 128, 128), dtype=np.float32)
    changed = image.copy()
    changed[0, :32, :32] = 1.0 - changed[0, :32, :32]
    box = CropBox.full(128, 128)
    first, second = stage.predict(image, None, box), stage.predict(changed, None, box)
    outside = np.ones((128, 128), bool)
    outside[:32, :32] = False
    assert np.array_equal(first.probability[0][outside], second.probability[0][outside])
    assert not np.array_equal(first.probability[0][~outside], second.probability[0][~outside])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "unet"}, "unknown model"),
        ({"device": "gpu"}, "unknown device"),
        ({"batch_size": 0}, "batch size"),
        ({"threshold": 1.0}, "threshold"),
        ({"min_lesion_ml": -1.0}, "min_lesion_ml"),
    ],
)
def test_bad_settings_are_refused_when_made(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(SegmentationSettings(), **changes)


def test_a_volume_with_nan_is_refused_before_any_network_runs(phantom, tiny_weights):
    hu = phantom.ct.hu.astype(np.float32)
    hu[0, 0, 0] = np.nan
    with pytest.raises(InvalidVolumeError, match="NaN"):
        segment_case(CTVolume(hu, phantom.ct.geometry, "broken"), _settings(tiny_weights))


def test_a_label_map_given_as_the_ct_is_refused_before_any_network_runs(phantom, tiny_weights):
    """lungs.nii.gz segmented as a CT read as a normal chest (CT-0), exit 0."""
    masks = CTVolume(phantom.lungs.astype(np.uint8), phantom.ct.geometry, "lungs.nii.gz")
    steps = []
    with pytest.raises(
        InvalidVolumeError, match=r"lungs.nii.gz holds a label map \(values 0, 1, 2\), not a CT"
    ):
        segment_case(masks, _settings(tiny_weights), on_progress=steps.append)
    assert steps == []


def _with_spacing(phantom, spacing_mm) -> CTVolume:
    return CTVolume(phantom.ct.hu, Geometry(spacing_mm=spacing_mm), "scan.mha")


@pytest.mark.parametrize(
    ("spacing_mm", "found"),
    [
        ((0.0008, 0.0008, 0.0025), "0.0008 × 0.0008 mm in-plane, 0.0025 mm"),  # metres written as mm
        ((0.04, 0.04, 0.1), "0.04 × 0.04 mm in-plane"),  # a micro-CT
        ((0.7, 12.0, 2.0), "0.7 × 12 mm in-plane"),
        ((0.7, 0.7, 60.0), "0.7 × 0.7 mm in-plane, 60 mm between slices"),
        ((0.7, 0.7, 0.04), "0.04 mm between slices"),
        ((0.7, 0.7, math.nan), "nan mm between slices"),
    ],
    ids=["metres", "micro-ct", "wide-pixels", "far-slices", "near-slices", "nan"],
)
def test_a_voxel_size_no_chest_ct_has_is_refused_before_any_network_runs(
    phantom, tiny_weights, monkeypatch, spacing_mm, found
):
    """Metres written as mm made the lung post-processing's 15 mm closing pad 19,000 pixels: a
    MemoryError after the lung stage."""
    monkeypatch.setattr(pipeline_module, "build_stages", lambda *args: pytest.fail("networks were built"))
    steps = []
    with pytest.raises(InvalidVolumeError, match="voxel size") as refused:
        segment_case(_with_spacing(phantom, spacing_mm), _settings(tiny_weights), on_progress=steps.append)
    message = str(refused.value)
    assert message.startswith("scan.mha: voxel size ") and found in message, message
    assert "0.05-10 mm in-plane, 0.05-50 mm between slices" in message and "units" in message
    assert steps == []


@pytest.mark.parametrize(
    "spacing_mm",
    [
        (0.05, 0.05, 0.05),
        (10.0, 10.0, 50.0),
        (0.748046875, 0.748046875, 2.0),  # P001
        (1.0, 1.0, 1.0),  # a 2-D single-slice file
        (2.5, 2.5, 5.0),  # the test phantom
        (0.8, 0.8, 2.5),  # the sample CT
    ],
)
def test_chest_ct_voxel_sizes_are_segmented(phantom, tiny_weights, spacing_mm):
    steps = iter_segmentation(_with_spacing(phantom, spacing_mm), _settings(tiny_weights))
    assert next(steps).stage == "prepare"  # the volume's checks come before it
    steps.close()


def test_the_real_scans_pass_the_volume_checks(shared_data):
    """P001 0.748 x 0.748 x 2 mm, normal001 0.635 x 0.635 x 2, lungmask's two slices 0.625 x 0.625 x 1,
    pydicom's CT_small 0.66 x 0.66 x 5."""
    for scan in (
        shared_data / "covid-ct-md" / "P001_ct_hu.nii.gz",
        shared_data / "covid-ct-md" / "normal001_ct_hu.nii.gz",
        shared_data / "dicom-samples" / "lungmask",
        shared_data / "dicom-samples" / "pydicom" / "CT_small.dcm",
    ):
        pipeline_module._check_volume(read_ct(scan))


def test_a_2d_slice_file_reads_as_1_mm_slices_and_passes_the_volume_checks(phantom, tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(phantom.ct.hu[6])
    image.SetSpacing((0.7, 0.7))
    sitk.WriteImage(image, str(tmp_path / "slice.nii.gz"))
    volume = read_ct(tmp_path / "slice.nii.gz")
    assert volume.shape == (1, *phantom.ct.shape[1:]) and volume.geometry.spacing_zyx[0] == 1.0
    pipeline_module._check_volume(volume)


def test_a_volume_too_big_for_the_memory_is_refused_before_any_network_runs(
    phantom, tiny_weights, monkeypatch
):
    import napari_chsnet.io.memory as memory

    steps = []
    monkeypatch.setattr(
        memory, "available_memory_bytes", lambda: phantom.ct.hu.size * 10
    )  # half of what it needs
    with pytest.raises(InvalidVolumeError, match="needs about .* GiB of memory"):
        segment_case(phantom.ct, _settings(tiny_weights), on_progress=steps.append)
    assert steps == []
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: phantom.ct.hu.size * 30)
    assert segment_case(phantom.ct, _settings(tiny_weights)).lungs.shape == phantom.ct.shape


@pytest.mark.slow
def test_bundled_weights_find_both_lungs_on_the_phantom(phantom):
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()} yet (filled by training)")
    result = segment_case(phantom.ct, SegmentationSettings(device="cpu", batch_size=4))
    right, left = result.lungs == 1, result.lungs == 2
    assert right.any() and left.any()
    assert np.nonzero(right)[2].mean() < np.nonzero(left)[2].mean()
    true_lungs = phantom.lungs > 0
    dice = mask_dice(result.lungs > 0, true_lungs)
    assert dice > 0.8, f"lung Dice {dice:.3f} on the phantom with the bundled weights"
