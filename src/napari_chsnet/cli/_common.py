"""What the ``chsnet`` subcommands share: the one-line error exit and the segmentation with a progress bar
(value types live in options.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from napari_chsnet.errors import CHSNetError

EXIT_USER_ERROR = 2
Case = TypeVar("Case")


def run_reporting_errors(command: str, work: Callable[[], int]) -> int:
    """Run ``work``; a user-fixable error becomes one stderr line and exit code 2."""
    try:
        return work()
    except CHSNetError as error:
        print(f"chsnet {command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


def segment_with_bar(volume, settings, name: str):
    """``report.case.segment_case`` with a progress bar on stderr (hidden when stderr is no terminal)."""
    from tqdm import tqdm

    from napari_chsnet.report.case import segment_case

    with tqdm(desc=name, file=sys.stderr, unit="step", disable=None, leave=False) as bar:

        def show(progress) -> None:
            bar.total = progress.total
            bar.set_postfix_str(progress.stage, refresh=False)
            bar.update(progress.done - bar.n)

        return segment_case(volume, settings, on_progress=show)


def each_case(
    command: str,
    cases: Sequence[Case],
    work: Callable[[Case], None],
    failed: Callable[[Case, CHSNetError], None],
) -> int:
    """Run ``work`` on every case of a batch; returns how many failed. A case's user error (a
    ``CHSNetError``, or running out of memory, a GPU's or the computer's, said as one: ``user_error``)
    goes to ``failed`` and the batch goes on; a bug, or the error of a batch of one case, is raised (the
    latter as the user is told it)."""
    from napari_chsnet.cli import user_error
    from napari_chsnet.inference.device import release_device_memory

    n_failed = 0
    for case in cases:
        try:
            work(case)
        except Exception as caught:
            error = user_error(command, caught)
            if error is None or (error is caught and len(cases) == 1):
                raise
            if len(cases) == 1:
                raise error from caught
            n_failed += 1
            failed(case, error)
            out_of_memory, error = error is not caught, None
        else:
            continue
        if out_of_memory:  # after the except block, which held the failed step's tensors, let them go
            release_device_memory()
    return n_failed
