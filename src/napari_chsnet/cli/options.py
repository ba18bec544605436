"""argparse pieces shared by the subcommands: value checkers (one-line errors, exit code 2) and the
model/device/weights options every command that runs a network takes."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from napari_chsnet.registry import DEFAULT_MODEL, DEVICE_CHOICES, MODEL_KEYS, MODELS


def _number(
    name: str,
    cast: Callable[[str], float],
    accepts: Callable[[float], bool],
    unparsable: str,
    out_of_range: str,
) -> Callable[[str], float]:
    """An argparse ``type=`` that parses with ``cast`` and keeps values ``accepts`` allows; each
    failure is one ``expected …`` line."""

    def check(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {unparsable}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {out_of_range}, got {value}")
        return value

    check.__name__ = name
    return check


positive_int = _number("positive_int", int, lambda v: v >= 1, "a whole number >= 1", "a whole number >= 1")
probability = _number(
    "probability",
    float,
    lambda v: 0.0 < v < 1.0,
    "a number between 0 and 1",
    "a number strictly between 0 and 1",
)
non_negative_float = _number(
    "non_negative_float", float, lambda v: 0.0 <= v < math.inf, "a number >= 0", "a finite number >= 0"
)
# a learning rate of NaN or inf would train a network into NaN weights: refused like 0
positive_float = _number(
    "positive_float", float, lambda v: 0.0 < v < math.inf, "a number", "a finite number above 0"
)
fraction = _number(  # a number in [0, 1)
    "fraction", float, lambda v: 0.0 <= v < 1.0, "a fraction such as 0.25", "a fraction in [0, 1)"
)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: …)`` after an option's help only where it says something: not for ``None`` or an
    empty list (an option that is simply not given), not for a flag's ``False``, and not where the help
    already names the default (``(default: bundled)``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is argparse.SUPPRESS
            or (isinstance(default, (list, tuple)) and not default)
            or (default is False and action.nargs == 0)
            or "default" in text
        ):
            return action.help
        return super()._get_help_string(action)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=MODEL_KEYS, default=DEFAULT_MODEL, help="network to segment the infection with"
    )
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="auto = CUDA, else Apple MPS (with torch >= 2.3), else CPU",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="weights-set folder or .safetensors file; without it, the bundled weights. A folder must hold "
        "the --model's file (a fine-tuned set of another model is refused); only the lung stage "
        "(chsnet.safetensors) is taken from the bundled set when missing",
    )
    parser.add_argument(
        "--mirror-averaging", action=argparse.BooleanOptionalAction, default=None,
        help="the infection stage also reads each slice mirrored left-right and averages the two (twice that "
        "stage's time); without either flag, the model's default: "
        + ", ".join(f"{key} {'on' if info.mirror_averaging else 'off'}" for key, info in MODELS.items()),
    )  # fmt: skip
    parser.add_argument(
        "--overlapping-tiles", action=argparse.BooleanOptionalAction, default=None,
        help="EAMC only: its members read 128² tiles every 64 pixels and average them, instead of the "
        "paper's 16 non-overlapping patches (three times EAMC's time); without either flag, EAMC's default: "
        + ("on" if MODELS["eamc"].overlapping_tiles else "off"),
    )  # fmt: skip


def model_settings(args: argparse.Namespace, **more):
    """The ``SegmentationSettings`` of :func:`add_model_options`' options, plus a command's own
    (``more``: segment's threshold, batch size, ...); ``ConfigError`` as the settings raise it."""
    from napari_chsnet.inference.pipeline import SegmentationSettings  # torch: only when a network runs

    return SegmentationSettings(
        model=args.model, device=args.device, weights=args.weights, mirror_averaging=args.mirror_averaging,
        overlapping_tiles=args.overlapping_tiles, **more,
    )  # fmt: skip
