"""A file written whole or not at all: a hidden temporary file beside it, renamed over it when complete."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(temporary_path)`` and rename the result to ``path`` only if it succeeded.

    The temporary name ends in ``path``'s own name with its suffix in lower case, so writers that
    choose the format by the suffix (ITK: ``.nii.gz``, ``.mha``, …, case-sensitive) see the right
    one; a crash leaves the old file as it was. A failure also removes the files a writer made beside
    the temporary one under the same hidden prefix (a MetaImage's ``.zraw`` data file).
    """
    prefix = f".{uuid.uuid4().hex[:12]}.part."
    temporary = path.parent / (prefix + _lower_suffix(path.name))
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
        with contextlib.suppress(OSError):
            for sibling in path.parent.glob(glob.escape(prefix) + "*"):
                sibling.unlink(missing_ok=True)
        raise


def _lower_suffix(name: str) -> str:
    """``name`` with its suffix (``.nii.gz`` whole) in lower case: ``LUNGS.MHA`` → ``LUNGS.mha``."""
    lower = name.lower()
    cut = len(name) - (7 if lower.endswith(".nii.gz") else len(Path(name).suffix))
    return name[:cut] + name[cut:].lower()


def replace_folder(staging: Path, target: Path) -> None:
    """Rename the folder ``staging`` to ``target``; an existing ``target`` is moved aside first and
    deleted only once the new folder is in place (put back when that fails), so a failure never
    leaves neither (a saved correction, a fine-tuned weights set)."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = target.parent / f".{target.name}.{os.getpid()}.old"
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
