"""``chsnet evaluate`` on CT scans: each scan segmented as ``chsnet segment`` does, then scored in 3-D
against its reference mask (``inference/evaluation.py``).

``--images`` holds the scans (NIfTI, MHA, NRRD files, or one subfolder per DICOM series); ``--masks``
holds one mask file per scan on the scan's voxel grid, named as the scan (``P001.nii.gz``) or with a
suffix of ``MASK_NAME_SUFFIXES`` (``P001_mask.nii.gz``); both may be one folder. A scan that cannot be
read, segmented or paired with its mask's grid is named on stderr and the others are scored (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_chsnet.errors import CHSNetError, InvalidVolumeError
from napari_chsnet.interrupts import Terminated
from napari_chsnet.listing import first_and_more

# How reference masks are commonly named after their scan (MosMedData: _mask; others _seg, _gt, _label).
MASK_NAME_SUFFIXES = ("_mask", "-mask", "_seg", "-seg", "_gt", "_label", "_labels", "-label", "-labels")
TABLE_METRICS = ("dice", "precision", "recall")
# An infection reference covering this share of the segmented lungs is more likely a lung mask (a
# critical CT-4 case reaches it too, hence a warning, not a refusal).
LUNG_LIKE_COVERAGE = 0.9


@dataclass(frozen=True)
class ScanPair:
    name: str
    scan: Path
    mask: Path


def scan_entries(folder: Path, of_masks: bool = False) -> dict[str, Path]:
    """The CT scans in ``folder`` by case name: volume files and DICOM series subfolders; with ``of_masks``,
    the mask volume files. Loose DICOM files are refused: they are one series' slices, not one case each
    (and no mask: masks are read as volume files)."""
    from napari_chsnet.inference.run_info import case_name
    from napari_chsnet.io.dicom_headers import folder_has_dicom
    from napari_chsnet.io.readers import IMAGE_SUFFIXES, suffix_of

    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR":  # a DICOMDIR indexes the series
            continue
        if path.is_dir():
            if of_masks or not folder_has_dicom(path):
                continue
        elif suffix_of(path) not in IMAGE_SUFFIXES:
            if _is_dicom_file(path):
                advice = (
                    "masks are read as NIfTI, MHA or NRRD volumes on their scan's grid"
                    if of_masks
                    else "give a folder with one subfolder per DICOM series (one per scan), or segment a "
                    "single series with chsnet segment"
                )
                raise InvalidVolumeError(f"{folder} holds DICOM files ({path.name}); {advice}")
            continue
        name = case_name(str(path))
        if name in found:
            raise InvalidVolumeError(
                f"{folder} holds both {found[name].name} and {path.name}, which are both case {name}; "
                "scans and masks are matched by name, so keep one file per name"
            )
        found[name] = path
    return found


def _is_dicom_file(path: Path) -> bool:
    """A DICOM suffix, or a file named as DICOM exports name them (no suffix, or a number such as a UID's
    last part) that starts like DICOM; other files (.png, .raw beside an .mhd, .csv) are not opened."""
    from napari_chsnet.io.dicom_headers import looks_like_dicom
    from napari_chsnet.io.readers import DICOM_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    return (suffix == "" or suffix[1:].isdigit()) and path.is_file() and looks_like_dicom(path)


def _mask_of(name: str, scan: Path, masks: dict[str, Path]) -> Path | None:
    """The mask named like scan ``name`` (never the scan itself, when both share a folder)."""
    keys = (name, *(name + suffix for suffix in MASK_NAME_SUFFIXES))
    candidates = [masks[key] for key in keys if key in masks and masks[key].resolve() != scan.resolve()]
    if len(candidates) > 1:
        raise InvalidVolumeError(
            f"scan {name} has {len(candidates)} masks ({', '.join(p.name for p in candidates)}); keep one"
        )
    return candidates[0] if candidates else None


def pair_scans(images: Path, masks: Path) -> list[ScanPair]:
    """(scan, mask) pairs by case name; scans without a mask are left out (said on stderr)."""
    scans = scan_entries(images)
    mask_files = scan_entries(masks, of_masks=True)
    if images.resolve() == masks.resolve():  # scans and masks side by side: a mask is not a scan
        scans = {
            name: path
            for name, path in scans.items()
            if not any(name == other + suffix for other in scans for suffix in MASK_NAME_SUFFIXES)
        }
    pairs = []
    for name, scan in scans.items():
        mask = _mask_of(name, scan, mask_files)
        if mask is not None:
            pairs.append(ScanPair(name, scan, mask))
    if not pairs:
        example = next(iter(scans))
        raise InvalidVolumeError(
            f"no scan in {images} has a mask named like it in {masks} (e.g. {example}.nii.gz or "
            f"{example}_mask.nii.gz)"
        )
    paired = {pair.name for pair in pairs}
    unmatched = [name for name in scans if name not in paired]
    if unmatched:
        print(
            f"chsnet evaluate: {len(unmatched)} scan(s) without a mask are left out: {first_and_more(unmatched, 5)}",
            file=sys.stderr,
        )
    used = {pair.mask.resolve() for pair in pairs} | {path.resolve() for path in scans.values()}
    unused = [path.name for path in mask_files.values() if path.resolve() not in used]
    if unused and images.resolve() != masks.resolve():
        print(
            f"chsnet evaluate: {len(unused)} mask(s) named like no scan are not used: {first_and_more(unused, 5)}",
            file=sys.stderr,
        )
    return pairs


def run_scans(args: argparse.Namespace) -> int:
    """Segment and score every paired scan; print the figures (a table, or one JSON object)."""
    from napari_chsnet.cli._common import each_case, segment_with_bar
    from napari_chsnet.cli.options import model_settings
    from napari_chsnet.inference.device import precision_name, resolve_device
    from napari_chsnet.inference.weights import resolve_weights
    from napari_chsnet.models.metrics import MetricsAccumulator

    if args.rotate != "auto":
        raise InvalidVolumeError(
            "--rotate is for 2-D slices; CT scans are oriented by their headers (leave it out, or pass "
            "--slice-stack if the files' slices are unrelated 2-D images)"
        )
    pairs = pair_scans(args.images, args.masks)
    settings = model_settings(args)
    precision = precision_name(resolve_device(settings.device))
    resolve_weights(settings.model, settings.weights)  # a bad weights file is told before any scan is read
    accumulator = MetricsAccumulator()
    scores, failed = {}, {}

    def score(pair: ScanPair) -> None:
        scores[pair.name] = _score_pair(pair, settings, args, accumulator, segment_with_bar)

    def record(pair: ScanPair, error: CHSNetError) -> None:
        failed[pair.name] = str(error)
        print(f"chsnet evaluate: error: {pair.name}: {error}", file=sys.stderr)

    try:
        each_case("evaluate", pairs, score, record)
    except (KeyboardInterrupt, Terminated):  # the scans scored so far are not lost
        if scores:
            print(
                f"chsnet evaluate: stopped after {len(scores) + len(failed)} of {len(pairs)} scans",
                file=sys.stderr,
            )
            _print_scores(args, scores, failed, accumulator.result(), precision, interrupted=True)
        raise
    if not scores:
        print(f"chsnet evaluate: all {len(pairs)} scans failed", file=sys.stderr)
        return 2
    _print_scores(args, scores, failed, accumulator.result(), precision)
    if failed:
        print(
            f"chsnet evaluate: {len(failed)} of {len(pairs)} scans failed; the others were scored",
            file=sys.stderr,
        )
        return 2
    return 0


def _score_pair(pair: ScanPair, settings, args: argparse.Namespace, accumulator, segment) -> dict:
    from napari_chsnet.inference.evaluation import (
        describe_reference,
        keep_labels,
        lung_sides,
        reference_target,
        score_volume,
    )
    from napari_chsnet.io.readers import read_ct
    from napari_chsnet.io.writers import read_mask

    volume = read_ct(pair.scan, intensity=args.intensity, fill_missing_slices=args.fill_missing_slices)
    stored = read_mask(pair.mask, volume.geometry, volume.shape)  # before the long part: a wrong grid
    reference = keep_labels(stored, args.target_labels)
    truth = reference_target(reference)
    if args.target == "lungs" and not truth.any():  # an empty infection mask is a scan without infection
        raise InvalidVolumeError(f"mask {pair.mask} is empty: a lung mask holds the lungs")
    # labels 1 and 2 of a lung mask are its lungs (the side rule); said for the infection's labels and a 0/255 mask
    notes = [describe_reference(reference) if args.target == "infection" or reference.max() > 127 else None]
    if args.target_labels and stored.any() and not reference.any():  # a healthy scan's mask holds none either
        values = ", ".join(str(int(v)) for v in np.unique(stored) if v)
        notes.append(f"the mask holds none of --target-labels (its values: {values}): scored as empty")
    sides = lung_sides(reference, volume.geometry) if int(reference.max(initial=0)) <= 127 else None
    if args.target == "lungs" and sides is not None and not sides.found and sides.n_labels > 1:
        notes.append(f"lungs not scored by side: {sides.reason}")
    result = segment(volume, settings, pair.name)
    if args.target == "infection":
        notes.append(_looks_like_lungs(truth, result.lungs, sides))
    # what the reader converted (8-bit display values, HU + 1024) and what the run noticed about the scan
    notes += [str(w) for w in volume.metadata.get("warnings", []) or []] + list(result.run_info.warnings)
    for note in dict.fromkeys(n for n in notes if n):
        print(f"chsnet evaluate: warning: {pair.name}: {note}", file=sys.stderr)
    sides = sides if args.target == "lungs" else None
    return score_volume(result, reference, volume.geometry, args.target, accumulator, sides).as_dict()


def _looks_like_lungs(truth, lungs, sides) -> str | None:
    """A warning when an infection reference looks like a lung mask (one label per lung, or most of
    the segmented lungs): scored as infection it gives a meaningless Dice."""
    lung_voxels = int(np.count_nonzero(lungs))
    covered = int(np.count_nonzero(truth & (lungs > 0))) / lung_voxels if lung_voxels else 0.0
    if (sides is not None and sides.found) or covered >= LUNG_LIKE_COVERAGE:
        return (
            f"the mask covers {100 * covered:.0f} % of the segmented lungs"
            + (" with one label per lung" if sides is not None and sides.found else "")
            + ": if it is a lung mask, score it with --target lungs"
        )
    return None


def _print_scores(
    args: argparse.Namespace,
    scores: dict,
    failed: dict,
    summary: dict,
    precision: str,
    interrupted: bool = False,
) -> None:
    from napari_chsnet.models.metrics import METRIC_NAMES

    if args.json:
        print(
            json.dumps(
                {
                    "n_scans": len(scores),
                    "target": args.target,
                    "model": args.model,
                    "mean": summary["mean"],  # over scans
                    "pooled": summary["pooled"],  # over every voxel of every scan
                    "precision": precision,  # the networks' (device.precision_name)
                    "per_scan": scores,
                    "failed": failed,
                    "interrupted": interrupted,  # Ctrl-C or SIGTERM: the scans after these were not run
                }
            )
        )
        return
    with_sides = any(score["right_lung_dice"] is not None for score in scores.values())
    scans = "1 CT scan" if len(scores) == 1 else f"{len(scores)} CT scans"
    print(f"{args.model}, {args.target}, on {scans} from {args.images} (3-D, per scan)")
    header = f"{'scan':<24}" + "".join(f"{name:>11}" for name in TABLE_METRICS)
    header += f"{'ref. mL':>11}{'seg. mL':>11}" + (
        f"{'right dice':>12}{'left dice':>11}" if with_sides else ""
    )
    print(header)
    for name, score in scores.items():
        row = f"{_short(name):<24}" + "".join(f"{score[metric]:>11.4f}" for metric in TABLE_METRICS)
        row += f"{score['reference_ml']:>11.1f}{score['segmented_ml']:>11.1f}"
        if with_sides:
            row += f"{_fmt(score['right_lung_dice']):>12}{_fmt(score['left_lung_dice']):>11}"
        print(row)
    print()
    print(f"{'metric':<12}{'mean':>10}{'pooled':>10}")
    for name in METRIC_NAMES:
        print(f"{name:<12}{_fmt(summary['mean'][name]):>10}{_fmt(summary['pooled'][name]):>10}")
    if failed:
        print(f"failed: {first_and_more(list(failed), 5)}")
    if interrupted:
        print("interrupted: the scans after these were not scored")


def _short(name: str) -> str:
    """At most 23 characters, cut in the middle: long names (DICOM UIDs) differ at their ends."""
    return name if len(name) <= 23 else name[:10] + "…" + name[-12:]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
