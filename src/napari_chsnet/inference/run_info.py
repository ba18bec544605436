"""How a segmentation was produced: model, weights checksums, device, timings, settings, software.

The volume pipeline fills a :class:`RunInfo` for every run; the report writes it as the JSON's run
manifest (``report.manifest``) and napari keeps it with the result layers. Nothing here imports torch:
versions come from ``importlib.metadata``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

# Distribution names whose versions go into every report, under the key used in the JSON.
_VERSIONED_DISTRIBUTIONS = {
    "torch": "torch",
    "numpy": "numpy",
    "SimpleITK": "SimpleITK",
    "napari_chsnet": "napari-chsnet",
}

_CASE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima", ".npy", ".npz")


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on, without importing them."""
    versions = {"python": platform.python_version()}
    for key, distribution in _VERSIONED_DISTRIBUTIONS.items():
        try:
            versions[key] = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            versions[key] = "not installed"
    return versions


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def case_name(input_path: str) -> str:
    """A short case identifier from an input path: the file or folder name without image suffixes."""
    # abspath turns "." and ".." into the folder they stand for (without following links, so a
    # linked scan keeps the name it was given); a case is never ".", ".." or empty.
    name = Path(os.path.abspath(str(input_path))).name
    lower = name.lower()
    for suffix in _CASE_SUFFIXES:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name if name not in ("", ".", "..") else "case"


def reduced_precision(inference_options: dict[str, Any]) -> str | None:
    """``"bfloat16"`` or ``"float16"`` when the networks ran under autocast (``inference_options``'
    ``precision``, ``device.precision_name``), else None (float32, or a run that did not record it):
    the short word a status line adds, since such figures differ from float32's in the last digits."""
    precision = str(inference_options.get("precision") or "float32").split(" ")[0]
    return None if precision == "float32" else precision


@dataclass(frozen=True)
class RunInfo:
    """How a result was produced.

    Attributes:
        model: model key from ``registry.MODELS`` (e.g. ``"chsnet"``).
        device: the device actually used (``"cpu"``, ``"cuda:0"``, ...), not the one asked for.
        runtime_s: wall time of the whole run.
        weights_sha256: hex SHA-256 of the weights file (``file_sha256``), or None if unknown.
        lung_weights_sha256: the same of the file the lung stage came from (CHS-Net's; for
            ``chsnet`` the same file), since the lungs decide every volume; None if unknown.
        input: the input path (file or DICOM folder) or a description such as "synthetic phantom".
        case: case identifier for the CSV; defaults to the input's name (``case_name``).
        timestamp: ISO-8601 time of the run (UTC): when the segmentation was made. A report written
            later (after corrections in napari) keeps it and says when it was written in
            ``exported_at``.
        stage_timings_s: seconds per stage (``report.case.CASE_STAGES``: prepare, lungs, ..., report).
        inference_options: settings that change the result (threshold, min_lesion_ml,
            mirror_averaging: ``SegmentationSettings.inference_options``; and the pipeline's
            precision: ``device.precision_name``); empty if unknown.
        software: versions from ``software_versions()``.
        uncounted_infection: what the run's post-processing took out of the infection mask it
            returned (``UncountedInfection.to_dict()``). It travels with the napari layers, which
            hold only the cleaned mask, so that a report of unedited layers still says it.
        warnings: what the run noticed about the scan that its masks cannot tell (a field of
            view cutting the body near the midline); they travel with the layers too.
    """

    model: str
    device: str
    runtime_s: float
    weights_sha256: str | None = None
    lung_weights_sha256: str | None = None
    input: str = ""
    case: str = ""
    timestamp: str = field(default_factory=utc_timestamp)
    stage_timings_s: dict[str, float] = field(default_factory=dict)
    inference_options: dict[str, Any] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=software_versions)
    uncounted_infection: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
