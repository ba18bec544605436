"""Shapes, configurations, parameter counts, voting and export of the five networks."""

import numpy as np
import pytest
import torch

from napari_chsnet.errors import ConfigError
from napari_chsnet.inference.intensity import hu_to_unit
from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
from napari_chsnet.inference.preprocessing import lung_crop_box
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models import EAMC, MODEL_DEFAULTS, CHSNet, RAIUNet, build_model
from napari_chsnet.models.blocks import ResidualInceptionBlock, SSDSkip
from napari_chsnet.models.metrics import dice as mask_dice
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.recipes import PHANTOM_SEED_OFFSET

SMALL = {
    "raiunet": {"base_channels": 4},
    "chsnet": {"base_channels": 4},
    "amcnet": {"base_channels": 4},
    "eamc": {"base_channels": 4, "n_members": 3},
    "rdunet": {"base_channels": 8},
}

# Parameter counts the papers report: CHS-Net Table 3, EAMC Table 6, RD-UNet Sec. 5.
PAPER_PARAMETERS = {"raiunet": 4.2e6, "chsnet": 8.4e6, "amcnet": 3.34e6, "rdunet": 4.5e6}


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[1] if isinstance(model, CHSNet) else out


@pytest.mark.parametrize("key", list(PAPER_PARAMETERS))
def test_parameter_count_within_ten_percent_of_paper(key):
    count = n_parameters(build_model(key))
    print(f"{key}: {count / 1e6:.3f}M parameters (paper {PAPER_PARAMETERS[key] / 1e6:.2f}M)")
    assert abs(count / PAPER_PARAMETERS[key] - 1) <= 0.10, f"{key}: {count} parameters"


@pytest.mark.parametrize("key", list(SMALL))
@pytest.mark.parametrize("size", [(32, 48), (64, 16)])
def test_output_is_logits_of_input_size(key, size):
    model = build_model(key, **SMALL[key]).eval()
    x = torch.rand(2, 1, *size)
    with torch.inference_mode():
        out = model(x)
    if key == "chsnet":
        assert out[0].shape == out[1].shape == (2, 1, *size)
    elif key == "eamc":
        assert out.shape == (3, 2, 1, *size)
    else:
        assert out.shape == (2, 1, *size)
        assert out.dtype == torch.float32


@pytest.mark.parametrize("key", list(SMALL))
def test_config_rebuilds_the_same_network(key):
    model = build_model(key, **SMALL[key], out_channels=2)
    rebuilt = build_model(key, **model.config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert set(model.config) == set(MODEL_DEFAULTS[key])


def test_size_not_divisible_names_padded_shape():
    with pytest.raises(ValueError, match=r"divisible by 16; got \(40, 64\)\. Pad the input to \(48, 64\)"):
        build_model("rdunet", **SMALL["rdunet"])(torch.rand(1, 1, 40, 64))


def test_build_model_rejects_unknown_key_and_setting():
    with pytest.raises(ConfigError, match="choose one of raiunet, chsnet, amcnet, eamc, rdunet"):
        build_model("unet")
    with pytest.raises(ConfigError, match="has no setting 'width'"):
        build_model("raiunet", width=3)


def test_baseline_unet_has_no_rib_or_ssd_weights():
    baseline = RAIUNet(base_channels=4, use_rib=False, use_hybrid_pooling=False, use_ssd=False)
    assert not any(isinstance(m, (ResidualInceptionBlock, SSDSkip)) for m in baseline.modules())
    assert not any("skips" in name or "fft" in name for name, _ in baseline.named_parameters())
    full = RAIUNet(base_channels=4)
    assert n_parameters(full) > n_parameters(RAIUNet(base_channels=4, use_ssd=False)) > n_parameters(baseline)


def test_chsnet_stages_compose_like_forward():
    torch.manual_seed(0)
    model = CHSNet(base_channels=4).eval()
    image = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        lung_logits, infection_logits = model(image)
        staged = model.infection_net(model.infection_input(image, model.lung_net(image).sigmoid()))
    torch.testing.assert_close(staged, infection_logits)
    lung_prob = torch.zeros(1, 1, 32, 32)
    lung_prob[..., 8:24, 8:24] = 1
    contour = model.infection_input(image, lung_prob)
    assert contour.shape == (1, 2, 32, 32)
    assert contour[0, 0, 0, 0] == 0 and contour[0, 0, 10, 10] == image[0, 0, 10, 10]
    torch.testing.assert_close(contour[:, 1:], lung_prob)


def test_eamc_vote_majority_and_tie():
    # Rows are pixels, columns the four members' probabilities. A member votes yes at p >= 0.5.
    # 3 of 4 yes; 1 of 4 yes; 2-2 tie with mean 0.55 (yes); 2-2 tie with mean 0.375 (no).
    probs = torch.tensor(
        [[0.9, 0.9, 0.9, 0.2], [0.1, 0.9, 0.2, 0.3], [0.9, 0.6, 0.3, 0.4], [0.6, 0.5, 0.3, 0.1]]
    )
    member_logits = torch.logit(probs).T.reshape(4, 1, 1, 1, 4)
    mask, mean_prob = EAMC.vote(member_logits)
    assert mask.flatten().tolist() == [True, False, True, False]
    torch.testing.assert_close(mean_prob.flatten(), probs.T.mean(0), atol=1e-6, rtol=0)


def test_eamc_member_at_the_threshold_votes():
    """Sec. 2.2 / ``vote``: a member votes at p >= threshold. Three members, logit 0 is p = 0.5 exactly:
    two members at 0.5 and one at 0.007 are 2 of 3 votes (positive); just under 0.5 they do not vote
    and the pixel has 1 of 3 (negative, though one member is sure)."""
    at = torch.tensor([0.0, 0.0, -5.0]).reshape(3, 1, 1, 1, 1)
    under = torch.tensor([-1e-3, -1e-3, 5.0]).reshape(3, 1, 1, 1, 1)
    assert EAMC.vote(at)[0].item() is True
    assert EAMC.vote(under)[0].item() is False


@pytest.mark.parametrize("key", ["raiunet", "amcnet", "rdunet"])
def test_torch_export_matches_eager(key):
    torch.manual_seed(0)
    model = build_model(key, **SMALL[key]).eval()
    x = torch.rand(1, 1, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.inference_mode():
        torch.testing.assert_close(exported.module()(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("key", list(SMALL))
def test_every_parameter_takes_part_in_the_forward_pass(key):
    """One forward/backward reaches every parameter: a module built but skipped in ``forward`` (an
    attention gate or a dilated skip module bypassed) would keep ``grad is None``."""
    torch.manual_seed(0)
    model = build_model(key, **SMALL[key]).train()
    out = model(torch.rand(2, 1, 32, 32))
    out = torch.cat([o.flatten() for o in out]) if isinstance(out, tuple) else out.flatten()
    (out**2).sum().backward()  # not a plain sum: a BN output sums to 0 per channel in training mode
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_rdunet_is_translation_equivariant_by_its_total_stride():
    """Convolutions, 2 x 2 max pooling and a bilinear up-sampling by exactly 2 with
    ``align_corners=False`` commute with shifts by multiples of the total stride: a small pattern far
    from the borders, shifted by 8 pixels, gives the same logits shifted by 8 (float64, eval mode; the
    SE units' global means are unchanged as the pattern's influence never meets the borders')."""
    torch.manual_seed(0)
    model = build_model("rdunet", base_channels=4, se_reduction=2, dc_rates=[[1, 2], [1, 2]])
    model = model.double().eval()
    assert model.size_divisor == 4
    x = torch.zeros(1, 1, 96, 96, dtype=torch.float64)
    x[..., 42:54, 42:54] = torch.rand(12, 12, dtype=torch.float64)
    shift = (8, 8)
    with torch.inference_mode():
        out, out_shifted = model(x), model(torch.roll(x, shift, dims=(2, 3)))
    inner = (..., slice(24, 72), slice(24, 72))
    torch.testing.assert_close(
        out_shifted[inner], torch.roll(out, shift, dims=(2, 3))[inner], atol=1e-12, rtol=0
    )


@pytest.mark.slow
def test_bundled_rdunet_finds_the_phantom_s_lesions_inside_its_lungs():
    """The bundled RD-UNet weights fix the channel order of every decoder's concatenation (the
    up-sampled features first, then the skip): on the two most infected slices of a phantom it never
    saw, given the true lungs, it marks the phantom's lesions (measured: Dice 0.81, lesion probability
    0.70, healthy lung 0.02)."""
    if not (bundled_weights_dir() / "rdunet.safetensors").is_file():
        pytest.skip(f"no bundled rdunet.safetensors in {bundled_weights_dir()}")
    assert PHANTOM_SEED_OFFSET > 3, "a training phantom would make this test meaningless"
    phantom = make_phantom(seed=3)
    _, stage, _ = build_stages(SegmentationSettings(model="rdunet", device="cpu"), torch.device("cpu"))
    z = np.argsort(phantom.infection.sum(axis=(1, 2)))[-2:]
    lungs, truth = phantom.lungs[z] > 0, phantom.infection[z] > 0
    out = stage.predict(hu_to_unit(phantom.ct.hu[z], stage.window_hu), lungs, lung_crop_box(phantom.lungs))
    dice = mask_dice(out.mask, truth)
    assert dice >= 0.6, f"infection Dice {dice:.3f}"
    assert out.probability[truth].mean() >= 0.5
    assert out.probability[lungs & ~truth].mean() <= 0.1
