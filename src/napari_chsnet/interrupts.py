"""Ctrl-C and SIGTERM for the command-line entry points (``chsnet`` and the training recipes' ``main``,
which torchrun runs): both end with the same cleanup and a shell's exit codes.

A base module like ``errors``: the CLI and ``training.recipes`` import it, so training need not
import the CLI.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

INTERRUPTED_EXIT = 130  # 128 + SIGINT
TERMINATED_EXIT = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so that what cleans up after Ctrl-C (``finally`` blocks
    removing staging folders and temporary files; nothing catches it as an ``Exception``) runs too."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While a command runs, SIGTERM raises ``Terminated`` in the main thread instead of ending the
    process on the spot (which would leave half-written files); the previous handler comes back after."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
