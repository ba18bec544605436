"""Input checks shared by the networks, with messages that name the shape found and the shape to use."""

from __future__ import annotations

from torch import Tensor


def check_input(x: Tensor, in_channels: int, size_divisor: int, network: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(N, in_channels, H, W)`` with H and W multiples of ``size_divisor``."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{network} expects a (N, {in_channels}, H, W) tensor; got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % size_divisor or width % size_divisor:
        padded = (-(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor)
        raise ValueError(
            f"{network} needs H and W divisible by {size_divisor}; got {(height, width)}. "
            f"Pad the input to {padded} and crop the output back."
        )
