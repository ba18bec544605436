"""A whole case: the volume pipeline's masks (``inference.pipeline``), then the report's figures of them.

The CLI, napari and the scripts segment through :func:`iter_case` / :func:`segment_case`, so every
result they show or write carries the per-lung severity of exactly the masks it holds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from napari_chsnet.inference.cleaning import CleanedInfection
from napari_chsnet.inference.pipeline import (
    STAGES,
    Progress,
    SegmentationResult,
    SegmentationSettings,
    iter_segmentation,
    run_to_end,
)
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.report.severity import SeverityReport, severity_from_cleaned

CASE_STAGES = (*STAGES, "report")


@dataclass
class CaseResult(SegmentationResult):
    """A :class:`SegmentationResult` with the per-lung figures of its masks.

    Attributes:
        severity: per-lung figures of ``infection`` (``report.severity_from_cleaned``), with the
            islands and the infection outside the lungs the cleaning removed.
    """

    severity: SeverityReport = field(kw_only=True)


def iter_case(
    volume: CTVolume, settings: SegmentationSettings | None = None
) -> Generator[Progress, None, CaseResult]:
    """:func:`inference.pipeline.iter_segmentation`'s steps, then a ``report`` step; returns the result
    with its severity. Stopping it early leaves nothing half-done, as the pipeline's."""
    steps = iter_segmentation(volume, settings)
    total = 1
    while True:
        try:
            progress = next(steps)
        except StopIteration as finished:
            segmentation: SegmentationResult = finished.value
            break
        total = progress.total + 1  # the report step follows
        yield Progress(progress.done, total, progress.stage)
    started = time.perf_counter()
    cleaned = CleanedInfection(
        segmentation.infection.view(bool), segmentation.min_lesion_ml, segmentation.uncounted
    )
    severity = severity_from_cleaned(segmentation.lungs, cleaned, volume.geometry)
    seconds = time.perf_counter() - started
    timings = {**segmentation.timings_s, "report": seconds}
    run_info = dataclasses.replace(
        segmentation.run_info,
        runtime_s=segmentation.run_info.runtime_s + seconds,
        stage_timings_s={**segmentation.run_info.stage_timings_s, "report": round(seconds, 4)},
    )
    fields = {f.name: getattr(segmentation, f.name) for f in dataclasses.fields(segmentation)}
    result = CaseResult(**{**fields, "run_info": run_info, "timings_s": timings}, severity=severity)
    yield Progress(total, total, "report")
    return result


def segment_case(
    volume: CTVolume,
    settings: SegmentationSettings | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> CaseResult:
    """Run :func:`iter_case` to the end, calling ``on_progress`` at every step."""
    return run_to_end(iter_case(volume, settings), on_progress)
