"""A NIfTI whose qform has qfac = pixdim[0] = -1 (slices run against the rotation's third column)."""

from __future__ import annotations

import struct

import numpy as np
import SimpleITK as sitk

from napari_chsnet.io.readers import read_ct

_PIXDIM, _CODES = 76, 252  # NIfTI-1 header offsets of pixdim[8] and (qform_code, sform_code)


def test_qfac_minus_one_reads_slices_in_header_order_without_a_qform_sform_note(tmp_path):
    # z flipped in LPS: RAS direction diag(-1, -1, -1), determinant -1, which NIfTI stores as qfac -1.
    values = np.full((4, 3, 5), -1000, dtype=np.int16)
    values[0, 1, 2] = 500  # a marker in stored slice k = 0
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, 20.0, 30.0))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    path = tmp_path / "qfac.nii"
    sitk.WriteImage(image, str(path))
    raw = path.read_bytes()
    assert struct.unpack_from("<f", raw, _PIXDIM)[0] == -1.0, "the file exercises the qfac = -1 path"
    assert struct.unpack_from("<2h", raw, _CODES) == (1, 1), "both transforms set: the reader compares them"

    volume = read_ct(path, intensity="hu")
    # qform (with its qfac) and sform describe the same grid: no note that they disagree.
    assert [w for w in volume.metadata["warnings"] if "qform" in w] == []
    # Stored slice k sits at LPS z = 30 - 2.5 k: the display grid runs up in z from the last slice.
    geometry = volume.geometry
    np.testing.assert_allclose(geometry.spacing_mm, (0.7, 0.8, 2.5), atol=1e-5)
    np.testing.assert_allclose(geometry.origin_mm[2], 30.0 - 3 * 2.5, atol=1e-4)
    z, y, x = np.unravel_index(int(np.argmax(volume.hu)), volume.hu.shape)
    direction = np.reshape(geometry.direction, (3, 3))
    position = np.asarray(geometry.origin_mm) + direction @ (np.array([x, y, z]) * geometry.spacing_mm)
    np.testing.assert_allclose(position, (10.0 + 2 * 0.7, 20.0 + 1 * 0.8, 30.0), atol=1e-4)
