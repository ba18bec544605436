"""Filling missing DICOM slices weights each neighbour by its nearness, not midway."""

from __future__ import annotations

import numpy as np

from dicom_factory import series_hu, write_series
from napari_chsnet.io.readers import read_ct


def test_two_missing_slices_are_filled_one_third_and_two_thirds_of_the_way(tmp_path):
    hu = series_hu(7)  # slice k is -1000 + 100 k HU: a linear ramp along z
    paths = write_series(tmp_path / "s", hu)
    for k in (2, 3):  # slices 2 and 3 missing: their neighbours are slices 1 and 4, 6 mm apart
        paths[k].unlink()
    volume = read_ct(tmp_path / "s", fill_missing_slices=True)
    assert volume.shape == hu.shape
    assert volume.metadata["interpolated_slices"] == [2, 3]
    # slice 2 lies 1/3 of the way from slice 1 (-900) to slice 4 (-600): -800; slice 3, 2/3 of the way: -700
    np.testing.assert_allclose(volume.hu[1:5, 0, 0], [-900, -800, -700, -600], atol=1e-3)
    np.testing.assert_allclose(volume.hu[2], (2 * hu[1].astype(float) + hu[4]) / 3, atol=1e-3)
    np.testing.assert_allclose(volume.hu[3], (hu[1].astype(float) + 2 * hu[4]) / 3, atol=1e-3)
