"""Shapes, configurations, parameter counts, voting and export of the five networks."""

import pytest
import torch

from napari_chsnet.errors import ConfigError
from napari_chsnet.models import EAMC, MODEL_DEFAULTS, CHSNet, RAIUNet, build_model
from napari_chsnet.models.blocks import ResidualInceptionBlock, SSDSkip

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


@pytest.mark.parametrize("key", ["raiunet", "amcnet", "rdunet"])
def test_torch_export_matches_eager(key):
    torch.manual_seed(0)
    model = build_model(key, **SMALL[key]).eval()
    x = torch.rand(1, 1, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.inference_mode():
        torch.testing.assert_close(exported.module()(x), model(x), atol=1e-5, rtol=1e-4)
