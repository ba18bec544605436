"""Device choice: auto order, absent devices refused (never a silent CPU run), autocast on the CPU only
in bfloat16 and only with AMX (none on MPS where torch has none), out-of-memory errors said in one line."""

from __future__ import annotations

import contextlib

import pytest
import torch

import napari_chsnet.inference.device as device_module
from napari_chsnet.errors import ConfigError, DeviceMemoryError
from napari_chsnet.inference.device import (
    AUTO_DTYPE,
    CPU_BF16_VARIABLE,
    autocast,
    autocast_dtype,
    available_devices,
    checked_device_name,
    compute_dtype_for,
    cpu_has_bf16_matrix_units,
    describe_device,
    describe_precision,
    is_out_of_memory,
    out_of_memory_error,
    precision_name,
    resolve_device,
)
from napari_chsnet.inference.pipeline import SegmentationSettings, iter_segmentation


def test_cpu_is_always_available_and_listed_last():
    devices = available_devices()
    assert devices[-1] == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_takes_the_first_available_device():
    assert resolve_device("auto").type == available_devices()[0]


@pytest.mark.parametrize("absent", ["cuda", "mps"])
def test_an_absent_device_is_a_config_error_naming_the_available_ones(absent):
    if absent in available_devices():
        pytest.skip(f"{absent} is present on this machine")
    with pytest.raises(ConfigError, match=f"'{absent}' is not available.*available: .*cpu"):
        resolve_device(absent)


def test_an_unknown_device_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_the_cpu_runs_bfloat16_only_with_matrix_units_and_not_when_told_so(monkeypatch):
    """bfloat16 autocast where AMX multiplies it in hardware (about half the time there); float32 on
    other CPUs (emulated bfloat16 is slower) and with CHSNET_CPU_BF16=0; never float16 on a CPU."""
    cpu = torch.device("cpu")
    recorder = _Recorder()
    monkeypatch.setattr(torch, "autocast", recorder)
    monkeypatch.delenv(CPU_BF16_VARIABLE, raising=False)
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: False)
    assert isinstance(autocast(cpu, autocast_dtype(cpu)), contextlib.nullcontext) and recorder.calls == []
    assert precision_name(cpu) == "float32"
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: True)
    autocast(cpu, autocast_dtype(cpu))
    assert recorder.calls == [{"device_type": "cpu", "dtype": torch.bfloat16}]
    assert precision_name(cpu) == "bfloat16 autocast"
    for value, dtype in (("0", None), (" 0 ", None), ("1", torch.bfloat16), ("", torch.bfloat16)):
        monkeypatch.setenv(CPU_BF16_VARIABLE, value)
        assert autocast_dtype(cpu) is dtype, value
    assert describe_device(cpu) == "cpu"


def test_a_stage_computes_in_the_dtype_it_was_given_or_the_default_read_when_it_was_built(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: True)
    monkeypatch.delenv(CPU_BF16_VARIABLE, raising=False)
    assert compute_dtype_for(cpu) is torch.bfloat16 and compute_dtype_for(cpu, AUTO_DTYPE) is torch.bfloat16
    assert compute_dtype_for(cpu, None) is None  # float32 asked for: no autocast even with AMX
    assert compute_dtype_for(cpu, torch.float16) is torch.float16
    assert isinstance(autocast(cpu, None), contextlib.nullcontext)
    with pytest.raises(ValueError, match="compute dtype must be"):
        compute_dtype_for(cpu, "bf16")
    assert [describe_precision(d) for d in (None, torch.float16, torch.bfloat16)] == [
        "float32",
        "float16 autocast",
        "bfloat16 autocast",
    ]


def test_a_run_keeps_the_precision_it_started_with_and_records_that_one(monkeypatch, phantom, tiny_weights):
    """CHSNET_CPU_BF16 changed in the middle of a run (from napari's console) does not mix two
    precisions in one result, and the report says the one every batch ran in."""
    recorder = _Recorder()  # records each batch's autocast; the tiny networks still compute in float32
    monkeypatch.setattr(torch, "autocast", recorder)
    monkeypatch.setattr(device_module, "cpu_has_bf16_matrix_units", lambda: True)
    monkeypatch.delenv(CPU_BF16_VARIABLE, raising=False)
    settings = SegmentationSettings(model="chsnet", device="cpu", weights=tiny_weights, batch_size=4)
    steps = iter_segmentation(phantom.ct, settings)
    assert next(steps).stage == "prepare"
    monkeypatch.setenv(CPU_BF16_VARIABLE, "0")  # float32 asked for after the run began
    result = _finished(steps)
    lung_batches = -(-phantom.ct.shape[0] // 4)
    assert len(recorder.calls) > lung_batches  # the lung batches and at least one infection batch
    assert all(call == {"device_type": "cpu", "dtype": torch.bfloat16} for call in recorder.calls)
    assert result.run_info.inference_options["precision"] == "bfloat16 autocast"
    # the next run starts in float32
    recorder.calls.clear()
    later = _finished(iter_segmentation(phantom.ct, settings))
    assert recorder.calls == [] and later.run_info.inference_options["precision"] == "float32"


def _finished(steps):
    """What a segmentation generator returns once its progress is run through."""
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value


def test_a_torch_without_the_amx_probe_runs_float32(monkeypatch):
    """The probe is private to torch: a release without it, or one whose probe fails, means float32."""
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_has_bf16_matrix_units() is False

    def failing():
        raise RuntimeError("cpuinfo failed")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", failing, raising=False)
    assert cpu_has_bf16_matrix_units() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_bf16_matrix_units() is True


# --- torch releases and machines this one is not (faked) -------------------------------------------


@pytest.fixture
def mac_without_cuda(monkeypatch):
    """A Mac: MPS present, no CUDA."""
    monkeypatch.setattr(device_module, "_present", lambda: {"cuda": False, "mps": True, "cpu": True})


@pytest.mark.parametrize(("release", "expected"), [("2.2.2", "cpu"), ("2.3.0", "mps"), ("2.5.1+cpu", "mps")])
def test_auto_passes_over_mps_where_torch_has_no_mps_fft(monkeypatch, mac_without_cuda, release, expected):
    """torch 2.2 (the last for Intel Macs) has no MPS FFT, which CHS-Net's spectral pooling runs."""
    monkeypatch.setattr(torch, "__version__", release)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("mps") == torch.device("mps")  # asked by name: still MPS
    assert available_devices() == ["mps", "cpu"]


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return contextlib.nullcontext()


def test_mps_autocast_only_where_this_torch_has_it(monkeypatch):
    """torch < 2.5 has no MPS autocast ("unsupported autocast device_type 'mps'"): float32 there."""
    recorder = _Recorder()
    monkeypatch.setattr(torch, "autocast", recorder)
    mps = torch.device("mps")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: kind != "mps", raising=False)
    assert isinstance(autocast(mps, autocast_dtype(mps)), contextlib.nullcontext) and recorder.calls == []
    monkeypatch.delattr(torch.amp, "is_autocast_available", raising=False)  # torch 2.2, 2.3
    assert isinstance(autocast(mps, autocast_dtype(mps)), contextlib.nullcontext) and recorder.calls == []
    cuda = torch.device("cuda")
    autocast(cuda, autocast_dtype(cuda))  # CUDA has autocast in every torch this package allows
    assert recorder.calls == [{"device_type": "cuda", "dtype": torch.float16}]
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: True, raising=False)  # torch ≥ 2.5
    autocast(mps, autocast_dtype(mps))
    assert recorder.calls[-1] == {"device_type": "mps", "dtype": torch.float16}


def test_training_device_names_are_checked_like_finetunes(monkeypatch):
    monkeypatch.setattr(device_module, "_present", lambda: {"cuda": True, "mps": False, "cpu": True})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert checked_device_name(" CUDA:1 ") == "cuda:1"
    with pytest.raises(ConfigError, match=r"'cuda:2' is not available on this machine: it has 2 CUDA"):
        checked_device_name("cuda:2")
    with pytest.raises(ConfigError, match=r"'mps' is not available on this machine \(available: cuda, cpu\)"):
        checked_device_name("mps")
    with pytest.raises(ConfigError, match="unknown device 'mps:0'; choose auto, cpu, cuda, cuda:N or mps"):
        checked_device_name("mps:0")


CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 3.81 GiB of which "
    "1.10 GiB is free. Including non-PyTorch memory, this process has 2.70 GiB memory in use.\n"
    "If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
)
MPS_MESSAGE = (
    "MPS backend out of memory (MPS allocated: 17.9 GB, other allocations: 1.2 MB, max allowed: 18.1 GB). "
    "Tried to allocate 256.00 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable"
)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (torch.cuda.OutOfMemoryError(CUDA_MESSAGE), "(CUDA out of memory. Tried to allocate 2.00 GiB)"),
        (
            RuntimeError(MPS_MESSAGE),
            "(MPS backend out of memory (MPS allocated: 17.9 GB, other allocations: 1.2 MB, max allowed: "
            "18.1 GB). Tried to allocate 256.00 MB on private pool)",
        ),
        (MemoryError("out of memory"), "(out of memory)"),
    ],
)
def test_out_of_memory_errors_are_told_apart_and_said_in_one_line(error, words):
    assert is_out_of_memory(error)
    said = out_of_memory_error(error, "segmentation", "lower --batch-size or use --device cpu")
    assert isinstance(said, DeviceMemoryError)
    assert str(said) == f"segmentation ran out of memory {words}; lower --batch-size or use --device cpu"


@pytest.mark.parametrize(
    "error", [RuntimeError("shape mismatch"), ValueError("out of memory"), MemoryError()]
)
def test_other_errors_are_not_out_of_memory(error):
    assert not is_out_of_memory(error)
