"""Fixtures of the I/O tests (the DICOM-writing helpers live in tests/dicom_factory.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_factory import series_hu, write_series


@pytest.fixture
def axial_series(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A folder with an 8-slice axial series whose file names run opposite to its positions."""
    hu = series_hu(8)
    folder = tmp_path / "series"
    paths = write_series(folder, hu)
    for k, path in enumerate(paths):  # file name order = superior to inferior
        path.rename(folder / f"IM{len(paths) - k:04d}.dcm")
    return folder, hu
