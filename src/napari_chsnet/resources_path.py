"""Where the shipped files (default weights, model cards) are found.

The repository's top-level ``resources/`` folder is packaged as ``napari_chsnet.resources``
(see pyproject.toml), so the same lookup works for a wheel and for an editable install.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resources_dir() -> Path:
    """The installed ``resources`` folder (read-only for users: never write into it)."""
    return Path(str(resources.files("napari_chsnet.resources")))


def bundled_weights_dir() -> Path:
    return resources_dir() / "weights"
