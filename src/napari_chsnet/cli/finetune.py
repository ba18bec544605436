"""``chsnet finetune``: adapt a weights set to corrected cases and write a new weights set.

The output folder is a complete set (the tuned model, plus CHS-Net's lung stage for eamc and
rdunet), usable as ``chsnet segment --model MODEL --weights OUT``; the base weights are only read.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from napari_chsnet.cli._common import run_reporting_errors
from napari_chsnet.cli.options import DefaultsHelpFormatter, fraction, positive_float, positive_int
from napari_chsnet.errors import ConfigError, InvalidVolumeError
from napari_chsnet.registry import DEFAULT_MODEL, MODEL_KEYS

HELP = "fine-tune a model on corrected lung and infection masks"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help=HELP, description=HELP, formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--model", choices=MODEL_KEYS, default=DEFAULT_MODEL, help="which network to tune")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        type=Path,
        help="a CT (DICOM folder, NIfTI, MHA, NRRD); repeat with --lungs/--infection for more cases",
    )
    parser.add_argument(
        "--lungs",
        action="append",
        default=[],
        type=Path,
        help="corrected lung labels of the --image at the same position",
    )
    parser.add_argument(
        "--infection", action="append", default=[], type=Path, help="corrected infection mask of that --image"
    )
    parser.add_argument(
        "--corrections",
        action="append",
        default=[],
        type=Path,
        help="a correction folder saved by the napari panel (ct/lungs/infection.nii.gz); repeatable",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="base weights set (folder) or .safetensors file (default: bundled)",
    )
    parser.add_argument("--epochs", type=positive_int, default=5, help="passes over the training slices")
    parser.add_argument(
        "--all-slices",
        action="store_true",
        help="train on every slice with lung, not only the edited ones (cases from --image always use all)",
    )
    parser.add_argument(
        "--replay",
        type=fraction,
        default=0.25,
        help="fraction of training slices replayed from earlier corrections / COVID-SemiSeg",
    )
    parser.add_argument(
        "--tune-lungs", action="store_true", help="CHS-Net: also tune the lung stage (lungs were corrected)"
    )
    parser.add_argument("--learning-rate", type=positive_float, default=1e-4, help="Adam learning rate")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="slices per step")
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N (one GPU of several) or mps"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder of the new weights set")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_reporting_errors("finetune", lambda: _finetune(args))


def _cases(args: argparse.Namespace) -> list:
    counts = (len(args.image), len(args.lungs), len(args.infection))
    if len(set(counts)) != 1:
        raise ConfigError(
            f"give one --lungs and one --infection per --image; got {counts[0]} --image, {counts[1]} --lungs, "
            f"{counts[2]} --infection"
        )
    cases: list = [tuple(triple) for triple in zip(args.image, args.lungs, args.infection, strict=True)]
    cases += list(args.corrections)
    if not cases:
        raise ConfigError("nothing to fine-tune on: give --image/--lungs/--infection or --corrections")
    _check_inputs_exist(args)
    return cases


def _check_inputs_exist(args: argparse.Namespace) -> None:
    """Every input path exists (one line, exit 2, before anything is read or trained)."""
    for option, paths in (
        ("--image", args.image),
        ("--lungs", args.lungs),
        ("--infection", args.infection),
        ("--corrections", args.corrections),
    ):
        for path in paths:
            if not path.exists():
                raise InvalidVolumeError(f"{option} {path} does not exist")
            if option == "--corrections" and not path.is_dir():
                raise InvalidVolumeError(
                    f"--corrections {path} is not a folder; it takes a correction folder saved by the napari panel"
                )


def _checked_device(name: str) -> str:
    """``name`` normalised, or a ConfigError (exit 2, one line) when this machine lacks it, as
    ``chsnet segment`` refuses it; ``cuda:N`` must name a GPU that is present (the rule a training
    config's ``device`` follows too: inference/device.py ``checked_device_name``)."""
    from napari_chsnet.inference.device import checked_device_name

    return checked_device_name(name)


def _finetune(args: argparse.Namespace) -> int:
    from napari_chsnet.cli.train import _progress
    from napari_chsnet.training.finetune import finetune

    device = _checked_device(args.device)  # before any data is read
    result = finetune(
        args.weights,
        args.model,
        _cases(args),
        epochs=args.epochs,
        only_edited_slices=not args.all_slices,
        replay=args.replay,
        tune_lungs=args.tune_lungs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        output=args.output,
        overwrite=args.overwrite,
        device=device,
        on_step=_progress(),
        log=lambda message: print(message, flush=True),
    )
    if result.false_positive_before is not None:
        print(
            "the corrected slices hold no infection; infection predicted on "
            f"{100 * result.false_positive_before:.2f} % -> {100 * result.false_positive_after:.2f} % of their lung "
            f"(Dice {result.dice_before:.3f} -> {result.dice_after:.3f})"
        )
    else:
        print(f"Dice on the corrected slices: {result.dice_before:.3f} -> {result.dice_after:.3f}")
    if result.lung_dice_before is not None:
        print(
            f"lung Dice on the corrected slices: {result.lung_dice_before:.3f} -> {result.lung_dice_after:.3f}"
        )
    for note in result.notes:  # no epoch improved; lungs corrected but not tuned
        print(f"note: {note}")
    print(f"weights set: {result.weights_dir} (use: {segment_command(args.model, result.weights_dir)})")
    return 0


def segment_command(model: str, weights_dir: Path) -> str:
    """How to segment with the new set: ``--model`` too unless it is the default model (without it,
    segment refuses an eamc/rdunet set, ``inference.weights.check_weights_folder``)."""
    model_option = "" if model == DEFAULT_MODEL else f" --model {model}"
    return f"chsnet segment{model_option} --weights {shlex.quote(str(weights_dir))}"
