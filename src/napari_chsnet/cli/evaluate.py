"""``chsnet evaluate``: score a model on labelled 2-D slices (8-bit PNG/JPG images and their masks).

The slices are scored as the papers score COVID-SemiSeg: each image goes through ``display8_to_unit``
(the 8-bit values already are the shared window; no HU window is applied), the lung stage finds the
lungs, and the infection stage reads the whole image as its crop (such slices are already cropped to
the lungs; a whole axial slice is read on its lungs' box, ``inference.slices.infection_crop``).
CHS-Net's lung contour map comes from the lung stage (post-processed as in a volume). The infection
network's own mask is scored (threshold 0.5; EAMC: its vote), not restricted to the lungs
and without small-component removal. ``--rotate`` undoes a rotation of the dataset: COVID-SemiSeg
slices are rotated 90° (anterior on the image's left) and the models are trained on anterior-up slices,
so ``--rotate 90`` applies ``np.rot90(image, k=-1)`` to images and masks. ``--rotate auto`` (the
default) picks the folder's quarter turn from the lung stage's certainty (inference/orientation.py)
and says which on stderr.

Masks are 0/255 images or label images (0/1, 0/1/2, palette PNGs such as COVID-SemiSeg's multiclass
masks); ``foreground_of_masks`` tells them apart for the whole folder and counts every non-zero label.

``--target lungs`` scores the lung stage instead (masks = both lungs, e.g. 255, or 1 = right and
2 = left): the post-processed lung mask, and the lung network's probability for the AUC.

A folder of CT scans (NIfTI, MHA, NRRD, DICOM series subfolders) instead of slices is segmented scan by
scan as ``chsnet segment`` does and scored in 3-D against mask volumes: ``evaluate_scans.py``. With
``--slice-stack`` such files are piles of unrelated 2-D slices in HU (MedSeg's ``tr_im.nii.gz``), each
slice segmented on its own and scored here as a 2-D case: ``evaluate_stacks.py``. ``--target-labels``
keeps only those mask values as the target, in every mode.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_chsnet.cli.options import DefaultsHelpFormatter, add_model_options, model_settings
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.orientation import ROTATIONS, estimate_rotation, upright
from napari_chsnet.io.hounsfield import INTENSITY_CHOICES
from napari_chsnet.listing import first_and_more

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
AUTO = "auto"
# Where anterior lies in the stored image for each turn (rotated counter-clockwise from anterior-up).
_ANTERIOR_AFTER_TURN = {0: "at the top", 90: "on the left", 180: "at the bottom", 270: "on the right"}
TARGETS = ("infection", "lungs")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on labelled 2-D slices or CT scans against reference masks",
        description="Score the infection (or lung) segmentation against reference masks matched by name: on 8-bit "
        "PNG/JPG slices (masks 0/255 or label images), or on CT scans (NIfTI, MHA, NRRD, or one DICOM series "
        "per subfolder; masks as volume files on each scan's grid, named as the scan or with _mask, _seg, _gt "
        "or _label), segmented as chsnet segment does and scored in 3-D; with --slice-stack, volume files whose "
        "slices are unrelated 2-D images, scored slice by slice. Prints the paper metrics averaged over images "
        "or scans (mean) and over all pixels (pooled).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--images",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder of 8-bit slices, CT scans or slice stacks",
    )
    parser.add_argument(
        "--masks", type=Path, required=True, metavar="DIR",
        help="folder of masks: 0/255 images (target above 127) or label images (0/1, 0/1/2, palette PNGs: "
        "every non-zero label), or for scans mask volumes read the same way",
    )  # fmt: skip
    add_model_options(parser)
    parser.add_argument(
        "--rotate", type=_rotation, default=AUTO, metavar="{auto,0,90,180,270}",
        help="degrees the slices are rotated counter-clockwise from anterior-up (COVID-SemiSeg: 90); auto: "
        "the quarter turn under which the lung stage is surest, one for the folder (scans: their headers)",
    )  # fmt: skip
    parser.add_argument(
        "--target", choices=TARGETS, default="infection",
        help="what the masks show: infection, or both lungs (scores the lung stage)",
    )  # fmt: skip
    parser.add_argument(
        "--target-labels", type=_labels, default=None, metavar="L[,L...]",
        help="the mask values that are the target, e.g. 1,2 for MedSeg's ground glass and consolidation "
        "without its pleural effusion (3); default: every non-zero value (a 0/255 mask: above 127)",
    )  # fmt: skip
    scans = parser.add_argument_group("CT scans and slice stacks only")
    scans.add_argument(
        "--slice-stack", action="store_true",
        help="the volume files are stacks of unrelated 2-D slices (MedSeg's tr_im.nii.gz): each slice is "
        "segmented on its own and scored as a 2-D slice (mean over slices; --rotate applies)",
    )  # fmt: skip
    scans.add_argument(
        "--intensity", choices=INTENSITY_CHOICES, default="auto",
        help="what the scans' values are, as for chsnet segment (docs/io.md)",
    )  # fmt: skip
    scans.add_argument(
        "--fill-missing-slices", action="store_true",
        help="DICOM: interpolate the slices a series lacks instead of refusing it, as for chsnet segment",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(run=run, parser=parser)
    return parser


def _check_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise InvalidVolumeError(f"{what} folder {folder} does not exist or is not a folder")


def holds_scans(images: Path) -> bool:
    """Whether ``--images`` is a folder of CT scans (True) or of 8-bit slices (False); refused when
    it holds both or neither."""
    from napari_chsnet.cli.evaluate_scans import scan_entries

    _check_folder(images, "images")
    slices = [p.name for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    scans = [p.name for p in scan_entries(images).values()]
    if slices and scans:
        raise InvalidVolumeError(
            f"images folder {images} holds both 8-bit slices ({first_and_more(slices, 2)}) and CT scans "
            f"({first_and_more(scans, 2)}); put them in separate folders"
        )
    if not slices and not scans:
        raise InvalidVolumeError(
            f"images folder {images} holds no 8-bit slices ({'/'.join(IMAGE_SUFFIXES)}) and no CT scans "
            "(.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr, or one DICOM series per subfolder)"
        )
    return bool(scans)


def _images_in(folder: Path, what: str) -> dict[str, Path]:
    _check_folder(folder, what)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:  # a.png beside a.jpg: which one is the slice is not ours to guess
            raise InvalidVolumeError(
                f"{what} folder {folder} holds both {found[path.stem].name} and {path.name}; "
                "images and masks are matched by name, so keep one file per name"
            )
        found[path.stem] = path
    if not found:
        raise InvalidVolumeError(f"{what} folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return found


def pair_images(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by file stem, sorted by stem; images without a mask are left out."""
    image_files, mask_files = _images_in(images, "images"), _images_in(masks, "masks")
    pairs = [(image_files[stem], mask_files[stem]) for stem in sorted(image_files) if stem in mask_files]
    if not pairs:
        raise InvalidVolumeError(
            f"no image in {images} has a mask of the same name in {masks} (e.g. {next(iter(image_files))}.png)"
        )
    unmatched = len(image_files) - len(pairs)
    if unmatched:
        print(f"chsnet evaluate: {unmatched} image(s) without a mask are left out", file=sys.stderr)
    return pairs


def _rotation(value: str) -> str | int:
    if value == AUTO:
        return AUTO
    if value.lstrip("-").isdigit() and int(value) in ROTATIONS:
        return int(value)
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from auto, 0, 90, 180, 270)")


def _labels(value: str) -> tuple[int, ...]:
    try:
        labels = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        labels = ()
    if not labels or any(label <= 0 for label in labels):
        raise argparse.ArgumentTypeError(
            f"invalid labels: {value!r} (positive integers separated by commas, e.g. 1,2)"
        )
    return labels


def check_8bit_images(paths: list[Path]) -> None:
    """Every image stores 8 bits per channel (grey, RGB, palette), read from the headers only.

    A 16-bit or float slice (an HU + 1024 export, mode ``I;16``) would be squeezed into 8 bits by the
    reader and score Dice 0 without a word; masks may be 16-bit (their labels are kept).
    """
    from PIL import Image, ImageMode

    for path in paths:
        try:
            with Image.open(path) as image:
                mode = image.mode
        except (OSError, ValueError) as exc:
            raise InvalidVolumeError(f"{path} is not a readable image ({exc})") from exc
        try:
            bits = int(ImageMode.getmode(mode).typestr[2:]) * 8
        except (KeyError, ValueError):
            bits = 0  # a mode PIL cannot describe: not one of the 8-bit ones
        if bits != 8:
            depth = f"{bits}-bit" if bits else "not 8-bit"
            raise InvalidVolumeError(
                f"image {path} is {depth} (PIL mode {mode}); evaluate scores 8-bit slices (display values "
                "0-255 through a lung window): export the images as 8-bit PNG or JPG"
            )


def _read_pairs(
    pairs: list[tuple[Path, Path]], target_labels: tuple[int, ...] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(8-bit image, boolean mask) of each pair, as stored (``upright`` turns them afterwards); masks
    keep only ``target_labels`` when given (``--target-labels``)."""
    from napari_chsnet.inference.evaluation import check_labels_present, keep_labels
    from napari_chsnet.training.datasets import read_gray_image, read_label_image

    check_8bit_images([image_path for image_path, _ in pairs])
    images, values = [], []
    for image_path, mask_path in pairs:
        pixels, stored = read_gray_image(image_path), read_label_image(mask_path)
        if stored.shape != pixels.shape:
            raise InvalidVolumeError(
                f"mask {mask_path} is {stored.shape[1]}x{stored.shape[0]} px but its image is "
                f"{pixels.shape[1]}x{pixels.shape[0]} px; masks must match their images"
            )
        images.append(pixels)
        values.append(stored)
    check_labels_present(values, target_labels, str(pairs[0][1].parent))
    values = [keep_labels(stored, target_labels) for stored in values]
    return list(zip(images, foreground_of_masks(values), strict=True))


def foreground_of_masks(values: list[np.ndarray]) -> list[np.ndarray]:
    """The target pixels of a folder's masks, decided for the whole folder.

    0/255 masks (some pixel above 127 somewhere in the folder): foreground is above 127, so that a JPEG
    mask's compression noise stays background. Label images (no value above 127: 0/1, 0/1/2 for
    ground-glass/consolidation or right/left lung, palette indices): any non-zero value, said on stderr,
    because read as 0/255 they would score an empty target without a word.
    """
    if any(int(v.max(initial=0)) > 127 for v in values):
        return [v > 127 for v in values]
    labels = sorted(set().union(*(np.unique(v).tolist() for v in values)) - {0})
    if labels:
        shown = ", ".join(str(label) for label in labels[:8]) + (", ..." if len(labels) > 8 else "")
        print(
            f"chsnet evaluate: the masks hold no value above 127 (values {shown}): read as label images, "
            "any non-zero value is the target",
            file=sys.stderr,
        )
    return [v > 0 for v in values]


def _auto_rotation(images: list[np.ndarray], lung_stage):
    """The folder's turn from the lung stage, said on stderr (a warning when the slices disagree)."""
    estimate = estimate_rotation(images, lung_stage)
    print(f"chsnet evaluate: --rotate auto: {estimate.describe()}", file=sys.stderr)
    if estimate.doubtful:
        print(
            f"chsnet evaluate: warning: the orientation is uncertain ({estimate.n_slices} slice(s), "
            f"margin {estimate.margin:.3f}); look at a slice and pass --rotate if anterior is not "
            f"{_ANTERIOR_AFTER_TURN[estimate.rotation]}",
            file=sys.stderr,
        )
    return estimate


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_chsnet.inference.device import autocast_dtype, describe_precision, resolve_device
    from napari_chsnet.inference.pipeline import build_stages
    from napari_chsnet.models.metrics import METRIC_NAMES, segmentation_metrics

    scans = holds_scans(args.images)
    if scans and not args.slice_stack:
        from napari_chsnet.cli.evaluate_scans import run_scans

        _check_folder(args.masks, "masks")
        return run_scans(args)
    if args.slice_stack:
        if not scans:
            raise InvalidVolumeError(
                f"--slice-stack reads volume files (NIfTI, MHA, NRRD) whose slices are unrelated 2-D images; "
                f"{args.images} holds 8-bit slices, which are scored without it"
            )
        from napari_chsnet.cli.evaluate_stacks import read_stack_slices

        _check_folder(args.masks, "masks")
        stack = read_stack_slices(args)
    elif args.intensity != "auto" or args.fill_missing_slices:
        given = "--intensity" if args.intensity != "auto" else "--fill-missing-slices"
        raise InvalidVolumeError(f"{given} is for CT scans; 8-bit slices are read as display values")
    else:
        pairs = pair_images(args.images, args.masks)
        slices = _read_pairs(pairs, args.target_labels)
    settings = model_settings(args)
    device = resolve_device(settings.device)
    compute_dtype = autocast_dtype(device)
    lung_stage, infection_stage, _ = build_stages(settings, device, compute_dtype)
    if args.slice_stack:
        cases = _stack_cases(stack, lung_stage, infection_stage, args.target)
    else:
        cases = _slice_cases(pairs, slices, lung_stage, infection_stage, args.target)
    predictions, truths, probabilities = [], [], []
    with torch.inference_mode():
        estimate = _auto_rotation([case.view for case in cases], lung_stage) if args.rotate == AUTO else None
        rotation = estimate.rotation if estimate else args.rotate
        for case in cases:
            mask, probability = case.segment(rotation)
            predictions.append(mask)
            truths.append(upright(case.truth, rotation))
            probabilities.append(probability)
    scores = segmentation_metrics(predictions, truths, probabilities)
    if args.json:
        print(
            json.dumps(
                {
                    "n_images": scores["n_images"],
                    "target": args.target,
                    "rotation": rotation,
                    # how --rotate auto chose (null when --rotate was given)
                    "rotation_estimate": estimate.as_dict() if estimate else None,
                    "mean": scores["mean"],
                    "pooled": scores["pooled"],
                    # bfloat16 on a CPU with AMX moves the figures in their 4th decimal (docs/engine.md)
                    "precision": describe_precision(compute_dtype),
                    # which slices fail, by file stem (slice stacks: CASE:INDEX)
                    "per_image": {
                        case.name: metrics for case, metrics in zip(cases, scores["per_image"], strict=True)
                    },
                }
            )
        )
        return 0
    stacked = " (slice stacks)" if args.slice_stack else ""
    print(
        f"{args.model}, {args.target}, on {scores['n_images']} slices from {args.images}{stacked}, "
        f"turned back {rotation}°"
    )
    print(f"{'metric':<12}{'mean':>10}{'pooled':>10}")
    for name in METRIC_NAMES:
        mean, pooled = scores["mean"][name], scores["pooled"][name]
        print(f"{name:<12}{_fmt(mean):>10}{_fmt(pooled):>10}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class _Case:
    """One 2-D case: its name, its stored view as 8-bit display values (for ``--rotate auto``), its
    stored target, and how to segment it turned back by a rotation."""

    name: str
    view: np.ndarray
    truth: np.ndarray
    segment: Callable[[int], tuple[np.ndarray, np.ndarray]]


def _slice_cases(pairs, slices, lung_stage, infection_stage, target: str) -> list[_Case]:
    from napari_chsnet.inference.slices import segment_cropped_slice

    def segment(pixels):
        return lambda rotation: segment_cropped_slice(
            upright(pixels, rotation), lung_stage, infection_stage, target, whole_slices=True
        )

    return [
        _Case(image_path.stem, pixels, truth, segment(pixels))
        for (image_path, _), (pixels, truth) in zip(pairs, slices, strict=True)
    ]


def _stack_cases(stack, lung_stage, infection_stage, target: str) -> list[_Case]:
    from napari_chsnet.inference.intensity import hu_to_unit, unit_to_display8
    from napari_chsnet.inference.slices import segment_hu_slice

    def segment(item):
        def turned_back(rotation: int):
            x_mm, y_mm = item.pixel_mm
            pixel_mm = (y_mm, x_mm) if rotation in (90, 270) else (x_mm, y_mm)  # a quarter turn swaps them
            return segment_hu_slice(upright(item.hu, rotation), pixel_mm, lung_stage, infection_stage, target)

        return turned_back

    return [
        _Case(
            item.name, unit_to_display8(hu_to_unit(item.hu, lung_stage.window_hu)), item.truth, segment(item)
        )
        for item in stack
    ]
