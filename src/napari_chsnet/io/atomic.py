"""A file written whole or not at all: a hidden temporary file beside it, renamed over it when complete."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(temporary_path)`` and rename the result to ``path`` only if it succeeded.

    The temporary name ends in ``path``'s own name, so writers that choose the format by the
    suffix (ITK: ``.nii.gz``, ``.mha``, …) see the right one; a crash leaves the old file as it was.
    """
    temporary = path.parent / f".{uuid.uuid4().hex[:12]}.part.{path.name}"
    # Created with open(..., "x") rather than mkstemp so the file gets the usual umask
    # permissions (mkstemp's are 0600, which would make reports unreadable to colleagues).
    with open(temporary, "xb"):
        pass
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
