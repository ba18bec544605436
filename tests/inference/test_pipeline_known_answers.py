"""The whole-volume engine with scripted stages whose answers are known: which slices reach the
infection stage, the pixel size the lung post-processing is given, the order the stages are reported
in, and the lung-section floor of the "no lungs found" check."""

from __future__ import annotations

import types

import numpy as np
import pytest

import napari_chsnet.inference.pipeline as pipeline_module
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.cascade import StageOutput
from napari_chsnet.inference.intensity import hu_to_unit
from napari_chsnet.inference.pipeline import (
    MIN_LUNG_SECTION_CM2,
    STAGES,
    SegmentationSettings,
    iter_segmentation,
)
from napari_chsnet.inference.postprocess import half_chest_side
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG

from .factory import small_phantom

WINDOW_HU = (-1000.0, 400.0)


class MaskLungStage:
    """A lung stage that answers the phantom's own lung mask, batch after batch (it is given slices
    in order): probability 1 on the lungs, 0 elsewhere."""

    window_hu = WINDOW_HU

    def __init__(self, lungs: np.ndarray) -> None:
        self.lungs, self.seen = lungs > 0, 0

    def predict(self, unit_slices: np.ndarray) -> np.ndarray:
        n = len(unit_slices)
        out = self.lungs[self.seen : self.seen + n].astype(np.float32)
        self.seen += n
        return out


class RecordingInfectionStage:
    """An infection stage that marks nothing and keeps what it was given."""

    window_hu = WINDOW_HU

    def __init__(self) -> None:
        self.units: list[np.ndarray] = []
        self.lung_masks: list[np.ndarray] = []

    def predict(self, unit, lung_masks, box) -> StageOutput:
        self.units.extend(unit)
        self.lung_masks.extend(lung_masks)
        return StageOutput(np.zeros(np.shape(unit), np.float32), np.zeros(np.shape(unit), bool))


def _scripted_run(monkeypatch, volume: CTVolume, lungs: np.ndarray, batch_size: int = 2):
    """Run ``iter_segmentation`` with scripted stages; returns (progress list, result, infection stage)."""
    infection = RecordingInfectionStage()
    sha = types.SimpleNamespace(sha256="")
    monkeypatch.setattr(
        pipeline_module,
        "build_stages",
        lambda settings, device, *_: (MaskLungStage(lungs), infection, {"chsnet": sha, settings.model: sha}),
    )
    steps = iter_segmentation(volume, SegmentationSettings(device="cpu", batch_size=batch_size))
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as finished:
            return seen, finished.value, infection


@pytest.fixture(scope="module")
def phantom():
    return small_phantom()


def _lungs_without_top_slice(phantom) -> np.ndarray:
    """The phantom's lungs (slice 0 holds none) with the last slice emptied too: two lung-free slices."""
    lungs = phantom.lungs.copy()
    lungs[-1] = 0
    return lungs


def test_only_slices_holding_lung_reach_the_infection_stage(phantom, monkeypatch):
    lungs = _lungs_without_top_slice(phantom)
    _, result, infection = _scripted_run(monkeypatch, phantom.ct, lungs)
    with_lung = np.flatnonzero(result.lungs.any(axis=(1, 2)))
    assert with_lung.tolist() == np.flatnonzero(lungs.any(axis=(1, 2))).tolist()  # 1..10
    # every slice given holds lung, each lung slice is given once, in order
    assert all(mask.any() for mask in infection.lung_masks)
    assert len(infection.units) == len(with_lung) == phantom.ct.shape[0] - 2
    expected = hu_to_unit(phantom.ct.hu[with_lung], WINDOW_HU)
    np.testing.assert_array_equal(np.stack(infection.units), expected)


def test_progress_reports_the_stages_in_the_order_of_stages_and_timings(phantom, monkeypatch):
    """``STAGES`` is the order a run goes through (its timings and the report's ``stage_timings_s`` are
    listed in it): lungs are post-processed before the infection stage runs inside them."""
    seen, result, _ = _scripted_run(monkeypatch, phantom.ct, _lungs_without_top_slice(phantom))
    in_order = list(dict.fromkeys(p.stage for p in seen))
    assert in_order == ["prepare", "lungs", "postprocess_lungs", "infection", "postprocess_infection"]
    assert list(STAGES) == in_order
    assert list(result.timings_s) == in_order == list(result.run_info.stage_timings_s)


def test_the_lung_post_processing_gets_the_pixel_size_as_x_then_y(phantom, monkeypatch):
    """Non-square pixels (x 1.0 mm, y 4.0 mm): the mm-based steps (closing radius, hole and airway
    areas, the half-chest width/depth) are given (x, y) as their ``spacing_xy_mm`` says."""
    volume = CTVolume(phantom.ct.hu, Geometry(spacing_mm=(1.0, 4.0, 5.0)), "scan.mha")
    given = {}
    real_post, real_fov = pipeline_module.postprocess_lungs, pipeline_module.field_of_view_warnings

    def post(mask, hu, spacing_xy_mm):
        given["postprocess_lungs"] = tuple(spacing_xy_mm)
        return real_post(mask, hu, spacing_xy_mm)

    def fov(hu, lungs, spacing_xy_mm):
        given["field_of_view_warnings"] = tuple(spacing_xy_mm)
        return real_fov(hu, lungs, spacing_xy_mm)

    monkeypatch.setattr(pipeline_module, "postprocess_lungs", post)
    monkeypatch.setattr(pipeline_module, "field_of_view_warnings", fov)
    _scripted_run(monkeypatch, volume, _lungs_without_top_slice(phantom))
    assert given == {"postprocess_lungs": (1.0, 4.0), "field_of_view_warnings": (1.0, 4.0)}


@pytest.mark.parametrize("slice_mm", [0.5, 5.0])
@pytest.mark.parametrize(("lung_pixels", "found"), [(900, False), (1100, True)])
def test_the_lung_section_floor_counts_in_plane_pixels_whatever_the_slice_spacing(
    slice_mm, lung_pixels, found
):
    """1 x 1 mm pixels: 900 lung pixels are 9 cm² (under ``MIN_LUNG_SECTION_CM2`` = 10: no lungs),
    1100 are 11 cm² (lungs), however far apart the slices lie; the slice holds 16 cm² of tissue."""
    assert MIN_LUNG_SECTION_CM2 == 10.0
    hu = np.full((3, 40, 40), 40.0, np.float32)  # soft tissue: 1600 mm² of body per slice
    volume = CTVolume(hu, Geometry(spacing_mm=(1.0, 1.0, slice_mm)), "scan.mha")
    sections = np.array([0, lung_pixels, 0])
    if found:
        pipeline_module._check_lungs_found(volume, sections)
    else:
        with pytest.raises(InvalidVolumeError, match=r"no slice holds more than 9\.0 cm² of lung"):
            pipeline_module._check_lungs_found(volume, sections)


def _half_chest(cut_lung_pixels: int, kept_lung_pixels: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """One slice of a body 50 mm wide and 80 mm deep cut by the x = 0 edge (the patient's right): a
    half chest leaving out the right side; the left lung (label 2) holds ``kept_lung_pixels``, the
    right (label 1) ``cut_lung_pixels``."""
    hu = np.full((1, 100, 100), -1000.0, np.float32)
    hu[0, 10:90, 0:50] = 40.0
    lungs = np.zeros(hu.shape, np.uint8)
    lungs[0].flat[np.arange(kept_lung_pixels) + 20 * 100] = LEFT_LUNG
    lungs[0].flat[np.arange(cut_lung_pixels) + 60 * 100] = RIGHT_LUNG
    return hu, lungs


@pytest.mark.parametrize(("cut_lung_pixels", "warned"), [(0, True), (199, True), (200, False), (400, False)])
def test_a_half_chest_warns_when_the_cut_sides_lung_is_under_half_the_kept_one(cut_lung_pixels, warned):
    """The left lung holds 400 px: a right lung of 0 or 199 px (under half) is missing or cut short,
    one of 200 px (half) or more is not."""
    hu, lungs = _half_chest(cut_lung_pixels)
    assert half_chest_side(hu, np.array([0]), (1.0, 1.0)) == RIGHT_LUNG
    warnings = pipeline_module.field_of_view_warnings(hu, lungs, (1.0, 1.0))
    assert len(warnings) == int(warned)
    if warned:
        assert (
            "cuts the body near the midline on the patient's right: the right lung is missing" in warnings[0]
        )


@pytest.mark.parametrize(("cut_slice", "part"), [(0, "bases"), (-1, "apices")])
def test_the_first_slice_holds_the_lung_bases_and_the_last_the_apices(cut_slice, part):
    """In the display's LPS order slice 0 is the lung bases (feet) and the last slice the apices: a
    scan that stops inside the lungs at its first slice cuts off the bases."""
    lungs = np.zeros((5, 20, 20), np.uint8)
    lungs[1:4, 2:18, 2:18] = RIGHT_LUNG  # 256 px: the largest cross-section
    lungs[cut_slice, 2:18, 2:10] = RIGHT_LUNG  # 128 px (50 %) where the scan stops
    (warning,) = pipeline_module.axial_coverage_warnings(lungs)
    assert f"50 % at the {part} of the largest lung cross-section" in warning
    assert f"the lung {part} are not fully scanned" in warning
