"""bfloat16 autocast on the CPU (the default where AMX multiplies it in hardware) gives the bundled
models' float32 answer on an unseen phantom, and the run says which precision computed it.

bfloat16 is forced here whatever the CPU (emulated where there is no AMX), so the check runs on
machines without AMX too, except EAMC's: emulated, bfloat16 took ten times float32's time on a 2-core
AMD EPYC without AMX or AVX-512 (2026-12-06, this phantom: CHS-Net 6 → 63 s, RD-UNet 3.6 → 35 s;
EAMC 169 s in float32, so about half an hour), and such a CPU never runs bfloat16 by default. The
real-data figures of the cards under bfloat16 are in docs/engine.md, "bfloat16 on CPUs with matrix
units"; tests/inference/test_bundled_real_figures.py recomputes them in the machine's default
precision (``default_precision``: tests/conftest.py runs the others in float32).
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_chsnet.inference.device as device_module
from napari_chsnet.inference.device import CPU_BF16_VARIABLE
from napari_chsnet.inference.pipeline import SegmentationSettings, segment_volume
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models.metrics import dice
from napari_chsnet.report import compute_severity
from napari_chsnet.resources_path import bundled_weights_dir

pytestmark = [pytest.mark.slow, pytest.mark.default_precision]


# Dice between the bfloat16 and float32 infection masks, measured 2026-12-06: CHS-Net 0.992, RD-UNet
# 0.9985, EAMC 0.926 (round 13; the average of rounds 9-11 before it 0.946). EAMC marks 8 500 of this
# phantom's 37 000 lesion voxels (its card's failure modes), many by votes near the threshold, so the
# voxels where a member's vote flips weigh more: bfloat16 marks 9 800, and the right lung's involvement
# moves 5.13 → 6.29 % (left 4.25 → 4.38 %), where the others' move 0.01-0.17 points. On the real
# volumes its figures stay within 0.03 points (docs/engine.md, "bfloat16 on CPUs with matrix units").
MIN_INFECTION_DICE = {"chsnet": 0.98, "rdunet": 0.98, "eamc": 0.92}
MAX_INVOLVEMENT_CHANGE = {"chsnet": 0.5, "rdunet": 0.5, "eamc": 1.5}  # percentage points


@pytest.fixture(scope="module")
def phantom():
    # the default phantom at half its slices (5 mm apart): the same anatomy, half EAMC's time;
    # seeds < 100 are never trained on
    return make_phantom(shape=(24, 256, 256), spacing_mm=(0.8, 0.8, 5.0), seed=0)


def _segment(phantom, model: str, monkeypatch, bfloat16: bool):
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: True)
    monkeypatch.setenv(CPU_BF16_VARIABLE, "1" if bfloat16 else "0")
    return segment_volume(phantom.ct, SegmentationSettings(model=model, device="cpu"))


@pytest.mark.parametrize("model", ["chsnet", "rdunet", "eamc"])
def test_bfloat16_gives_the_float32_answer_of_the_bundled_weights(phantom, model, monkeypatch):
    if not (bundled_weights_dir() / f"{model}.safetensors").is_file():
        pytest.skip(f"no bundled {model}.safetensors in {bundled_weights_dir()}")
    if model == "eamc" and not device_module.cpu_has_bf16_matrix_units():
        pytest.skip(
            "EAMC in emulated bfloat16 takes about half an hour on a CPU without AMX, which runs float32"
        )
    half = _segment(phantom, model, monkeypatch, bfloat16=True)
    full = _segment(phantom, model, monkeypatch, bfloat16=False)
    assert half.run_info.inference_options["precision"] == "bfloat16 autocast"
    assert full.run_info.inference_options["precision"] == "float32"
    assert not np.array_equal(half.probability, full.probability), "bfloat16 did not run"
    difference = np.abs(half.probability - full.probability)
    assert difference.mean() < 2e-3 and np.quantile(difference, 0.999) < 0.1, (
        difference.mean(),
        np.quantile(difference, 0.999),
    )
    assert dice(half.lungs > 0, full.lungs > 0) >= 0.995
    assert dice(half.infection > 0, full.infection > 0) >= MIN_INFECTION_DICE[model]
    severities = [
        compute_severity(r.lungs, r.infection, phantom.ct.geometry, r.min_lesion_ml).to_dict()
        for r in (half, full)
    ]
    for side in ("right", "left"):
        lung_half, lung_full = (severity["lungs"][side] for severity in severities)
        assert lung_half["grade"] == lung_full["grade"], side
        assert lung_half["involvement_pct"] == pytest.approx(
            lung_full["involvement_pct"], abs=MAX_INVOLVEMENT_CHANGE[model]
        ), side
