"""``chsnet evaluate``: score a model on labelled 2-D slices (8-bit PNG/JPG images and their masks).

The slices are scored as the papers score COVID-SemiSeg: each image goes through ``display8_to_unit``
(the 8-bit values already are the shared window; no HU window is applied), the lung stage finds the
lungs, and the infection stage reads the whole image as its crop (such slices are already cropped to
the lungs). CHS-Net's lung contour map comes from the lung stage (post-processed as in a volume).
The infection network's own mask is scored (threshold 0.5; EAMC: its vote), not restricted to the lungs
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
scan as ``chsnet segment`` does and scored in 3-D against mask volumes: ``evaluate_scans.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
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
        "or _label), segmented as chsnet segment does and scored in 3-D. Prints the paper metrics averaged "
        "over images or scans (mean) and over all pixels (pooled).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--images", type=Path, required=True, metavar="DIR", help="folder of 8-bit slices, or of CT scans"
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
    scans = parser.add_argument_group("CT scans only")
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


def _read_pairs(pairs: list[tuple[Path, Path]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(8-bit image, boolean mask) of each pair, as stored (``upright`` turns them afterwards)."""
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
    from napari_chsnet.inference.slices import segment_cropped_slice
    from napari_chsnet.models.metrics import METRIC_NAMES, segmentation_metrics

    if holds_scans(args.images):
        from napari_chsnet.cli.evaluate_scans import run_scans

        _check_folder(args.masks, "masks")
        return run_scans(args)
    if args.intensity != "auto" or args.fill_missing_slices:
        given = "--intensity" if args.intensity != "auto" else "--fill-missing-slices"
        raise InvalidVolumeError(f"{given} is for CT scans; 8-bit slices are read as display values")
    pairs = pair_images(args.images, args.masks)
    settings = model_settings(args)
    device = resolve_device(settings.device)
    slices = _read_pairs(pairs)
    compute_dtype = autocast_dtype(device)
    lung_stage, infection_stage, _ = build_stages(settings, device, compute_dtype)
    predictions, truths, probabilities = [], [], []
    with torch.inference_mode():
        estimate = (
            _auto_rotation([pixels for pixels, _ in slices], lung_stage) if args.rotate == AUTO else None
        )
        rotation = estimate.rotation if estimate else args.rotate
        for pixels, truth in slices:
            mask, probability = segment_cropped_slice(
                upright(pixels, rotation), lung_stage, infection_stage, args.target
            )
            predictions.append(mask)
            truths.append(upright(truth, rotation))
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
                    # which slices fail, by file stem
                    "per_image": {
                        image_path.stem: metrics
                        for (image_path, _), metrics in zip(pairs, scores["per_image"], strict=True)
                    },
                }
            )
        )
        return 0
    print(
        f"{args.model}, {args.target}, on {scores['n_images']} slices from {args.images}, turned back {rotation}°"
    )
    print(f"{'metric':<12}{'mean':>10}{'pooled':>10}")
    for name in METRIC_NAMES:
        mean, pooled = scores["mean"][name], scores["pooled"][name]
        print(f"{name:<12}{_fmt(mean):>10}{_fmt(pooled):>10}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
