"""Whole axial slices exported as 8-bit images (not cropped to the lungs, as COVID-SemiSeg's are): the
infection stage reads their lungs' box, as a volume's slices are read (``inference/slices.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU, hu_to_unit, unit_to_display8
from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages, segment_volume
from napari_chsnet.inference.slices import LUNG_CROPPED_COVERAGE, infection_crop, segment_cropped_slice
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.io.readers import read_ct
from napari_chsnet.models.metrics import dice
from napari_chsnet.resources_path import bundled_weights_dir

pytestmark = pytest.mark.slow


def _stages(model: str):
    if not (bundled_weights_dir() / f"{model}.safetensors").is_file():
        pytest.skip(f"no bundled {model}.safetensors in {bundled_weights_dir()}")
    lung_stage, infection_stage, _ = build_stages(SegmentationSettings(model=model), torch.device("cpu"))
    return lung_stage, infection_stage


def _display8(hu: np.ndarray) -> np.ndarray:
    return unit_to_display8(hu_to_unit(hu, DISPLAY_WINDOW_HU))


def test_a_whole_slice_reads_as_its_lungs_box_cut_out():
    """Known answer: RD-UNet reads no lung map, so a whole phantom slice's infection is exactly that of
    the image cut to its lungs' box and read whole (as COVID-SemiSeg's crops are), put back in place."""
    lung_stage, infection_stage = _stages("rdunet")
    phantom = make_phantom(shape=(12, 320, 320), spacing_mm=(1.1, 1.1, 10.0), seed=3)
    pixels = _display8(phantom.ct.hu[6])
    with torch.inference_mode():
        lungs, _ = segment_cropped_slice(pixels, lung_stage, infection_stage, "lungs")
        box = infection_crop(lungs)
        assert box.height * box.width < LUNG_CROPPED_COVERAGE * pixels.size  # a whole slice
        mask, probability = segment_cropped_slice(pixels, lung_stage, infection_stage, whole_slices=True)
        cut = pixels[box.y0 : box.y1, box.x0 : box.x1]
        cut_mask, cut_probability = segment_cropped_slice(cut, lung_stage, infection_stage)
    assert mask[box.y0 : box.y1, box.x0 : box.x1].any()
    np.testing.assert_array_equal(mask[box.y0 : box.y1, box.x0 : box.x1], cut_mask)
    np.testing.assert_array_equal(probability[box.y0 : box.y1, box.x0 : box.x1], cut_probability)
    outside = np.ones(mask.shape, bool)
    outside[box.y0 : box.y1, box.x0 : box.x1] = False
    assert not mask[outside].any() and not probability[outside].any()


def test_p001_s_whole_slices_read_as_the_volume_reads_them(shared_data):
    """P001's slices with infection (every 4th of those with over 200 infected pixels), exported
    through the display window as whole 8-bit slices, against the volume path's own infection
    (probability ≥ 0.5). Measured 2026-12-06 (bundled CHS-Net, float32): mean Dice 0.895 read on the
    lungs' box; 0.767 read whole as before, three slices under 0.06."""
    volume = read_ct(shared_data / "covid-ct-md" / "P001_ct_hu.nii.gz")
    reference = segment_volume(volume, SegmentationSettings(device="cpu")).probability >= 0.5
    lung_stage, infection_stage = _stages("chsnet")
    chosen = [z for z in range(len(reference)) if np.count_nonzero(reference[z]) > 200][::4]
    scores = {True: [], False: []}
    with torch.inference_mode():
        for z in chosen:
            pixels = _display8(volume.hu[z])
            for whole_slices in scores:
                mask, _ = segment_cropped_slice(
                    pixels, lung_stage, infection_stage, whole_slices=whole_slices
                )
                scores[whole_slices].append(dice(mask, reference[z]))
    assert len(chosen) >= 15
    assert np.mean(scores[True]) >= 0.85 and min(scores[True]) >= 0.3
    assert np.mean(scores[True]) > np.mean(scores[False]) + 0.05
