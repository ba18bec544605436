"""Helpers shared by the ``chsnet`` subcommands: argparse value types and the one-line error exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from napari_chsnet.errors import CHSNetError

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
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


def run_reporting_errors(command: str, work: Callable[[], int]) -> int:
    """Run ``work``; a user-fixable error becomes one stderr line and exit code 2."""
    try:
        return work()
    except CHSNetError as error:
        print(f"chsnet {command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
