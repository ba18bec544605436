"""A GPU that runs out of memory is a user error: one line that says what to lower, exit code 2, and in
a ``segment`` batch the case's failure (its CSV row) while the others go on. The errors are faked:
torch's CUDA message, and the plain RuntimeError MPS raises."""

from __future__ import annotations

import csv

import pytest
import torch

import napari_chsnet.cli.segment as segment_command
import napari_chsnet.inference.device as device_module
from napari_chsnet.cli import main

CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 3.81 GiB of which 1.10 GiB "
    "is free. Of the allocated memory 2.50 GiB is allocated by PyTorch.\nIf reserved but unallocated memory is "
    "large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)
MPS_OOM = (
    "MPS backend out of memory (MPS allocated: 17.9 GB, other allocations: 1.2 MB, max allowed: 18.1 GB). "
    "Tried to allocate 256.00 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable the "
    "upper limit for memory allocations (may cause system failure)."
)
ERRORS = {
    "cuda": lambda: torch.cuda.OutOfMemoryError(CUDA_OOM),
    "mps": lambda: RuntimeError(MPS_OOM),
}
SAID = {
    "cuda": "(CUDA out of memory. Tried to allocate 2.00 GiB)",
    "mps": "(MPS backend out of memory (MPS allocated: 17.9 GB, other allocations: 1.2 MB, max allowed: "
    "18.1 GB). Tried to allocate 256.00 MB on private pool)",
}


def error_lines(capsys) -> list[str]:
    """stderr's lines of chsnet, less the report warnings of written cases."""
    lines = capsys.readouterr().err.strip().splitlines()
    return [line for line in lines if line.startswith("chsnet") and not line.startswith("chsnet: warning:")]


@pytest.fixture
def released(monkeypatch) -> list[int]:
    """release_device_memory calls (torch.cuda.empty_cache on a CUDA machine), counted."""
    calls: list[int] = []
    monkeypatch.setattr(device_module, "release_device_memory", lambda: calls.append(1), raising=False)
    return calls


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_a_case_out_of_memory_fails_alone_and_the_batch_goes_on(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys, released, kind
):
    """It was 'internal error', exit 1: the batch stopped there and report.csv held no row."""
    segment_for_real = segment_command.segment_with_bar

    def first_case_runs_out(volume, settings, name):
        if name == "first":
            raise ERRORS[kind]()
        return segment_for_real(volume, settings, name)

    monkeypatch.setattr(segment_command, "segment_with_bar", first_case_runs_out)
    first, second = tmp_path / "first.nii.gz", tmp_path / "second.nii.gz"
    first.write_bytes(ras_nifti.read_bytes())
    second.write_bytes(ras_nifti.read_bytes())
    out = tmp_path / "out"
    args = ["segment", str(first), str(second), "-o", str(out), "--model", "rdunet", "--device", "cpu"]
    assert main([*args, "--weights", str(tiny_weights)]) == 2
    expected = f"segmentation ran out of memory {SAID[kind]}; lower --batch-size or use --device cpu"
    lines = error_lines(capsys)
    assert lines == [
        f"chsnet: error: first: {expected}",
        "chsnet: 1 of 2 cases failed; the others were written",
    ]
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(row["case"], row["status"]) for row in rows] == [("first", "failed"), ("second", "ok")]
    assert rows[0]["error"] == expected
    assert (out / "second" / "report.pdf").is_file() and not (out / "first").exists()
    assert released == [1], "the cached GPU memory is given back before the next case"


def test_a_single_case_out_of_memory_is_one_line_and_exit_2(tmp_path, ras_nifti, monkeypatch, capsys):
    def runs_out(*args, **kwargs):
        raise ERRORS["cuda"]()

    monkeypatch.setattr(segment_command, "segment_with_bar", runs_out)
    assert main(["segment", str(ras_nifti), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert error_lines(capsys) == [
        f"chsnet: error: segmentation ran out of memory {SAID['cuda']}; lower --batch-size or use --device cpu"
    ]


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_evaluate_out_of_memory_is_one_line_and_exit_2(
    tmp_path, phantom, write_semiseg_slices, monkeypatch, capsys, kind
):
    import napari_chsnet.inference.slices as slices

    def runs_out(*args, **kwargs):
        raise ERRORS[kind]()

    monkeypatch.setattr(slices, "segment_cropped_slice", runs_out)
    images, masks = write_semiseg_slices(phantom, tmp_path, (4,), phantom.infection)
    args = ["evaluate", "--images", str(images), "--masks", str(masks), "--rotate", "90", "--device", "cpu"]
    assert main(args) == 2
    assert error_lines(capsys) == [
        f"chsnet: error: evaluation ran out of memory {SAID[kind]}; use --device cpu"
    ]


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_finetune_out_of_memory_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, kind):
    import napari_chsnet.training.finetune as training_finetune

    def runs_out(*args, **kwargs):
        raise ERRORS[kind]()

    monkeypatch.setattr(training_finetune, "finetune", runs_out)
    case = tmp_path / "ct.nii.gz"
    case.write_bytes(b"")  # must exist (it is checked first); fine-tuning, which would read it, is replaced
    args = ["--image", case, "--lungs", case, "--infection", case, "-o", tmp_path / "out", "--device", "cpu"]
    assert main(["finetune", *map(str, args)]) == 2
    assert error_lines(capsys) == [
        f"chsnet: error: fine-tuning ran out of memory {SAID[kind]}; lower --batch-size or use --device cpu"
    ]


def test_other_errors_stay_internal_errors_with_their_traceback(tmp_path, ras_nifti, monkeypatch, capsys):
    def fails(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(segment_command, "segment_with_bar", fails)
    assert main(["segment", str(ras_nifti), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (RuntimeError)" in err


def test_the_computer_running_out_of_memory_fails_the_case_not_the_batch(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    """numpy's MemoryError ("Unable to allocate …") was an internal error, exit 1, that stopped the batch."""
    segment_for_real = segment_command.segment_with_bar

    def first_case_runs_out(volume, settings, name):
        if name == "first":
            raise MemoryError(
                "Unable to allocate 1.15 GiB for an array with shape (592, 512, 512) and data type float64"
            )
        return segment_for_real(volume, settings, name)

    monkeypatch.setattr(segment_command, "segment_with_bar", first_case_runs_out)
    first, second = tmp_path / "first.nii.gz", tmp_path / "second.nii.gz"
    first.write_bytes(ras_nifti.read_bytes())
    second.write_bytes(ras_nifti.read_bytes())
    args = ["segment", str(first), str(second), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights)]
    assert main([*args, "--model", "rdunet", "--device", "cpu"]) == 2
    assert error_lines(capsys) == [
        "chsnet: error: first: segmentation ran out of memory (Unable to allocate 1.15 GiB for an array with "
        "shape (592, 512, 512) and data type float64); close other programs or use a computer with more memory",
        "chsnet: 1 of 2 cases failed; the others were written",
    ]
    assert (tmp_path / "out" / "second" / "report.pdf").is_file()
