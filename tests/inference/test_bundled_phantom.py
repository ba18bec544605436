"""Known answers of the bundled cascade on full-size phantoms that training never saw (seeds < 100).

The commonest failure of lung-first cascades is a lung mask that drops dense subpleural
consolidation, which then never counts as infection. The default phantom has such
consolidation against the pleura of both lungs.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_chsnet.inference.pipeline import SegmentationSettings, segment_volume
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models.metrics import dice as mask_dice
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.recipes import PHANTOM_SEED_OFFSET

pytestmark = [pytest.mark.slow, pytest.mark.default_precision]


@pytest.fixture(scope="module", params=[0, 7])
def segmented(request):
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")
    assert request.param < PHANTOM_SEED_OFFSET, "a training phantom would make this test meaningless"
    phantom = make_phantom(seed=request.param)
    return phantom, segment_volume(phantom.ct, SegmentationSettings(device="cpu"))


def test_subpleural_consolidation_stays_inside_the_lungs(segmented):
    """Measured with the bundled weights: 87-88 % of all consolidation kept (it was 21 % before the
    lung stage learned consolidated phantoms), 98-99.6 % of it deeper than 3 voxels (2.4 mm) from the
    pleura. What is lost is the outermost 1-3 voxels, where the 128-pixel lung stage also loses 1-8 %
    of aerated lung."""
    phantom, result = segmented
    true = phantom.lungs > 0
    depth = np.stack([ndimage.distance_transform_edt(true[z]) for z in range(true.shape[0])])
    touching_pleura = phantom.consolidation & (depth <= 1.5)
    assert touching_pleura.sum() > 500, "the phantom must have consolidation against the pleura"
    kept = (result.lungs[phantom.consolidation] > 0).mean()
    kept_inside = (result.lungs[phantom.consolidation & (depth > 3.5)] > 0).mean()
    assert kept >= 0.85, f"only {kept:.1%} of the consolidation is inside the predicted lungs"
    assert kept_inside >= 0.95, f"only {kept_inside:.1%} of the consolidation deeper than 3 voxels is kept"


def test_lungs_do_not_grow_into_the_chest_wall_or_mediastinum(segmented):
    phantom, result = segmented
    predicted, true = result.lungs > 0, phantom.lungs > 0
    dice = mask_dice(predicted, true)
    outside = (predicted & ~true).sum() / true.sum()
    assert dice >= 0.95, f"lung Dice {dice:.3f}"
    assert outside <= 0.05, f"{outside:.1%} of the lung volume predicted outside the lungs"
    for label in (1, 2):
        overlap = ((result.lungs == label) & (phantom.lungs == label)).sum() / (phantom.lungs == label).sum()
        assert overlap >= 0.93, f"lung {label}: {overlap:.1%} found with the right label"


# Measured with the bundled weights on the 12-slice phantom below (truth: 30 % right, 10 % left):
# model: (Dice, precision, recall, involvement right / left %, infection outside the true lungs)
#   chsnet  0.806, 0.941, 0.704, 19.7 / 9.8, 3.5 %
#   rdunet  0.755, 0.923, 0.638, 18.9 / 8.2, 1.3 %
#   eamc    0.561, 0.949, 0.398, 10.8 / 5.9, 0.5 %  (a failure mode in resources/weights/eamc.md; float32)
MIN_PHANTOM_DICE = {"chsnet": 0.75, "rdunet": 0.70, "eamc": None}


@pytest.mark.parametrize("model", sorted(MIN_PHANTOM_DICE))
def test_every_bundled_model_marks_the_unseen_phantom_s_lesions_inside_its_lungs(model):
    """The whole volume pipeline (lung stage, the model's infection stage, post-processing) of each bundled
    model on a phantom no training saw, 12 slices of 10 mm so that EAMC's 16 patches x 3 members x 2
    (mirror averaging) per slice take about a minute on 2 cores. What it marks is lesion (precision),
    the right lung, three times as involved, comes out the more involved, and CHS-Net and RD-UNet find
    most of the lesions. EAMC finds under a quarter of them: its card states it as a failure mode."""
    if not (bundled_weights_dir() / f"{model}.safetensors").is_file():
        pytest.skip(f"no bundled {model}.safetensors in {bundled_weights_dir()}")
    phantom = make_phantom(shape=(12, 256, 256), spacing_mm=(0.8, 0.8, 10.0), seed=3)
    assert PHANTOM_SEED_OFFSET > 3, "a training phantom would make this test meaningless"
    result = segment_volume(phantom.ct, SegmentationSettings(model=model, device="cpu"))
    marked, truth, true_lungs = result.infection > 0, phantom.infection > 0, phantom.lungs > 0
    precision = (marked & truth).sum() / marked.sum()
    assert precision >= 0.9, f"{model}: precision {precision:.3f}"
    assert (marked & ~true_lungs).sum() <= 0.05 * marked.sum(), f"{model}: infection outside the lungs"
    involvement = [(marked & (result.lungs == side)).sum() / (result.lungs == side).sum() for side in (1, 2)]
    assert involvement[0] > involvement[1], f"{model}: right {involvement[0]:.1%}, left {involvement[1]:.1%}"
    if MIN_PHANTOM_DICE[model] is not None:
        dice = mask_dice(marked, truth)
        assert dice >= MIN_PHANTOM_DICE[model], f"{model}: infection Dice {dice:.3f}"
