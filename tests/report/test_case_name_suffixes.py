"""case_name strips every image suffix the readers take, so a batch folder is named after the case."""

from __future__ import annotations

import pytest

from napari_chsnet.inference.run_info import case_name


@pytest.mark.parametrize(
    ("path", "case"),
    [
        ("/data/case.nhdr", "case"),  # was "case.nhdr": batch folder OUT/case.nhdr
        ("/data/CASE.NHDR", "CASE"),
        ("/data/IM0001.ima", "IM0001"),
        ("/data/IM0001.IMA", "IM0001"),
        ("/data/scan.nrrd", "scan"),
        ("/data/scan.mhd", "scan"),
        ("/data/lungs_v1.2", "lungs_v1.2"),  # not an image suffix: kept
    ],
)
def test_case_name_strips_every_image_suffix(path, case):
    assert case_name(path) == case
