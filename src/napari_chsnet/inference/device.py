"""Which torch device the networks run on, and the mixed precision used there.

``auto`` picks CUDA, then Apple's MPS, then the CPU. Asking for a device that is absent is a
:class:`ConfigError` (never a silent CPU run), so the device in the report is the one asked for.
"""

from __future__ import annotations

import contextlib

import torch

from napari_chsnet.errors import ConfigError
from napari_chsnet.registry import DEVICE_CHOICES


def _present() -> dict[str, bool]:
    mps = getattr(torch.backends, "mps", None)
    return {
        "cuda": torch.cuda.is_available(),
        "mps": bool(mps is not None and mps.is_available()),
        "cpu": True,
    }


def available_devices() -> list[str]:
    """Devices present on this machine, in the order ``auto`` prefers them (``cpu`` always last)."""
    return [name for name, present in _present().items() if present]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto" | "cpu" | "cuda" | "mps"`` → the torch device to use.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have.
    """
    key = str(name).strip().lower()
    if key not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    present = available_devices()
    if key == "auto":
        key = present[0]
    elif key not in present:
        raise ConfigError(
            f"device {key!r} is not available on this machine (available: {', '.join(present)}); "
            "choose one of those or 'auto'"
        )
    if key == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(key)


def describe_device(device: torch.device) -> str:
    """The device as reported: ``"cpu"``, ``"mps"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on a GPU (CUDA, MPS); nothing on the CPU, where fp16 is slower, not faster."""
    if device.type in ("cuda", "mps"):
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()
