"""Which torch device the networks run on, and the mixed precision used there.

``auto`` picks CUDA, then Apple's MPS, then the CPU. Asking for a device that is absent is a
:class:`ConfigError` (never a silent CPU run), so the device in the report is the one asked for.
``auto`` passes over MPS where torch is older than 2.3: its MPS backend has no FFT, which CHS-Net's
spectral pooling needs (asking for ``mps`` by name still runs there). fp16 autocast runs on CUDA,
and on MPS where this torch has it (2.5 on); bfloat16 autocast on a CPU with matrix units for it
(Intel AMX: half the time, the model cards' figures within their tolerance, ``docs/engine.md``) unless
``CHSNET_CPU_BF16=0``; elsewhere the networks run in float32.

A GPU that runs out of memory is a :class:`DeviceMemoryError` for the user (:func:`out_of_memory_error`),
with the advice to lower the batch size or use the CPU.
"""

from __future__ import annotations

import contextlib
import os
import re
import traceback

import torch

from napari_chsnet.errors import ConfigError, DeviceMemoryError
from napari_chsnet.registry import DEVICE_CHOICES

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
# The first torch release whose MPS backend computes FFTs (CHS-Net's spectral pooling).
MPS_FFT_SINCE = (2, 3)
# "0" keeps a CPU with AMX in float32 (the model cards' figures to their last digit, bit-reproducible
# teacher labels when retraining); anything else, or unset, lets it run bfloat16 autocast.
CPU_BF16_VARIABLE = "CHSNET_CPU_BF16"
# A stage's ``compute_dtype`` argument: the device's default (autocast_dtype), read when it is built.
AUTO_DTYPE = "auto"


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


def _torch_release() -> tuple[int, int]:
    """(major, minor) of the running torch (``"2.2.2"``, ``"2.5.0+cu124"``, ``"2.6.0a0+git…"``)."""
    found = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    return (int(found[1]), int(found[2])) if found else (0, 0)


def mps_runs_fft() -> bool:
    """Whether this torch's MPS backend has the FFTs of CHS-Net's spectral pooling (torch ≥ 2.3)."""
    return _torch_release() >= MPS_FFT_SINCE


def auto_device_kind(allow_mps: bool = True) -> str:
    """The kind ``auto`` stands for: ``"cuda"``, else ``"mps"`` (when allowed and it has FFTs), else ``"cpu"``."""
    for kind in available_devices():
        if kind == "mps" and not (allow_mps and mps_runs_fft()):
            continue
        return kind
    return "cpu"


def _refuse_absent(kind: str) -> None:
    present = available_devices()
    if kind not in present:
        raise ConfigError(
            f"device {kind!r} is not available on this machine (available: {', '.join(present)}); "
            "choose one of those or 'auto'"
        )


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto" | "cpu" | "cuda" | "mps"`` → the torch device to use.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have.
    """
    key = str(name).strip().lower()
    if key not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if key == "auto":
        key = auto_device_kind()
    else:
        _refuse_absent(key)
    if key == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(key)


def checked_device_name(name: str) -> str:
    """``name`` normalised (``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``), or a :class:`ConfigError`
    when it is unknown or this machine lacks it; ``cuda:N`` must name a GPU that is present.

    The rule of the training devices (``chsnet finetune --device``, a training config's ``device``),
    which may pick one GPU of several; inference's :func:`resolve_device` takes the kinds only.
    """
    key = str(name).strip().lower()
    kind, colon, index = key.partition(":")
    if kind not in DEVICE_CHOICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"unknown device {name!r}; choose {DEVICE_NAMES}")
    if kind != "auto":
        _refuse_absent(kind)
    if colon:
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise ConfigError(
                f"device {key!r} is not available on this machine: it has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    return key


def describe_device(device: torch.device) -> str:
    """The device as reported: ``"cpu"``, ``"mps"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _autocast_available(device_type: str) -> bool:
    """Whether this torch has autocast for ``device_type``: CUDA always (torch ≥ 2.2); MPS from 2.5 on,
    told by ``torch.amp.is_autocast_available``, which older releases lack."""
    if device_type == "cuda":
        return True
    is_available = getattr(getattr(torch, "amp", None), "is_autocast_available", None)
    if is_available is None:
        return False
    try:
        return bool(is_available(device_type))
    except (RuntimeError, ValueError, TypeError):
        return False


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX tiles, Xeon 4th generation
    on). torch says so only through a private probe (``torch.cpu._is_amx_tile_supported``); where a
    release lacks it the answer is no, and the CPU runs float32, as before."""
    probe = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    if probe is None:
        return False
    try:
        return bool(probe())
    except (RuntimeError, AttributeError, TypeError):
        return False


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype the networks run in under autocast on ``device``, or None for float32.

    float16 on a GPU (CUDA; MPS where this torch has autocast there, 2.5 on). bfloat16 on a CPU with
    AMX, unless ``CHSNET_CPU_BF16=0``: oneDNN runs its convolutions there in about half the time
    (CHS-Net on P001 70 → 34 s), and the cards' figures stay within their tolerance
    (``docs/engine.md``, "bfloat16 on CPUs with matrix units"). Not on other CPUs, where bfloat16 is
    emulated and slower, nor float16 on any CPU (slower too)."""
    if device.type in ("cuda", "mps"):
        return torch.float16 if _autocast_available(device.type) else None
    if device.type == "cpu" and os.environ.get(CPU_BF16_VARIABLE, "").strip() != "0":
        return torch.bfloat16 if cpu_has_bf16_matrix_units() else None
    return None


def compute_dtype_for(
    device: torch.device, dtype: torch.dtype | None | str = AUTO_DTYPE
) -> torch.dtype | None:
    """``dtype``, or with :data:`AUTO_DTYPE` the device's default (:func:`autocast_dtype`, read now).

    A run decides its precision once, when its stages are built, and records that one: reading
    ``CHSNET_CPU_BF16`` at every batch would let a change in the middle of a run (napari's console)
    mix two precisions in one result."""
    if isinstance(dtype, str):
        if dtype != AUTO_DTYPE:
            raise ValueError(
                f"compute dtype must be a torch dtype, None (float32) or {AUTO_DTYPE!r}; got {dtype!r}"
            )
        return autocast_dtype(device)
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (the run's, :func:`compute_dtype_for`); nothing for float32
    (None). The dtype is the caller's, never read here: a run decides it once."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_precision(dtype: torch.dtype | None) -> str:
    """How the networks compute, for the report: ``"float32"`` (None), ``"float16 autocast"`` or
    ``"bfloat16 autocast"`` (probabilities and masks are float32 either way)."""
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def precision_name(device: torch.device) -> str:
    """:func:`describe_precision` of what a run on ``device`` would use now."""
    return describe_precision(autocast_dtype(device))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says a device (or the host) ran out of memory: torch's ``OutOfMemoryError``
    (``torch.cuda.OutOfMemoryError`` before torch 2.5 made it ``torch.OutOfMemoryError``), or a
    ``RuntimeError``/``MemoryError`` whose message says "out of memory" (MPS raises a plain RuntimeError)."""
    kinds = tuple(
        kind
        for kind in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if isinstance(kind, type)
    )
    if kinds and isinstance(error, kinds):
        return True
    return isinstance(error, (RuntimeError, MemoryError)) and "out of memory" in str(error).lower()


def _first_words(error: BaseException) -> str:
    """The start of torch's message, on one line: its first two sentences ("CUDA out of memory. Tried to
    allocate 2.00 GiB"), not the paragraph on allocator settings that follows."""
    text = " ".join((str(error) or type(error).__name__).split())
    sentences = text.split(". ")
    return ". ".join(sentences[:2]).rstrip(".")


def out_of_memory_error(error: BaseException, what: str, advice: str) -> DeviceMemoryError:
    """One line for a run that ran out of memory: ``"<what> ran out of memory (<torch's words>); <advice>"``.

    ``what`` says what ran ("segmentation"), ``advice`` what to change ("lower --batch-size or use
    --device cpu"). The caught error's traceback holds the failed step's tensors: call
    :func:`release_device_memory` after the ``except`` block that caught it, not inside.
    """
    return DeviceMemoryError(f"{what} ran out of memory ({_first_words(error)}); {advice}")


def release_after_failure(error: BaseException) -> None:
    """After a failed run caught as ``error``: drop the failed step's tensors (the locals of its and its
    cause's traceback frames) and give the memory torch caches back, so the next run (a smaller batch)
    starts afresh."""
    for caught in (error, error.__cause__):
        if caught is not None:
            traceback.clear_frames(caught.__traceback__)
    release_device_memory()


def release_device_memory() -> None:
    """Give the GPU memory torch caches but no tensor uses back (after an out-of-memory error), so the
    next case starts from an empty cache."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    empty = getattr(mps, "empty_cache", None)
    if empty is not None and _present()["mps"]:
        with contextlib.suppress(RuntimeError):
            empty()
