"""``chsnet segment`` end to end (NIfTI, DICOM, batches) and every way it refuses bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pypdf import PdfReader

from inference.factory import ImageInLungsStage, use_infection_stage
from napari_chsnet.cli import main
from napari_chsnet.cli.segment import plan_cases
from napari_chsnet.inference import weights as weights_module
from napari_chsnet.inference.device import available_devices
from napari_chsnet.io.readers import read_ct
from napari_chsnet.resources_path import bundled_weights_dir

OUTPUTS = (
    "lungs.nii.gz",
    "infection.nii.gz",
    "probability.nii.gz",
    "report.json",
    "report.csv",
    "report.pdf",
)


def segment(*args, weights=None) -> int:
    extra = ["--device", "cpu"] + (["--weights", str(weights)] if weights is not None else [])
    return main(["segment", *map(str, args), *extra])


def one_error_line(capsys, *fragments: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "expected an error on stderr"
    for fragment in fragments:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"
    return lines[-1]


def test_a_nifti_case_gives_every_output_in_the_input_grid(tmp_path, ras_nifti, tiny_weights, capsys):
    out = tmp_path / "out"
    assert segment(ras_nifti, "-o", out, "--model", "eamc", "--batch-size", "3", weights=tiny_weights) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert "case_ras: overall CT-" in capsys.readouterr().out

    source = sitk.ReadImage(str(ras_nifti))
    for name in OUTPUTS[:3]:
        written = sitk.ReadImage(str(out / name))
        assert written.GetSize() == source.GetSize()
        np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    lungs = read_ct(out / "lungs.nii.gz").hu
    infection = read_ct(out / "infection.nii.gz").hu
    probability = read_ct(out / "probability.nii.gz").hu
    assert set(np.unique(lungs)) <= {0, 1, 2} and set(np.unique(infection)) <= {0, 1}
    assert not ((infection > 0) & (lungs == 0)).any()
    assert probability.dtype == np.float32 and probability.min() >= 0 and probability.max() <= 1

    report = json.loads((out / "report.json").read_text())
    for side in ("right", "left"):
        assert set(report["lungs"][side]) >= {"volume_ml", "infected_ml", "involvement_pct", "grade"}
        # volumes are the written masks' voxels x voxel volume
        voxel_ml = float(np.prod(source.GetSpacing())) / 1000
        label = 1 if side == "right" else 2
        assert report["lungs"][side]["volume_ml"] == pytest.approx(
            (lungs == label).sum() * voxel_ml, abs=1e-5
        )
    assert report["model"] == "eamc" and report["device"] == "cpu"
    assert report["weights_sha256"] and report["software"]["torch"] and report["runtime_s"] > 0
    assert set(report["stage_timings_s"]) == {
        "prepare", "lungs", "postprocess_lungs", "infection", "postprocess_infection", "report",
    }  # fmt: skip
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 1 and rows[0]["overall_grade"] == report["overall"]["grade"]
    text = "".join(page.extract_text() for page in PdfReader(out / "report.pdf").pages)
    assert report["lungs"]["right"]["grade"] in text and "Research tool" in text


def test_the_written_probability_lies_on_the_written_masks(tmp_path, ras_nifti, tiny_weights, monkeypatch):
    """probability.nii.gz holds the run's probability on the CT's voxels (in the input's RAS grid, as
    the masks): with a known-answer infection stage it is the CT's network input inside the written
    lungs, 0 elsewhere, and it thresholds to the written infection. The tiny random networks give a
    map too flat to show it flipped."""
    stage = ImageInLungsStage()
    use_infection_stage(monkeypatch, stage)
    out = tmp_path / "out"
    args = (ras_nifti, "-o", out, "--model", "rdunet", "--min-lesion-ml", "0")
    assert segment(*args, weights=tiny_weights) == 0
    lungs = read_ct(out / "lungs.nii.gz").hu
    probability = read_ct(out / "probability.nii.gz").hu
    expected = stage.expected_probability(read_ct(ras_nifti).hu, lungs)
    assert (lungs > 0).any() and (expected > 0).sum() > 100
    np.testing.assert_array_equal(probability, expected)
    assert np.array_equal(read_ct(out / "infection.nii.gz").hu > 0, expected >= stage.threshold)


def test_the_report_says_how_the_infection_was_thresholded_and_averaged(tmp_path, ras_nifti, tiny_weights):
    default, single = tmp_path / "default", tmp_path / "single"
    assert segment(ras_nifti, "-o", default, "--model", "chsnet", weights=tiny_weights) == 0
    assert segment(
        ras_nifti, "-o", single, "--model", "chsnet", "--no-mirror-averaging", "--threshold", "0.3",
        weights=tiny_weights,
    ) == 0  # fmt: skip
    options = {
        name: json.loads((folder / "report.json").read_text())["inference_options"]
        for name, folder in (("default", default), ("single", single))
    }
    assert options["default"]["mirror_averaging"] is True and options["default"]["threshold"] == 0.5
    assert options["single"]["mirror_averaging"] is False and options["single"]["threshold"] == 0.3
    probabilities = [read_ct(folder / "probability.nii.gz").hu for folder in (default, single)]
    assert not np.array_equal(*probabilities)
    assert "overlapping_tiles" not in options["default"]  # CHS-Net reads its crop whole


def test_an_eamc_report_says_how_its_members_read_the_crop(tmp_path, ras_nifti, tiny_weights):
    paper, overlapping = tmp_path / "paper", tmp_path / "overlapping"
    args = ("--model", "eamc", "--no-mirror-averaging")
    assert segment(ras_nifti, "-o", paper, *args, weights=tiny_weights) == 0
    assert segment(ras_nifti, "-o", overlapping, *args, "--overlapping-tiles", weights=tiny_weights) == 0
    reports = [json.loads((folder / "report.json").read_text()) for folder in (paper, overlapping)]
    assert [report["inference_options"]["overlapping_tiles"] for report in reports] == [False, True]
    probabilities = [read_ct(folder / "probability.nii.gz").hu for folder in (paper, overlapping)]
    assert not np.array_equal(*probabilities)


def test_a_dicom_folder_keeps_its_study_fields_unless_anonymized(tmp_path, dicom_folder, tiny_weights):
    plain, anonymous = tmp_path / "plain", tmp_path / "anonymous"
    assert segment(dicom_folder, "-o", plain, weights=tiny_weights) == 0
    assert segment(dicom_folder, "-o", anonymous, "--anonymize", weights=tiny_weights) == 0
    study = json.loads((plain / "report.json").read_text())["study"]
    assert study["PatientID"] == "P42" and study["StudyDate"] == "20200415"
    hidden = json.loads((anonymous / "report.json").read_text())
    assert (
        hidden["anonymized"] and "PatientID" not in hidden["study"] and "PatientName" not in hidden["study"]
    )
    source = read_ct(dicom_folder)
    written = read_ct(plain / "lungs.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.geometry.origin_mm, source.geometry.origin_mm, atol=1e-3)


def test_a_dicom_reader_warning_is_printed_once(tmp_path, dicom_folder, tiny_weights):
    import pydicom

    series = shutil.copytree(dicom_folder, tmp_path / "mr_labelled")
    for path in series.iterdir():  # HU values under another modality: opened, with a warning
        dataset = pydicom.dcmread(path)
        dataset.Modality = "MR"
        dataset.save_as(path)
    # A process of its own: pytest's log capture would hide a second copy printed through logging.
    args = ["segment", str(series), "-o", str(tmp_path / "out"), "--model", "rdunet"]
    args += ["--device", "cpu", "--weights", str(tiny_weights)]
    code = f"import sys; from napari_chsnet.cli import run; sys.argv[1:] = {args!r}; run()"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.count("not CT") == 1, finished.stderr


def test_a_series_missing_a_slice_is_refused_unless_the_gap_may_be_filled(
    tmp_path, dicom_folder, tiny_weights, capsys
):
    series = shutil.copytree(dicom_folder, tmp_path / "gap")
    middle = sorted(series.iterdir())[len(list(series.iterdir())) // 2]
    middle.unlink()
    assert segment(series, "-o", tmp_path / "refused", "--model", "rdunet", weights=tiny_weights) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "misses slices" in error and "--fill-missing-slices" in error
    out = tmp_path / "filled"
    args = (series, "-o", out, "--model", "rdunet", "--fill-missing-slices")
    assert segment(*args, weights=tiny_weights) == 0
    report = json.loads((out / "report.json").read_text())
    assert any("interpolated" in warning for warning in report["warnings"]), report["warnings"]
    assert read_ct(out / "lungs.nii.gz").shape == read_ct(dicom_folder).shape


def test_several_inputs_give_one_folder_per_case_and_one_csv(tmp_path, ras_nifti, dicom_folder, tiny_weights):
    other = tmp_path / "copy" / ras_nifti.name  # same case name twice: made unique
    other.parent.mkdir()
    shutil.copy(ras_nifti, other)
    out = tmp_path / "batch"
    assert segment(ras_nifti, other, dicom_folder, "-o", out, "--model", "rdunet", weights=tiny_weights) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case_ras", "case_ras_2", "report.csv", "series_a"]
    for case in ("case_ras", "case_ras_2", "series_a"):
        assert sorted(p.name for p in (out / case).iterdir()) == sorted(set(OUTPUTS) - {"report.csv"})
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [row["case"] for row in rows] == ["case_ras", "case_ras_2", "series_a"]


def test_existing_outputs_are_refused_before_any_work_unless_overwrite(
    tmp_path, ras_nifti, tiny_weights, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_text("an earlier report")
    before = (out / "report.pdf").stat().st_mtime_ns
    assert segment(ras_nifti, "-o", out, weights=tiny_weights) == 2
    one_error_line(capsys, "already exist", "report.pdf", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["report.pdf"]
    assert (out / "report.pdf").stat().st_mtime_ns == before
    assert segment(ras_nifti, "-o", out, "--overwrite", weights=tiny_weights) == 0
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(
    ("make_input", "fragments"),
    [
        (lambda tmp: tmp / "missing.nii.gz", ("input not found", "missing.nii.gz")),
        (lambda tmp: _write(tmp / "notes.txt", b"hello"), ("not a CT file or folder", "notes.txt")),
        (lambda tmp: _write(tmp / "broken.nii.gz", b"not gzip at all"), ("broken.nii.gz",)),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, tiny_weights, capsys, make_input, fragments):
    path = make_input(tmp_path)
    assert segment(path, "-o", tmp_path / "out", weights=tiny_weights) == 2
    line = one_error_line(capsys, *fragments)
    assert line.startswith("chsnet: error:")
    assert not (tmp_path / "out" / "lungs.nii.gz").exists()


def test_a_skewed_grid_is_refused_before_the_networks_run(
    tmp_path, phantom, tiny_weights, capsys, monkeypatch
):
    # A gantry-tilted scan stored with its shear (axes 15° from perpendicular) in an .mha: no NIfTI mask
    # can lie on its grid, so it is refused when read, not after the networks ran (nor written skewed).
    image = sitk.GetImageFromArray(phantom.ct.hu)
    image.SetSpacing(phantom.ct.geometry.spacing_mm)
    shear = np.tan(np.deg2rad(15))
    image.SetDirection((1, 0, 0, 0, 1, shear / np.hypot(1, shear), 0, 0, 1 / np.hypot(1, shear)))
    path = tmp_path / "sheared.mha"
    sitk.WriteImage(image, str(path))
    ran = []
    monkeypatch.setattr("napari_chsnet.report.case.segment_case", lambda *a, **k: ran.append(1))
    assert segment(path, "-o", tmp_path / "out", weights=tiny_weights) == 2
    one_error_line(capsys, "sheared.mha", "15.00° from perpendicular", "resample")
    assert ran == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("spacing", "found"),
    [
        ((0.0008, 0.0008, 0.0025), "0.0008 × 0.0008 mm in-plane, 0.0025 mm between slices"),  # metres
        ((2.5, 2.5, 5000.0), "2.5 × 2.5 mm in-plane, 5000 mm between slices"),  # micrometres
    ],
    ids=["metres", "micrometre-slices"],
)
def test_a_voxel_size_no_chest_ct_has_is_one_line_before_the_networks_run(
    tmp_path, phantom, tiny_weights, capsys, monkeypatch, spacing, found
):
    """The sample CT saved with its spacing in metres: the lung stage ran, then the post-processing's
    15 mm closing padded 19,000 pixels and ended in a MemoryError traceback, exit 1."""
    image = sitk.GetImageFromArray(phantom.ct.hu)
    image.SetSpacing(spacing)
    path = tmp_path / "scan.mha"
    sitk.WriteImage(image, str(path))
    built = []
    monkeypatch.setattr("napari_chsnet.inference.pipeline.build_stages", lambda *a: built.append(1))
    assert segment(path, "-o", tmp_path / "out", "--model", "rdunet", weights=tiny_weights) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert error[0].startswith(f"chsnet: error: {path}: voxel size {found}")
    assert "units" in error[0] and "Traceback" not in error[0]
    assert built == [] and not list((tmp_path / "out").glob("**/*.nii.gz"))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _set_of(folder, source, *names: str):
    """A weights folder holding only ``names`` copied from ``source``."""
    folder.mkdir()
    for name in names:
        shutil.copy(source / name, folder)
    return folder


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
        (["--batch-size", "0"], "argument --batch-size: expected a whole number >= 1, got 0"),
        (["--batch-size", "four"], "expected a whole number >= 1, got 'four'"),
        (["--model", "unet"], "argument --model: invalid choice"),
        (["--overlapping-tiles"], "overlapping tiles are for EAMC, whose members read the crop in tiles"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, ras_nifti, capsys, args, fragment):
    assert main(["segment", str(ras_nifti), "-o", str(tmp_path / "o"), *args]) == 2
    one_error_line(capsys, fragment)


def test_an_absent_device_is_refused(tmp_path, ras_nifti, tiny_weights, capsys):
    if "cuda" in available_devices():
        pytest.skip("this machine has CUDA")
    assert (
        main(
            [
                "segment",
                str(ras_nifti),
                "-o",
                str(tmp_path / "o"),
                "--device",
                "cuda",
                "--weights",
                str(tiny_weights),
            ]
        )
        == 2
    )
    one_error_line(capsys, "device 'cuda' is not available")


@pytest.mark.parametrize(
    ("weights_of", "fragment"),
    [
        (
            lambda tiny, tmp: tiny / "rdunet.safetensors",
            "holds a 'rdunet' network, not the 'chsnet' asked for",
        ),
        (lambda tiny, tmp: _write(tmp / "model.pt", b"\x80\x04pickle"), "is not a napari-chsnet checkpoint"),
        (lambda tiny, tmp: tmp / "nowhere", "does not exist"),
        (
            lambda tiny, tmp: _set_of(tmp / "rdunet_set", tiny, "rdunet.safetensors"),
            "has no chsnet.safetensors (it holds rdunet weights)",
        ),
    ],
)
def test_foreign_weights_are_refused(tmp_path, ras_nifti, tiny_weights, capsys, weights_of, fragment):
    assert segment(ras_nifti, "-o", tmp_path / "o", weights=weights_of(tiny_weights, tmp_path)) == 2
    one_error_line(capsys, fragment)


def test_input_and_sample_exclude_each_other(tmp_path, ras_nifti, capsys):
    assert main(["segment", str(ras_nifti), "--sample", "-o", str(tmp_path)]) == 2
    one_error_line(capsys, "not both")
    assert main(["segment", "-o", str(tmp_path)]) == 2
    one_error_line(capsys, "--sample")


def test_missing_bundled_weights_are_one_clear_line(tmp_path, ras_nifti, capsys, monkeypatch):
    empty = tmp_path / "bundled"  # an installation whose resources/weights/ is empty
    empty.mkdir()
    monkeypatch.setattr(weights_module, "bundled_weights_dir", lambda: empty)
    _never_read(monkeypatch)  # the weights are checked before any scan is read
    assert main(["segment", str(ras_nifti), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert error[0].startswith("chsnet: error: no bundled weights for chsnet")
    assert str(empty / "chsnet.safetensors") in error[0] and "chsnet train" in error[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_readme_main_job_runs_on_the_bundled_sample(tmp_path):
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()} yet (filled by training)")
    assert main(["segment", "--sample", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTPUTS)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["case"] == "sample" and report["lungs"]["right"]["volume_ml"] > 0


def test_info_names_the_weights_locations(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path / "home"))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(bundled_weights_dir()) in out and str(tmp_path / "home" / "weights") in out
    assert "cpu" in out and "torch" in out
    assert "cpu precision float32 (CHSNET_CPU_BF16=0: float32)" in out  # the suite pins float32 (conftest)
    for path in sorted(bundled_weights_dir().glob("*.safetensors")):  # each bundled file with its hash
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.name in out and f"sha256 {digest}" in out


def test_help_and_version_exit_0(capsys):
    assert main(["--version"]) == 0
    assert main(["segment", "--help"]) == 0
    assert main([]) == 2


def test_a_scan_stored_as_8bit_values_is_converted_and_warned_about(
    tmp_path, phantom, tiny_weights, capsys, windowed_8bit
):
    """The phantom exported through a lung window to 0-255, as some public volumes are."""
    image = sitk.GetImageFromArray(windowed_8bit(phantom.ct.hu))
    image.SetSpacing(tuple(reversed(phantom.ct.geometry.spacing_zyx)))
    path = tmp_path / "windowed.nii.gz"
    sitk.WriteImage(image, str(path))

    assert segment(path, "-o", tmp_path / "auto", weights=tiny_weights) == 0
    err = capsys.readouterr().err
    assert "chsnet: warning: windowed: the values are not Hounsfield units" in err
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    assert report["input_intensity"] == "display8"
    assert any("8-bit display values" in w for w in report["warnings"])

    assert segment(path, "-o", tmp_path / "as_hu", "--intensity", "hu", weights=tiny_weights) == 0
    as_hu = json.loads((tmp_path / "as_hu" / "report.json").read_text())
    assert as_hu["input_intensity"] == "hu"
    assert not any("Hounsfield" in w for w in as_hu["warnings"])
    assert main(["segment", str(path), "-o", str(tmp_path / "x"), "--intensity", "8bit"]) == 2
    one_error_line(capsys, "argument --intensity: invalid choice: '8bit'")


def test_an_unusable_output_folder_is_refused_before_any_scan(tmp_path, ras_nifti, tiny_weights, capsys):
    (tmp_path / "afile").write_text("x")
    assert segment(ras_nifti, "-o", tmp_path / "afile" / "out", weights=tiny_weights) == 2
    one_error_line(capsys, "cannot create output folder", "afile")


def test_case_names_never_leave_outdir_or_hit_the_csv(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "report.csv").mkdir()
    monkeypatch.chdir(tmp_path / "a" / "b")
    cases = plan_cases([Path("."), Path(".."), tmp_path / "report.csv"], False, tmp_path / "out")
    assert [case.name for case in cases] == ["b", "a", "report.csv_case"]
    assert all(case.folder.parent == tmp_path / "out" for case in cases)


def test_case_names_differing_only_in_case_get_their_own_folders(tmp_path):
    # On case-insensitive file systems (macOS, Windows) CT and ct would be one folder.
    cases = plan_cases([tmp_path / "a" / "CT.nii.gz", tmp_path / "b" / "ct.nii.gz"], False, tmp_path / "out")
    assert [case.name for case in cases] == ["CT", "ct_2"]
    assert len({str(case.folder).casefold() for case in cases}) == 2


def test_a_failed_overwrite_keeps_the_old_set_and_the_batch_goes_on(
    tmp_path, ras_nifti, dicom_folder, tiny_weights, monkeypatch, capsys
):
    import napari_chsnet.report as report_module

    out = tmp_path / "out"
    assert segment(ras_nifti, dicom_folder, "-o", out, "--model", "rdunet", weights=tiny_weights) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.parent != out}
    real_pdf, calls = report_module.write_report_pdf, []

    def disk_full_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device", str(args[0]))
        return real_pdf(*args, **kwargs)

    monkeypatch.setattr(report_module, "write_report_pdf", disk_full_once)
    args = (ras_nifti, dicom_folder, "-o", out, "--model", "rdunet", "--overwrite")
    assert segment(*args, weights=tiny_weights) == 2
    err = capsys.readouterr().err
    assert "case_ras:" in err and "No space left on device" in err
    assert "1 of 2 cases failed" in err
    first = {p: t for p, t in before.items() if p.parent.name == "case_ras"}
    assert {p: p.stat().st_mtime_ns for p in first} == first  # the old set is whole
    assert all(p.stat().st_mtime_ns != t for p, t in before.items() if p.parent.name == "series_a")
    assert sorted(p.name for p in out.iterdir()) == ["case_ras", "report.csv", "series_a"]  # no staging left


def _never_read(monkeypatch):
    """Fail the test if a scan is read: the refusal must come first."""
    import napari_chsnet.cli.segment as segment_module

    def refuse(*args, **kwargs):
        raise AssertionError("a scan was read before the refusal")

    monkeypatch.setattr(segment_module, "_read", refuse)


def test_a_csv_path_that_is_a_folder_is_refused_before_any_scan(
    tmp_path, ras_nifti, dicom_folder, tiny_weights, monkeypatch, capsys
):
    """It was found only after every case was segmented ('2 of 2 cases failed; the others were written')."""
    out = tmp_path / "out"
    (out / "report.csv").mkdir(parents=True)
    _never_read(monkeypatch)
    assert segment(ras_nifti, dicom_folder, "-o", out, "--model", "rdunet", weights=tiny_weights) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report.csv" in err[0] and "folder" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["report.csv"]


def test_overwrite_replaces_the_case_row_of_the_csv(tmp_path, ras_nifti, dicom_folder, tiny_weights):
    out = tmp_path / "out"
    args = (ras_nifti, dicom_folder, "-o", out, "--model", "rdunet")
    assert segment(*args, weights=tiny_weights) == 0
    first = list(csv.DictReader((out / "report.csv").open()))
    assert segment(*args, "--overwrite", weights=tiny_weights) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [row["case"] for row in rows] == ["case_ras", "series_a"]  # replaced, not appended
    for row, old, case in zip(rows, first, ("case_ras", "series_a"), strict=True):
        assert row["timestamp"] == json.loads((out / case / "report.json").read_text())["timestamp"]
        assert row["timestamp"] >= old["timestamp"]
    refused = segment(ras_nifti, "-o", out / "case_ras", "--model", "rdunet", weights=tiny_weights)
    assert refused == 2  # without --overwrite nothing changes: existing outputs are refused


def test_a_batch_rerun_without_overwrite_still_appends(tmp_path, ras_nifti, dicom_folder, tiny_weights):
    out = tmp_path / "out"
    assert segment(ras_nifti, "-o", out / "one", "--model", "rdunet", weights=tiny_weights) == 0
    shutil.copy(out / "one" / "report.csv", out / "report.csv")  # a row of case_ras from elsewhere
    assert segment(ras_nifti, dicom_folder, "-o", out, "--model", "rdunet", weights=tiny_weights) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [row["case"] for row in rows] == ["case_ras", "case_ras", "series_a"]


def test_the_same_input_twice_is_refused_before_any_work(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    _never_read(monkeypatch)
    out = tmp_path / "out"
    assert segment(ras_nifti, ras_nifti, "-o", out, weights=tiny_weights) == 2
    one_error_line(capsys, str(ras_nifti), "given twice")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(ras_nifti)
    other_spelling = ras_nifti.parent / ".." / ras_nifti.parent.name / ras_nifti.name
    for again in (link, other_spelling):
        assert segment(ras_nifti, again, "-o", out, weights=tiny_weights) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_failed_case_leaves_no_empty_folder_but_keeps_the_users(tmp_path, ras_nifti, tiny_weights, capsys):
    broken = _write(tmp_path / "broken.nii.gz", b"not gzip at all")
    damaged = _write(tmp_path / "damaged.nii.gz", b"not gzip either")
    out = tmp_path / "out"
    (out / "damaged").mkdir(parents=True)  # the user's (empty) folder: not this run's to remove
    assert segment(ras_nifti, broken, damaged, "-o", out, "--model", "rdunet", weights=tiny_weights) == 2
    assert "2 of 3 cases failed" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["case_ras", "damaged", "report.csv"]
    assert segment(broken, damaged, "-o", tmp_path / "none", weights=tiny_weights) == 2
    assert "all 2 cases failed; report.csv lists their errors" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["report.csv"]
    deep = tmp_path / "new" / "deeper" / "out"  # parents this run made go too, the user's stay
    assert segment(broken, "-o", deep, weights=tiny_weights) == 2
    assert not (tmp_path / "new").exists() and tmp_path.exists()


def test_a_failure_never_replaces_the_row_of_a_case_whose_files_are_still_there(
    tmp_path, ras_nifti, tiny_weights, capsys
):
    other = shutil.copy(ras_nifti, tmp_path / "other.nii.gz")
    out = tmp_path / "out"
    assert segment(ras_nifti, other, "-o", out, "--model", "rdunet", weights=tiny_weights) == 0
    other.write_bytes(b"not gzip any more")
    assert segment(ras_nifti, other, "-o", out, "--model", "rdunet", "--overwrite", weights=tiny_weights) == 2
    rows = [(r["case"], r["status"]) for r in csv.DictReader((out / "report.csv").open())]
    assert rows == [("case_ras", "ok"), ("other", "ok"), ("other", "failed")]
    assert (out / "other" / "report.json").is_file()  # the row still describes these files


def test_an_anonymised_batch_keeps_patient_ids_out_of_a_failed_row(
    tmp_path, ras_nifti, phantom, tiny_weights
):
    """The error of a folder of two patients named their PatientIDs in the anonymised CSV."""
    from cli.dicom_series import STUDY_FIELDS, write_dicom_series

    two = tmp_path / "two_patients"
    write_dicom_series(two / "a", phantom.ct.hu[:3], fields={**STUDY_FIELDS, "PatientID": "MRN-1111"})
    write_dicom_series(two / "b", phantom.ct.hu[:3], fields={**STUDY_FIELDS, "PatientID": "MRN-2222"})
    out = tmp_path / "out"
    assert segment(ras_nifti, two, "-o", out, "--anonymize", "--model", "rdunet", weights=tiny_weights) == 2
    failed = list(csv.DictReader((out / "report.csv").open()))[1]
    assert failed["status"] == "failed" and "2 patients" in failed["error"]
    assert "MRN-" not in (out / "report.csv").read_text() and str(tmp_path) not in failed["error"]


def test_an_anonymised_batch_names_a_failed_case_without_its_folder_name_and_replaces_it_later(
    tmp_path, ras_nifti, tiny_weights
):
    """The failed row kept the folder (the patient's) name, and the rerun's hashed row never replaced it."""
    patient = tmp_path / "DOE_JANE.nii.gz"
    patient.write_bytes(b"not gzip at all")
    out = tmp_path / "out"
    args = (ras_nifti, patient, "-o", out, "--anonymize", "--model", "rdunet")
    assert segment(*args, weights=tiny_weights) == 2
    csv_path = out / "report.csv"
    assert [r["status"] for r in csv.DictReader(csv_path.open())] == ["ok", "failed"]
    assert "DOE_JANE" not in csv_path.read_text()
    shutil.copy(ras_nifti, patient)  # the input fixed, the batch run again
    assert segment(*args, "--overwrite", weights=tiny_weights) == 0
    # one row per input; the written case keeps its name: a NIfTI file has no patient fields to check
    # it against (docs/report.md: name inputs accordingly)
    assert [r["status"] for r in csv.DictReader(csv_path.open())] == ["ok", "ok"]


def test_a_batch_csv_has_one_row_per_input_failed_ones_included(tmp_path, ras_nifti, tiny_weights, capsys):
    """A failed case was simply missing from the CSV; a rerun that succeeds replaces its row."""
    broken = _write(tmp_path / "broken.nii.gz", b"not gzip at all")
    damaged = _write(tmp_path / "damaged.nii.gz", b"not gzip either")
    out = tmp_path / "out"
    assert segment(broken, damaged, "-o", out, "--model", "rdunet", weights=tiny_weights) == 2
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["case"], r["status"]) for r in rows] == [("broken", "failed"), ("damaged", "failed")]
    assert "broken.nii.gz cannot be read" in rows[0]["error"] and rows[0]["overall_grade"] == ""
    shutil.copy(ras_nifti, broken)  # one input fixed, the batch run again (no outputs exist yet)
    capsys.readouterr()
    assert segment(broken, damaged, "-o", out, "--model", "rdunet", weights=tiny_weights) == 2
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["case"], r["status"]) for r in rows] == [("broken", "ok"), ("damaged", "failed")]
    fixed = rows[0]
    assert fixed["threshold"] == "0.500" and fixed["spacing_z_mm"] and fixed["error"] == ""
    warnings = json.loads((out / "broken" / "report.json").read_text())["warnings"]
    assert int(fixed["n_warnings"]) == len(warnings) and fixed["warnings"] == " | ".join(warnings)


def test_an_unreadable_input_says_so(tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys):
    """It was reported as 'does not exist … damaged' by the reader."""
    import os

    locked = tmp_path / "locked.nii.gz"
    shutil.copy(ras_nifti, locked)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: let os.access answer as it does for other users
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    _never_read(monkeypatch)
    try:
        assert segment(locked, "-o", tmp_path / "out", weights=tiny_weights) == 2
        line = one_error_line(capsys, "cannot read", str(locked), "permission denied")
        assert "does not exist" not in line and "damaged" not in line
    finally:
        locked.chmod(0o644)


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path, ras_nifti, tiny_weights):
    """`timeout` and SLURM send SIGTERM: it left OUTDIR/.chsnet-staging-*/ with partial files."""
    import signal
    import time

    out, started = tmp_path / "out", tmp_path / "writing_pdf"
    args = ["segment", str(ras_nifti), "-o", str(out), "--model", "rdunet"]
    args += ["--device", "cpu", "--weights", str(tiny_weights)]
    code = (
        "import sys, time, pathlib\n"
        "import napari_chsnet.report as report\n"
        "def stuck(*args, **kwargs):\n"
        f"    pathlib.Path({str(started)!r}).touch()\n"
        "    time.sleep(120)\n"
        "report.write_report_pdf = stuck\n"
        "from napari_chsnet.cli import run\n"
        f"sys.argv[1:] = {args!r}\n"
        "run()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not started.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), child.communicate(timeout=60)
        assert list(out.glob(".chsnet-staging-*/lungs.nii.gz"))  # the partial set is there now
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err, err
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def test_info_says_that_segment_needs_weights_for_the_active_version(monkeypatch, tmp_path, capsys):
    home = tmp_path / "home"
    version = home / "weights" / "chsnet" / "20261205-090045"
    version.mkdir(parents=True)
    (version / "version.json").write_text(json.dumps({"model": "chsnet", "cases": ["p001"]}))
    (home / "weights" / "active.json").write_text(json.dumps({"chsnet": "20261205-090045"}))
    monkeypatch.setenv("CHSNET_HOME", str(home))
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "chsnet: 1 fine-tuned" in line)
    assert "active in napari: 20261205-090045" in line
    assert f"chsnet segment uses it only when given: chsnet segment --weights {version}" in line
    assert "bundled" in line
    # an RD-UNet version: without --model rdunet the command ran CHS-Net (the set's chsnet copy)
    rdunet = home / "weights" / "rdunet" / "20261205-100000"
    rdunet.mkdir(parents=True)
    (rdunet / "version.json").write_text(json.dumps({"model": "rdunet", "cases": ["p001"]}))
    (home / "weights" / "active.json").write_text(json.dumps({"rdunet": "20261205-100000"}))
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "rdunet: 1 fine-tuned" in line)
    assert f"uses it only when given: chsnet segment --model rdunet --weights {rdunet}" in line
    (home / "weights" / "active.json").write_text(json.dumps({"chsnet": "bundled"}))
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "chsnet: 1 fine-tuned" in line)
    assert "none active" in line and "--weights" not in line


@pytest.mark.parametrize("command", ["segment", "evaluate", "train", "finetune"])
def test_help_shows_no_empty_defaults(command, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for noise in ("(default: None)", "(default: [])", "(default: False)"):
        assert noise not in text, (noise, text)
    if command == "finetune":
        assert text.count("(default: bundled)") == 1 and "(default: 5)" in text
    if command == "segment":
        assert "(default: 0.5)" in text and "report.csv rows of a case" in text


def test_the_help_says_what_the_threshold_and_a_weights_folder_mean_for_each_model(capsys):
    """--threshold was "infection probability threshold", though EAMC's mask is the members' vote; and
    --weights said any file missing from a folder came from the bundled set."""
    assert main(["segment", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "EAMC: each member's vote threshold (the mask is the members' majority vote" in text
    assert (
        "A folder must hold the --model's file (a fine-tuned set of another model is refused); only the lung stage"
        in text
    )


def test_the_summary_line_says_which_lung_is_too_small_to_grade():
    """P001 with its left lung replaced by soft tissue printed "overall CT-4 (right CT-1 3.6 %, left CT-4
    97.8 %)" from a 14 mL left fragment: the fragment is "not measured" and the overall is the right's."""
    from napari_chsnet.cli.segment import Case, _summary
    from napari_chsnet.io.volume import Geometry
    from napari_chsnet.report.severity import compute_severity

    lungs = np.zeros((10, 10, 24), dtype=np.uint8)
    lungs[:, :, :10], lungs[:2, :2, 14:16] = 1, 2
    infection = np.zeros_like(lungs)
    infection[:1, :, :10], infection[:2, :2, 14:16] = 1, 1
    severity = compute_severity(lungs, infection, Geometry(spacing_mm=(1.0, 1.0, 2000.0)), min_lesion_ml=0.0)
    report = {**severity.to_dict(), "device": "cpu"}
    line = _summary(Case("p001", None, Path("out/p001")), report)
    assert line.startswith("p001: overall CT-1 (right CT-1 10.0 %, left not measured: 16.0 mL) on cpu")
    # a reduced precision is named (bfloat16 on a CPU with AMX, float16 on a GPU); float32 is not
    for precision, words in (("bfloat16 autocast", "on cpu, bfloat16 → "), ("float32", "on cpu → ")):
        line = _summary(
            Case("p001", None, Path("out")), {**report, "inference_options": {"precision": precision}}
        )
        assert words in line, line
