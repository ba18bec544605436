"""argparse pieces shared by the subcommands: value checkers (one-line errors, exit code 2) and the
model/device/weights options every command that runs a network takes."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_chsnet.registry import DEFAULT_MODEL, DEVICE_CHOICES, MODEL_KEYS


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.25, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=MODEL_KEYS, default=DEFAULT_MODEL, help="network to segment the infection with"
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="auto = CUDA, else Apple MPS, else CPU"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="weights-set folder or .safetensors file; without it, the bundled weights (files missing from a "
        "folder are taken from the bundled set too)",
    )
