"""interrupts.sigterm_raises: SIGTERM raises Terminated while a command runs, and whatever handler was there
before (an embedding program's, napari's, pytest's) is back afterwards."""

from __future__ import annotations

import signal

import pytest

from napari_chsnet.cli import main
from napari_chsnet.interrupts import Terminated, sigterm_raises


@pytest.fixture
def own_sigterm_handler():
    """A handler of the program that calls into napari_chsnet; the original one is restored at the end."""
    received = []

    def handler(signum, frame):
        received.append(signum)

    original = signal.signal(signal.SIGTERM, handler)
    yield handler, received
    signal.signal(signal.SIGTERM, original)


def test_sigterm_raises_terminated_inside_and_the_previous_handler_comes_back(own_sigterm_handler):
    handler, received = own_sigterm_handler
    with pytest.raises(Terminated), sigterm_raises():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is handler
    signal.raise_signal(signal.SIGTERM)  # the program's own handler answers again, nothing raises
    assert received == [signal.SIGTERM]


def test_a_cli_run_leaves_the_callers_sigterm_handler_in_place(own_sigterm_handler, capsys):
    handler, _ = own_sigterm_handler
    assert main(["info"]) == 0
    assert signal.getsignal(signal.SIGTERM) is handler
