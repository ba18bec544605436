"""Spectral pooling (CHS-Net Sec. 3.1.1, Eq. 2; Rippel et al. 2015) and its global and same-size forms.

All three work on the real FFT (``torch.fft.rfft2``/``irfft2``), so a pooled map costs one forward and one
inverse FFT over the input, and the cropped block is read directly from the half spectrum.

The FFTs run in float32 (float64 stays) and the result returns in the input's dtype: under fp16 autocast on a GPU the
feature maps arrive in half precision, where cuFFT takes only power-of-two sizes (the bundled CHS-Net's
224-pixel input pools to 112, 56, 28, 14) and an unnormalised spectrum of a real slice reaches ~10^5, past
fp16's 65504.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _at_least_float32(x: Tensor) -> Tensor:
    """Half-precision maps in float32 for the FFT (see the module's docstring); float64 stays."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _average_nyquist(spectrum: Tensor, keep: int, dim: int) -> Tensor:
    """Crop ``dim`` of a full-length frequency axis to the ``keep`` lowest frequencies, centred on DC.

    For an even ``keep`` the output's Nyquist bin stands for both input frequencies ``+keep/2`` and
    ``-keep/2``; it receives their average, which is what taking the real part of the inverse DFT of the
    centred (asymmetric) crop amounts to.
    """
    size = spectrum.shape[dim]
    half = keep // 2
    positive = spectrum.narrow(dim, 0, (keep + 1) // 2)
    if keep % 2:
        negative = spectrum.narrow(dim, size - half, half)
        return torch.cat([positive, negative], dim=dim)
    nyquist = 0.5 * (spectrum.narrow(dim, half, 1) + spectrum.narrow(dim, size - half, 1))
    negative = spectrum.narrow(dim, size - half + 1, half - 1)
    return torch.cat([positive, nyquist, negative], dim=dim)


def spectral_pool(x: Tensor, output_size: tuple[int, int]) -> Tensor:
    """CHS-Net Eq. 2: DFT, keep the centred ``output_size`` block of frequencies, inverse DFT, real output.

    The kept block holds the frequencies ``-h/2 .. h/2-1`` (rows) and ``-w/2 .. w/2-1`` (columns). For an even
    output size the Nyquist row/column stands for both ``+h/2`` and ``-h/2`` of the input, and gets their
    average: the cropped spectrum then stays Hermitian, so the inverse DFT is real without discarding an
    imaginary part (a plain asymmetric crop would differ only in the Nyquist corner bin). The result is scaled
    by ``h*w / (H*W)`` so that a constant image keeps its value (the ``1/sqrt(wh)`` of Eq. 2 applied on both
    sides of a size change would not).

    Args:
        x: real tensor ``(..., H, W)``.
        output_size: ``(h, w)`` with ``1 <= h <= H`` and ``1 <= w <= W``.

    Returns:
        Real tensor ``(..., h, w)`` of the same dtype.
    """
    height, width = x.shape[-2:]
    out_h, out_w = output_size
    if not (1 <= out_h <= height and 1 <= out_w <= width):
        raise ValueError(
            f"spectral_pool: output size {output_size} must lie within the input size {(height, width)}"
        )
    # norm="forward" divides by H*W on the way in and not on the way out: constants are preserved.
    spectrum = torch.fft.rfft2(_at_least_float32(x), norm="forward")
    # Columns: the half spectrum holds frequencies 0..W/2; the output keeps 0..out_w/2.
    columns = spectrum[..., : out_w // 2 + 1]
    if out_w % 2 == 0 and out_w < width:
        # The output Nyquist column stands for +out_w/2 and -out_w/2; X[r, -c] = conj(X[-r, c]).
        row_index = (-torch.arange(height, device=x.device)) % height
        plus = spectrum[..., out_w // 2]
        minus = plus.index_select(-1, row_index).conj()
        columns = torch.cat([columns[..., :-1], (0.5 * (plus + minus)).unsqueeze(-1)], dim=-1)
    rows = _average_nyquist(columns, out_h, dim=-2) if out_h < height else columns
    return torch.fft.irfft2(rows, s=(out_h, out_w), norm="forward").to(x.dtype)


class SpectralPool2d(nn.Module):
    """Spectral pooling by an integer factor (CHS-Net Sec. 3.1.1, "valid" hybrid-pooling branch).

    Input ``(N, C, H, W)`` -> output ``(N, C, H // factor, W // factor)``.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"SpectralPool2d: factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        return spectral_pool(x, (height // self.factor, width // self.factor))


class SpectralLowPass2d(nn.Module):
    """Same-size spectral pooling (CHS-Net Sec. 3.1.1, "same" padding, used inside the inception convolution).

    Keeps the centred block of ``1/factor`` of the frequencies in each direction and returns to the input
    size, i.e. an ideal low-pass filter: what spectral pooling to ``H/factor`` followed by band-limited
    up-sampling gives, except that the boundary frequencies keep half their weight on each side.
    Input and output ``(N, C, H, W)``.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"SpectralLowPass2d: factor must be >= 1, got {factor}")
        self.factor = factor

    def _mask(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        def axis_weights(freqs: Tensor, size: int) -> Tensor:
            limit = size / (2 * self.factor)
            weights = (freqs.abs() < limit).to(dtype)
            return weights + 0.5 * (freqs.abs() == limit).to(dtype)

        row = axis_weights(torch.fft.fftfreq(height, 1.0 / height, device=device), height)
        col = axis_weights(torch.fft.rfftfreq(width, 1.0 / width, device=device), width)
        return row[:, None] * col[None, :]

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        spectrum = torch.fft.rfft2(_at_least_float32(x))
        mask = self._mask(height, width, x.device, spectrum.real.dtype)
        return torch.fft.irfft2(spectrum * mask, s=(height, width)).to(x.dtype)


class GlobalSpectralPool2d(nn.Module):
    """Global spectral pooling (CHS-Net Sec. 3.2, P_gsp of Eq. 8): spectral pooling to a 1 x 1 map.

    Keeping only the centred 1 x 1 block of the spectrum keeps the DC coefficient, whose inverse DFT at size
    1 x 1 is the channel mean (with the constant-preserving scaling of :func:`spectral_pool`). We therefore
    compute the mean directly, which is exactly ``spectral_pool(x, (1, 1))`` without the two FFTs (a test
    checks the equality). Input ``(N, C, H, W)`` -> output ``(N, C, 1, 1)``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)
