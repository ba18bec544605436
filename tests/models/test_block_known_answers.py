"""Blocks with weights set so that their output is known by hand: what each block's docstring says it
computes (residual sum, SE rescaling, dilated receptive field, attention in (0, 1), low-pass band edge)."""

import math

import pytest
import torch
from torch import nn

from napari_chsnet.models.blocks import (
    AttentionGate,
    DilatedConvModule,
    ResidualBlock,
    SpectralLowPass2d,
    SqueezeExcitation,
)


def _identity_batch_norms(module: nn.Module) -> None:
    """BatchNorm in eval mode with running mean 0, variance 1 - eps, weight 1, bias 0: exactly x."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_parameters()
            bn.running_var.fill_(1.0 - bn.eps)
    module.eval()


def test_residual_block_with_a_zeroed_residual_branch_is_relu_of_its_input():
    """Eq. 1-2: ``relu(h(x) + F(x))`` with ``h`` the identity when the channels are kept; the branch F
    ends in BN, so a BN weight and bias of 0 make F(x) = 0 and leave relu(x)."""
    torch.manual_seed(0)
    block = ResidualBlock(3, 3, dropout=0.0).eval()
    with torch.no_grad():
        block.residual[-1].weight.zero_()
        block.residual[-1].bias.zero_()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), torch.relu(x), atol=0, rtol=0)


def test_squeeze_excitation_rescales_each_channel_by_one_factor_in_0_1():
    """Sec. 3.2: the output is the input times a sigmoid gate per (sample, channel): out / x is the same
    everywhere in a channel and lies strictly between 0 and 1."""
    torch.manual_seed(0)
    unit = SqueezeExcitation(8, reduction=2).eval()
    x = torch.rand(2, 8, 6, 6) + 0.5  # away from 0, so the ratio is well defined
    with torch.inference_mode():
        ratio = unit(x) / x
    per_channel = ratio.flatten(2)
    torch.testing.assert_close(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-6, rtol=0)
    assert ((ratio > 0) & (ratio < 1)).all()


def test_dilated_cascade_reaches_the_sum_of_its_rates():
    """Sec. 3.3: a cascade of 3 x 3 convolutions with dilations 1, 2, 3 widens the receptive field to
    1 + 2 + 3 = 6 pixels each way: with positive weights and identity BN (ReLU passes all), an impulse
    spreads to exactly the 13 x 13 square around it (every offset -6..6 is a sum of +-1, +-2, +-3)."""
    module = DilatedConvModule(2, (1, 2, 3))
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.fill_(1.0)
    _identity_batch_norms(module)
    x = torch.zeros(1, 2, 31, 31)
    x[0, :, 15, 15] = 1.0
    with torch.inference_mode():
        support = module(x)[0, 0] > 0
    expected = torch.zeros(31, 31, dtype=torch.bool)
    expected[15 - 6 : 15 + 7, 15 - 6 : 15 + 7] = True
    assert torch.equal(support, expected)


def test_attention_gate_scales_the_skip_by_a_coefficient_in_0_1():
    """Table 9: ``x * sigmoid(...)``: every output lies between 0 and the skip value (same sign, smaller
    magnitude); with conv_c all zero the coefficient is sigmoid(0) = 1/2 everywhere."""
    torch.manual_seed(0)
    gate = AttentionGate(gating_channels=4, skip_channels=3, inter_channels=2).eval()
    gating, skip = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        coefficient = gate(gating, skip) / skip
    assert ((coefficient > 0) & (coefficient < 1)).all()
    with torch.no_grad():
        gate.conv_c.weight.zero_()
        gate.conv_c.bias.zero_()
    with torch.inference_mode():
        torch.testing.assert_close(gate(gating, skip), 0.5 * skip, atol=0, rtol=0)


@pytest.mark.parametrize(("frequency", "kept"), [(1, 1.0), (2, 0.5), (3, 0.0)])
def test_low_pass_keeps_half_of_the_band_edge_frequency(frequency, kept):
    """Factor 2 on 8 pixels keeps |f| < 2 cycles, removes |f| > 2, and the band edge |f| = 2 keeps half
    its weight on each side (the docstring; the Nyquist average of spectral pooling to 4 pixels): a
    cosine along y, along x and their product come out scaled by kept, kept and kept²."""
    grid = torch.arange(8, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * frequency * grid / 8)
    low_pass = SpectralLowPass2d(factor=2)
    along_y, along_x = wave[:, None].expand(8, 8), wave[None, :].expand(8, 8)
    for image, scale in ((along_y, kept), (along_x, kept), (along_y * along_x, kept**2)):
        out = low_pass(image[None, None].clone())[0, 0]
        torch.testing.assert_close(out, scale * image, atol=1e-12, rtol=0)
