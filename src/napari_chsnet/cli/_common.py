"""The one-line error exit shared by the ``chsnet`` subcommands (value types live in options.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from napari_chsnet.errors import CHSNetError

EXIT_USER_ERROR = 2


def run_reporting_errors(command: str, work: Callable[[], int]) -> int:
    """Run ``work``; a user-fixable error becomes one stderr line and exit code 2."""
    try:
        return work()
    except CHSNetError as error:
        print(f"chsnet {command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
