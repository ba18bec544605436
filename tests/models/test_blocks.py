"""Blocks against numpy references and known answers."""

import numpy as np
import pytest
import torch

from napari_chsnet.models.blocks import (
    DepthwiseSeparableConv2d,
    GlobalSpectralPool2d,
    HybridPool2d,
    MaxPool3x3Same,
    MSBlock,
    SpectralLowPass2d,
    SpectralPool2d,
    SqueezeExcitation,
    SSDSkip,
    spectral_pool,
)


def _select_frequencies(n_out: int, n_in: int) -> np.ndarray:
    """Matrix taking the n_out lowest DFT frequencies of n_in; an even n_out's Nyquist averages +/- n_out/2."""
    select = np.zeros((n_out, n_in))
    for row, freq in enumerate(np.fft.fftfreq(n_out, 1 / n_out).astype(int)):
        if n_out % 2 == 0 and abs(freq) == n_out // 2 and n_out < n_in:
            select[row, freq % n_in] += 0.5
            select[row, -freq % n_in] += 0.5
        else:
            select[row, freq % n_in] = 1.0
    return select


def numpy_spectral_pool(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference: full complex DFT, centred crop, inverse DFT, scaled to keep constants."""
    height, width = image.shape
    cropped = _select_frequencies(out_h, height) @ np.fft.fft2(image) @ _select_frequencies(out_w, width).T
    result = np.fft.ifft2(cropped) * (out_h * out_w) / (height * width)
    assert np.abs(result.imag).max() < 1e-9  # the symmetric crop is Hermitian
    return result.real


@pytest.mark.parametrize(
    ("size", "out"),
    [
        ((8, 8), (4, 4)),
        ((16, 12), (8, 6)),
        ((9, 7), (5, 3)),
        ((8, 8), (3, 5)),
        ((10, 10), (4, 10)),
        ((8, 8), (8, 8)),
    ],
)
def test_spectral_pool_matches_numpy_dft(size, out):
    image = np.random.default_rng(0).standard_normal(size)
    pooled = spectral_pool(torch.from_numpy(image), out).numpy()
    np.testing.assert_allclose(pooled, numpy_spectral_pool(image, *out), atol=1e-12)


def test_spectral_pool_keeps_constant_image():
    image = torch.full((2, 3, 16, 16), 0.7)
    np.testing.assert_allclose(SpectralPool2d(2)(image).numpy(), 0.7, atol=1e-6)
    np.testing.assert_allclose(SpectralLowPass2d(2)(image).numpy(), 0.7, atol=1e-6)
    assert SpectralPool2d(2)(image).shape == (2, 3, 8, 8)


def test_spectral_pool_keeps_a_low_frequency_cosine():
    # A cosine of 1 cycle over 16 pixels is inside the kept band: pooling samples it at half the resolution.
    grid = np.arange(16)
    image = np.cos(2 * np.pi * grid / 16)[None, :] * np.ones((16, 1))
    pooled = spectral_pool(torch.from_numpy(image), (8, 8)).numpy()
    np.testing.assert_allclose(
        pooled, np.cos(2 * np.pi * np.arange(8) / 8)[None, :] * np.ones((8, 1)), atol=1e-12
    )


def test_spectral_pool_gradcheck():
    image = torch.randn(1, 1, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: spectral_pool(x, (2, 4)), (image,))
    assert torch.autograd.gradcheck(SpectralLowPass2d(2), (image,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_spectral_pooling_of_half_precision_maps_runs_in_float32(dtype):
    """Under fp16 autocast on a GPU the maps arrive in half precision: cuFFT would take only
    power-of-two sizes and overflow on real slices' spectra (CPU FFTs refuse half outright)."""
    x = torch.rand(1, 2, 28, 14) * 300  # a 224-pixel input pooled three times; spectrum ~ 10^5
    pooled = spectral_pool(x.to(dtype), (14, 7))
    assert pooled.dtype == dtype
    torch.testing.assert_close(
        pooled.float(), spectral_pool(x.to(dtype).float(), (14, 7)), rtol=1e-2, atol=1.0
    )
    low = SpectralLowPass2d(2)
    filtered = low(x.to(dtype))
    assert filtered.dtype == dtype and torch.isfinite(filtered.float()).all()
    torch.testing.assert_close(filtered.float(), low(x.to(dtype).float()), rtol=1e-2, atol=1.0)


def test_global_spectral_pool_is_spectral_pool_to_one_pixel():
    image = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(GlobalSpectralPool2d()(image), spectral_pool(image, (1, 1)))


def test_low_pass_removes_high_frequencies():
    checkerboard = torch.from_numpy((-1.0) ** np.add.outer(np.arange(8), np.arange(8)))[None, None]
    assert SpectralLowPass2d(2)(checkerboard).abs().max() < 1e-6


@pytest.mark.parametrize(("downsample", "expected"), [(True, (2, 5, 8, 8)), (False, (2, 5, 16, 16))])
def test_hybrid_pool_shapes(downsample, expected):
    assert HybridPool2d(3, 5, downsample=downsample)(torch.randn(2, 3, 16, 16)).shape == expected


def test_ssd_skip_keeps_skip_shape():
    skip, gating = torch.randn(2, 4, 16, 16), torch.randn(2, 8, 8, 8)
    assert SSDSkip(4, 8)(skip, gating).shape == skip.shape


def test_squeeze_excitation_rejects_reduction_larger_than_channels():
    with pytest.raises(ValueError, match="reduction 8 is too large for 4 channels"):
        SqueezeExcitation(4, reduction=8)


def test_ms_block_weights_follow_table6_reading():
    # Three dilated 3x3 convolutions (D = 2, 3, 5) and a 1x1 fusion over four maps: 31 n^2 weights.
    n = 8
    conv_weights = sum(p.numel() for name, p in MSBlock(n).named_parameters() if p.ndim == 4)
    assert conv_weights == 31 * n * n
    assert MSBlock(n, input_as_first_branch=False)(torch.randn(1, n, 16, 16)).shape == (1, n, 16, 16)


def test_inference_max_pool_equals_max_pool2d():
    x = torch.randn(2, 3, 9, 12)
    with torch.inference_mode():
        fast = MaxPool3x3Same()(x)
    torch.testing.assert_close(
        fast, torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1), rtol=0, atol=0
    )


def test_one_by_one_separable_conv_equals_depthwise_then_pointwise():
    conv = DepthwiseSeparableConv2d(3, 5, kernel_size=1)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(conv(x), conv.pointwise(conv.depthwise(x)))
