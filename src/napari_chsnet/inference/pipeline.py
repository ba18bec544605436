"""Whole-volume segmentation: named, timed stages over a CTVolume, with progress after every batch.

Stages (``SegmentationResult.timings_s`` has one entry each):

1. ``prepare``: pick the device, resolve the weights set, build (or reuse) the networks.
2. ``lungs``: CHS-Net's lung stage on whole slices in batches; probabilities resampled to the CT grid,
   then thresholded (``cascade.LUNG_THRESHOLD``).
3. ``postprocess_lungs``: two lungs kept, holes filled, lungs touching across the body's midline
   split, right = 1 / left = 2 (a single lung keeps its side), dense subpleural consolidation put
   back (``postprocess.postprocess_lungs``).
4. ``infection``: the chosen model on the lung crop box (one box per volume) of every slice that holds
   lung, in batches; slices without lung keep probability 0.
5. ``postprocess_infection``: the one cleaning rule (``inference.cleaning.clean_infection``):
   infection restricted to the lungs, components smaller than ``min_lesion_ml`` removed, both
   measured, and the run manifest (``RunInfo``). The mask shows what the report counts.

The report's figures of these masks are the next layer's (``report.case`` runs this pipeline and then
grades the result).

Outputs are preallocated at full size; only one batch of network inputs exists at a time. Nothing
outside the generator is changed until it returns, so stopping it early (napari's ``worker.quit()``)
leaves nothing half-done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.inference.cascade import LUNG_THRESHOLD, LungStage, UNetInfectionStage
from napari_chsnet.inference.cleaning import DEFAULT_MIN_LESION_ML, UncountedInfection, clean_infection
from napari_chsnet.inference.device import (
    AUTO_DTYPE,
    autocast_dtype,
    compute_dtype_for,
    describe_device,
    describe_precision,
    resolve_device,
)
from napari_chsnet.inference.ensemble import EAMCInfectionStage
from napari_chsnet.inference.intensity import hu_to_unit
from napari_chsnet.inference.postprocess import BODY_HU, half_chest_side, postprocess_lungs
from napari_chsnet.inference.preprocessing import lung_crop_box
from napari_chsnet.inference.run_info import RunInfo, case_name
from napari_chsnet.inference.weights import LUNG_STAGE_MODEL, network_for, preprocessing_of, resolve_weights
from napari_chsnet.io.hounsfield import DISPLAY8, INTENSITY_KEY, display8_to_hu, is_label_map, one_value_only
from napari_chsnet.io.memory import check_segmentation_fits
from napari_chsnet.io.readers import count_non_finite, refuse_unknown_intensity
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.registry import DEFAULT_MODEL, DEVICE_CHOICES, LEFT_LUNG, MODEL_KEYS, MODELS, RIGHT_LUNG
from napari_chsnet.slabs import slab_step

if TYPE_CHECKING:
    import torch

# Lung area in the scan's first or last slice, as a fraction of the largest slice's, above which the
# lungs count as cut off there. A complete scan's edge slice grazes at most the costophrenic recesses
# or an apex (P001's first slice: 8 of 380 cm², 2 %); a scan stopped mid-chest cuts through far more.
CUT_LUNG_FRACTION = 0.05
# Share of the lung voxels at an 8-bit export's darkest value above which its window clipped the
# lungs. A lung window's floor lies below any lung density: a lung-window export of 20 P001 slices
# holds none of its lung voxels at 0. A W400/L40 (soft-tissue) export of them holds 69 % of the lungs
# found (96.6 % of the lungs found in HU), so ground glass cannot be seen (lungs 2132 mL against 1458
# mL from HU, the infection on the wrong side); of the phantom with 30 % / 10 % consolidation, 37 %.
CLIPPED_LUNG_SHARE = 0.25
# Below this largest axial lung section the lung stage found no lungs. An adult's lungs cover 200-400
# cm² of a mid-chest slice (P001: 380), a newborn's about 30; the stray voxels marked in an abdomen,
# a neck or a volume of air cover a few cm² at most. A section, not a volume: a thin slab or a single
# slice of a chest holds real lungs (its report then grades no lung, being under 100 mL each).
MIN_LUNG_SECTION_CM2 = 10.0
# Voxel sizes (mm) that a chest CT for these models can have; a volume outside them is refused
# before any network runs. Clinical chest CT has in-plane pixels of 0.2-1.5 mm and slices 0.5-10 mm
# apart (a 2-D single-slice file reads as 1 mm); the bounds leave wide room around both. Outside them
# the header's units are wrong (metres written as mm: 0.0008 mm pixels, for which the lung
# post-processing's 15 mm closing pads 19,000 pixels and ran out of memory after the lung stage) or
# the volume is no chest CT for these models (a micro-CT, a thumbnail of a few pixels across).
IN_PLANE_SPACING_MM = (0.05, 10.0)
SLICE_SPACING_MM = (0.05, 50.0)
STAGES = ("prepare", "lungs", "postprocess_lungs", "infection", "postprocess_infection")
Result = TypeVar("Result")


@dataclass(frozen=True)
class SegmentationSettings:
    """What to run; validated on creation (``ConfigError``). Variants via ``dataclasses.replace``.

    Args:
        model: ``"chsnet"``, ``"eamc"`` or ``"rdunet"`` (``registry.MODEL_KEYS``).
        device: ``"auto"`` (CUDA → MPS → CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
        weights: ``None`` = bundled weights; a weights-set folder or a ``.safetensors`` file
            (see ``weights.resolve_weights``).
        batch_size: slices per network call (memory grows with it; 4 suits a 512 x 512 CT on the CPU).
        threshold: infection probability from which a voxel is infected (EAMC: each member's vote).
        min_lesion_ml: infection components smaller than this are dropped (``inference.cleaning``).
        mirror_averaging: the infection stage also reads every slice mirrored left-right and averages
            (EAMC: every member votes twice); twice the infection stage's time (``cascade.py``).
            ``None`` = the model's default (``registry.ModelInfo.mirror_averaging``).
        overlapping_tiles: EAMC only: its members read tiles every 64 pixels, averaged, instead of the
            paper's 16 non-overlapping 128² patches (three times the time; ``inference.ensemble``).
            ``None`` = the model's default (``registry.ModelInfo.overlapping_tiles``).
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    weights: str | Path | None = None
    batch_size: int = 4
    threshold: float = 0.5
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML
    mirror_averaging: bool | None = None
    overlapping_tiles: bool | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_KEYS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_KEYS)}")
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch size must be a whole number >= 1; got {self.batch_size!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"threshold must lie strictly between 0 and 1; got {self.threshold!r}")
        if not math.isfinite(self.min_lesion_ml) or self.min_lesion_ml < 0:
            raise ConfigError(f"min_lesion_ml must be a volume in mL >= 0; got {self.min_lesion_ml!r}")
        if self.mirror_averaging is not None and not isinstance(self.mirror_averaging, bool):
            raise ConfigError(f"mirror_averaging must be true, false or None; got {self.mirror_averaging!r}")
        if self.overlapping_tiles is not None and not isinstance(self.overlapping_tiles, bool):
            raise ConfigError(
                f"overlapping_tiles must be true, false or None; got {self.overlapping_tiles!r}"
            )
        if self.overlapping_tiles and MODELS[self.model].overlapping_tiles is None:
            raise ConfigError(
                f"overlapping tiles are for EAMC, whose members read the crop in tiles; "
                f"{MODELS[self.model].title} reads it whole"
            )

    @property
    def uses_mirror_averaging(self) -> bool:
        """Whether the run averages over the mirror: the setting, else the model's default."""
        if self.mirror_averaging is None:
            return MODELS[self.model].mirror_averaging
        return self.mirror_averaging

    @property
    def uses_overlapping_tiles(self) -> bool:
        """Whether EAMC's members read overlapping tiles: the setting, else the model's default."""
        if self.overlapping_tiles is None:
            return bool(MODELS[self.model].overlapping_tiles)
        return self.overlapping_tiles

    def inference_options(self) -> dict[str, float | bool]:
        """The settings that change a result beyond model and weights, for the report (the tiling
        only for a model that reads its crop in tiles)."""
        options = {
            "threshold": float(self.threshold),
            "min_lesion_ml": float(self.min_lesion_ml),
            "mirror_averaging": self.uses_mirror_averaging,
        }
        if MODELS[self.model].overlapping_tiles is not None:
            options["overlapping_tiles"] = self.uses_overlapping_tiles
        return options


@dataclass(frozen=True)
class Progress:
    """One step of a run: ``done`` of ``total`` steps, in ``stage`` (one of ``STAGES``)."""

    done: int
    total: int
    stage: str


@dataclass
class SegmentationResult:
    """A segmentation on the CT's own grid.

    Attributes:
        lungs: uint8 ``(z, y, x)``, 0 background, 1 right lung, 2 left lung.
        infection: uint8 0/1, inside the lungs, small components removed.
        probability: float32 infection probability in [0, 1] (0 outside the lung crop box and on
            slices without lung).
        run_info: how the run was made (model, device, weights checksums, timings, settings,
            what the cleaning removed, warnings about the scan).
        device: the device used, as reported.
        timings_s: seconds per stage (``STAGES``).
        uncounted: what the cleaning took out of ``infection`` (islands, infection outside the
            lungs), which the report's figures carry.
        min_lesion_ml: the island threshold ``infection`` was cleaned with.
    """

    lungs: np.ndarray
    infection: np.ndarray
    probability: np.ndarray
    run_info: RunInfo
    device: str
    timings_s: dict[str, float] = field(default_factory=dict)
    uncounted: UncountedInfection = UncountedInfection()
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML


def _batches(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def _check_volume(volume: CTVolume) -> None:
    hu = volume.hu
    if hu.ndim != 3 or 0 in hu.shape:
        raise InvalidVolumeError(
            f"{volume.source or 'the CT'}: expected a non-empty (z, y, x) volume, got {hu.shape}"
        )
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise InvalidVolumeError(
            f"{volume.source or 'the CT'}: HU values must be real numbers, got dtype {hu.dtype}"
        )
    _check_spacing(volume)
    if count_non_finite(hu):  # a slice at a time: no volume-sized mask
        raise InvalidVolumeError(
            f"{volume.source or 'the CT'} holds NaN or infinite values; fix or re-export the scan"
        )
    blank = one_value_only(hu)
    if blank:  # an all-zero volume was refused as "a label map (values 0)"
        raise InvalidVolumeError(
            f"{volume.source or 'the CT'} holds {blank}: an empty or blank volume, not a CT; "
            "segment the CT scan itself"
        )
    if is_label_map(hu):  # lungs.nii.gz given as the CT: a "CT-0" report of a mask, exit 0
        levels = np.unique(hu[:: max(1, hu.shape[0] // 8)]).astype(int).tolist()
        shown = ", ".join(map(str, levels[:6])) + (", …" if len(levels) > 6 else "")
        raise InvalidVolumeError(
            f"{volume.source or 'the CT'} holds a label map (values {shown}), not a CT; "
            "segment the CT scan itself"
        )
    refuse_unknown_intensity(volume)  # an MR-like volume read as HU was graded CT-4
    check_segmentation_fits(volume.source or "the CT", hu.size)


def _check_spacing(volume: CTVolume) -> None:
    """Refuse a voxel size no chest CT has (``IN_PLANE_SPACING_MM``, ``SLICE_SPACING_MM``)."""
    x_mm, y_mm, z_mm = (float(v) for v in volume.geometry.spacing_mm)
    low_xy, high_xy = IN_PLANE_SPACING_MM
    low_z, high_z = SLICE_SPACING_MM
    if low_xy <= x_mm <= high_xy and low_xy <= y_mm <= high_xy and low_z <= z_mm <= high_z:
        return
    raise InvalidVolumeError(
        f"{volume.source or 'the CT'}: voxel size {x_mm:g} × {y_mm:g} mm in-plane, {z_mm:g} mm between "
        f"slices is not a chest CT's (expected {low_xy:g}-{high_xy:g} mm in-plane, {low_z:g}-{high_z:g} mm "
        "between slices); check the header's spacing and its units (metres or micrometres written as mm) "
        "and fix or re-export the scan"
    )


class _StageClock:
    """Seconds per stage, counting only the engine's own work (not the time a consumer spends between
    two yields, e.g. a GUI drawing a progress bar)."""

    def __init__(self) -> None:
        self.timings = dict.fromkeys(STAGES, 0.0)
        self._since = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] += now - self._since
        self._since = now

    def resume(self) -> None:
        self._since = time.perf_counter()


def build_stages(
    settings: SegmentationSettings, device, compute_dtype: torch.dtype | None | str = AUTO_DTYPE
) -> tuple[LungStage, object, dict]:
    """The lung stage, the model's infection stage and the checkpoints they come from; both stages
    compute in ``compute_dtype`` (``"auto"``: the device's default, read once here)."""
    compute_dtype = compute_dtype_for(device, compute_dtype)
    checkpoints = resolve_weights(settings.model, settings.weights)
    lung_checkpoint = checkpoints[LUNG_STAGE_MODEL]
    lung_prep = preprocessing_of(lung_checkpoint)
    chsnet = network_for(lung_checkpoint, device)
    lung_stage = LungStage(
        chsnet.lung_net, lung_prep.lung_input_size, lung_prep.window_hu, device, compute_dtype=compute_dtype
    )
    checkpoint = checkpoints[settings.model]
    prep = preprocessing_of(checkpoint)
    network = network_for(checkpoint, device)
    if settings.model == "eamc":
        infection_stage = EAMCInfectionStage(
            network, prep.infection_input_size, prep.patch_size, prep.window_hu, device, settings.threshold,
            settings.uses_mirror_averaging, settings.uses_overlapping_tiles, compute_dtype=compute_dtype,
        )  # fmt: skip
    else:
        infection_stage = UNetInfectionStage(
            network, prep.infection_input_size, prep.window_hu, device, settings.threshold,
            settings.uses_mirror_averaging, compute_dtype=compute_dtype,
        )  # fmt: skip
    return lung_stage, infection_stage, checkpoints


def iter_segmentation(
    volume: CTVolume, settings: SegmentationSettings | None = None
) -> Generator[Progress, None, SegmentationResult]:
    """Segment ``volume``, yielding a :class:`Progress` after every batch and stage; returns the result.

    Example:
        >>> steps = iter_segmentation(ct, SegmentationSettings(model="rdunet"))  # doctest: +SKIP
        >>> while True:
        ...     try:
        ...         progress = next(steps)
        ...     except StopIteration as finished:
        ...         result = finished.value
        ...         break
    """
    settings = settings or SegmentationSettings()
    clock = _StageClock()

    _check_volume(volume)
    device = resolve_device(settings.device)
    compute_dtype = autocast_dtype(device)  # once: the precision recorded is the one every batch ran in
    lung_stage, infection_stage, checkpoints = build_stages(settings, device, compute_dtype)
    hu = volume.hu
    n_slices = hu.shape[0]
    lung_batches = _batches(np.arange(n_slices), settings.batch_size)
    done, total = 1, 2 * len(lung_batches) + 3
    clock.lap("prepare")
    yield Progress(done, total, "prepare")
    clock.resume()

    lung_binary = np.zeros(hu.shape, dtype=bool)
    for batch in lung_batches:
        span = slice(int(batch[0]), int(batch[-1]) + 1)
        lung_binary[span] = lung_stage.predict(hu_to_unit(hu[span], lung_stage.window_hu)) >= LUNG_THRESHOLD
        done += 1
        clock.lap("lungs")
        yield Progress(done, total, "lungs")
        clock.resume()

    spacing_xy = (volume.geometry.spacing_mm[0], volume.geometry.spacing_mm[1])
    lungs = postprocess_lungs(lung_binary, hu, spacing_xy)
    del lung_binary
    sections = np.count_nonzero(lungs, axis=(1, 2))  # lung voxels per slice
    _check_lungs_found(volume, sections)
    run_warnings = (
        field_of_view_warnings(hu, lungs, spacing_xy)
        + axial_coverage_warnings(lungs)
        + clipped_lung_warnings(volume, lungs)
    )
    box = lung_crop_box(lungs)
    infection_batches = _batches(np.flatnonzero(sections), settings.batch_size)
    done, total = done + 1, done + 1 + len(infection_batches) + 1
    clock.lap("postprocess_lungs")
    yield Progress(done, total, "postprocess_lungs")
    clock.resume()

    probability = np.zeros(hu.shape, dtype=np.float32)
    infection_raw = np.zeros(hu.shape, dtype=bool)
    for batch in infection_batches:
        output = infection_stage.predict(
            hu_to_unit(hu[batch], infection_stage.window_hu), lungs[batch] > 0, box
        )
        probability[batch] = output.probability
        infection_raw[batch] = output.mask
        done += 1
        clock.lap("infection")
        yield Progress(done, total, "infection")
        clock.resume()

    # One cleaning, whose counts the report carries: the mask returned is the mask counted.
    cleaned = clean_infection(lungs, infection_raw, volume.geometry, settings.min_lesion_ml)
    infection = cleaned.mask.view(np.uint8)  # 0/1 without a copy
    del infection_raw
    clock.lap("postprocess_infection")
    reported_device = describe_device(device)
    run_info = RunInfo(
        model=settings.model,
        device=reported_device,
        runtime_s=sum(clock.timings.values()),
        weights_sha256=checkpoints[settings.model].sha256 or None,
        lung_weights_sha256=checkpoints[LUNG_STAGE_MODEL].sha256 or None,
        input=volume.source,
        case=case_name(volume.source) if volume.source else "",
        stage_timings_s={stage: round(seconds, 4) for stage, seconds in clock.timings.items()},
        inference_options={**settings.inference_options(), "precision": describe_precision(compute_dtype)},
        uncounted_infection=cleaned.uncounted.to_dict(),
        warnings=run_warnings,
    )
    yield Progress(total, total, "postprocess_infection")
    return SegmentationResult(
        lungs,
        infection,
        probability,
        run_info,
        reported_device,
        dict(clock.timings),
        cleaned.uncounted,
        cleaned.min_lesion_ml,
    )


def _check_lungs_found(volume: CTVolume, sections: np.ndarray) -> None:
    """Refuse a scan in which the lung stage found no lungs (``MIN_LUNG_SECTION_CM2``): no chest (an
    abdomen, a neck, an empty volume) or no CT in HU. Its report read "CT-0, normal", or graded a few
    mL of stray voxels up to CT-4. Lungs lie inside a body: a volume of air got 11-13 cm² of "lung" per
    slice at the image's edge, in slices without any tissue. ``sections``: lung voxels per slice."""
    largest = int(np.argmax(sections))
    pixel_cm2 = volume.geometry.spacing_mm[0] * volume.geometry.spacing_mm[1] / 100
    lung_cm2 = int(sections[largest]) * pixel_cm2
    tissue_cm2 = int(np.count_nonzero(volume.hu[largest] > BODY_HU)) * pixel_cm2
    if lung_cm2 < MIN_LUNG_SECTION_CM2:
        found = f"no slice holds more than {lung_cm2:.1f} cm² of lung; a lung section covers at least {MIN_LUNG_SECTION_CM2:g}"
    elif tissue_cm2 < MIN_LUNG_SECTION_CM2:
        found = f"the largest lung section marked, {lung_cm2:.1f} cm², lies in a slice with {tissue_cm2:.1f} cm² of body tissue"
    else:
        return
    raise InvalidVolumeError(
        f"{volume.source or 'the scan'}: no lungs found ({found}): the scan does not show the chest, or its values "
        "are not CT Hounsfield units."
    )


def clipped_lung_warnings(volume: CTVolume, lungs: np.ndarray) -> tuple[str, ...]:
    """A warning when an 8-bit display export's window stored most of the lungs as its darkest
    value (``CLIPPED_LUNG_SHARE``): the lungs' shades, and so ground glass, were lost in the export."""
    if volume.metadata.get(INTENSITY_KEY) != DISPLAY8:
        return ()
    darkest = float(display8_to_hu(np.zeros(1))[0]) + 0.5  # half a grey level above value 0
    step = slab_step(lungs.shape)
    at_darkest = sum(
        int(
            np.count_nonzero((volume.hu[start : start + step] <= darkest) & (lungs[start : start + step] > 0))
        )
        for start in range(0, lungs.shape[0], step)
    )
    share = at_darkest / max(1, np.count_nonzero(lungs))
    if share <= CLIPPED_LUNG_SHARE:
        return ()
    return (
        f"{100 * share:.0f} % of the lung voxels hold the 8-bit export's darkest value: its window clipped the "
        "lungs, so ground-glass opacity cannot be seen and the lung and infection masks are unreliable; "
        "segment the original scan in Hounsfield units.",
    )


def field_of_view_warnings(
    hu: np.ndarray, lungs: np.ndarray, spacing_xy_mm: tuple[float, float]
) -> tuple[str, ...]:
    """A warning when the scan shows one half of the chest (``half_chest_side``) and the lung of the
    side it leaves out is empty or under half the other: that lung is missing or cut short, and the
    sides were told from the cut."""
    cut = half_chest_side(hu, np.flatnonzero(lungs.any(axis=(1, 2))), spacing_xy_mm)
    if cut is None:
        return ()
    kept = LEFT_LUNG if cut == RIGHT_LUNG else RIGHT_LUNG
    if np.count_nonzero(lungs == cut) >= 0.5 * np.count_nonzero(lungs == kept):
        return ()
    side = "right" if cut == RIGHT_LUNG else "left"
    return (
        f"The field of view shows one half of the chest and cuts the body near the midline on the patient's "
        f"{side}: the {side} lung is missing or cut short, so its figures and the overall grade are "
        "incomplete; the lung shown was labelled from the side the scan keeps, check it.",
    )


def axial_coverage_warnings(lungs: np.ndarray) -> tuple[str, ...]:
    """A warning when the scan's first slice (the lung bases, in the display's LPS order) or its last
    (the apices) still holds more than ``CUT_LUNG_FRACTION`` of the largest lung cross-section: the
    scan stops inside the lungs, so their volumes and involvement count only what was scanned."""
    areas = np.count_nonzero(lungs, axis=(1, 2))
    if areas.size == 0 or not areas.any():
        return ()
    largest = int(areas.max())
    cut = [
        (part, areas[index])
        for index, part in ((0, "bases"), (-1, "apices"))
        if areas[index] > CUT_LUNG_FRACTION * largest
    ]
    if not cut:
        return ()
    shares = " and ".join(f"{100 * area / largest:.0f} % at the {part}" for part, area in cut)
    parts = " and ".join(part for part, _area in cut)
    return (
        f"The scan stops inside the lungs (its end slices hold {shares} of the largest lung cross-section): "
        f"the lung {parts} are not fully scanned, so volumes, involvement and grades count only the scanned part.",
    )


def segment_volume(
    volume: CTVolume,
    settings: SegmentationSettings | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> SegmentationResult:
    """Run :func:`iter_segmentation` to the end, calling ``on_progress`` at every step."""
    return run_to_end(iter_segmentation(volume, settings), on_progress)


def run_to_end(
    steps: Generator[Progress, None, Result], on_progress: Callable[[Progress], None] | None = None
) -> Result:
    """Run a generator of :class:`Progress` steps to its end, calling ``on_progress`` at every step,
    and return what it returns."""
    while True:
        try:
            progress = next(steps)
        except StopIteration as finished:
            return finished.value
        if on_progress is not None:
            on_progress(progress)
