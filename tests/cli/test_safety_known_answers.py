"""The command line's safety promises (README, docs/engine.md): no output is replaced without --overwrite,
even one that appeared during the run; every refusal comes before any scan is read and leaves OUTDIR as
it was; exit codes 0 done, 2 bad input, 1 internal error, 141 when stdout's reader went away."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import napari_chsnet.cli.segment as segment_module
from napari_chsnet.cli import main
from napari_chsnet.cli.segment import Case, make_output_folders, plan_cases
from napari_chsnet.errors import OutputError


def segment(*args, weights=None) -> int:
    extra = ["--device", "cpu"] + (["--weights", str(weights)] if weights is not None else [])
    return main(["segment", *map(str, args), *extra])


def one_error_line(capsys, *fragments: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("chsnet: error:"), lines
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def never_read(monkeypatch):
    """Fail the run if a scan is read: the refusal must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a scan was read before the refusal")

    monkeypatch.setattr(segment_module, "_read", refuse)


@pytest.fixture
def two_scans(tmp_path, ras_nifti):
    """Two inputs of one batch, cases "a" and "b"."""
    return [shutil.copy(ras_nifti, tmp_path / f"{name}.nii.gz") for name in ("a", "b")]


# No output replaced without --overwrite ------------------------------------------------------------------


def test_an_output_that_appeared_while_segmenting_is_not_replaced(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    # Another run (or the user) wrote report.pdf into OUTDIR after the check at the start: without
    # --overwrite it is theirs, and this run must refuse to move its set over it.
    out = tmp_path / "out"
    real = segment_module.segment_with_bar

    def another_run_writes_meanwhile(*args, **kwargs):
        result = real(*args, **kwargs)
        (out / "report.pdf").write_text("another run's report")
        return result

    monkeypatch.setattr(segment_module, "segment_with_bar", another_run_writes_meanwhile)
    assert segment(ras_nifti, "-o", out, "--model", "rdunet", weights=tiny_weights) == 2
    one_error_line(capsys, "outputs appeared while segmenting", str(out / "report.pdf"), "--overwrite")
    assert (out / "report.pdf").read_text() == "another run's report"
    assert sorted(p.name for p in out.iterdir()) == ["report.pdf"]  # no half set, no staging folder


def test_a_report_csv_with_other_columns_is_refused_before_any_scan(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    # A user's own sheet (or another version's) named report.csv: never appended to, and said before
    # the run, not after every case was segmented and written.
    out = tmp_path / "out"
    out.mkdir()
    sheet = b"patient,score\nx,1\n"
    (out / "report.csv").write_bytes(sheet)
    never_read(monkeypatch)
    assert segment(ras_nifti, "-o", out, weights=tiny_weights) == 2
    one_error_line(capsys, str(out / "report.csv"), "other columns")
    assert (out / "report.csv").read_bytes() == sheet
    assert [p.name for p in out.iterdir()] == ["report.csv"]


def test_a_case_folder_that_is_a_file_is_refused_before_anything_is_made(
    tmp_path, two_scans, tiny_weights, monkeypatch, capsys
):
    # OUTDIR/b is a file: refused by the checks, before case a's folder is made (an empty case folder
    # would look like a result) and before any scan is read.
    out = tmp_path / "out"
    out.mkdir()
    (out / "b").write_text("the user's notes")
    never_read(monkeypatch)
    assert segment(*two_scans, "-o", out, weights=tiny_weights) == 2
    one_error_line(capsys, str(out / "b"), "file")
    assert [p.name for p in out.iterdir()] == ["b"]
    assert (out / "b").read_text() == "the user's notes"


@pytest.mark.parametrize("batch", [False, True])
def test_an_output_that_is_a_file_is_refused_before_any_scan(
    tmp_path, ras_nifti, two_scans, tiny_weights, monkeypatch, capsys, batch
):
    out = tmp_path / "results"
    out.write_text("the user's file")
    never_read(monkeypatch)
    inputs = two_scans if batch else [ras_nifti]
    assert segment(*inputs, "-o", out, weights=tiny_weights) == 2
    one_error_line(capsys, str(out), "file")
    assert out.read_text() == "the user's file"


def test_an_output_folder_the_user_cannot_write_is_refused_before_any_scan(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let os.access answer as it does for other users
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != out and real_access(path, mode))
    never_read(monkeypatch)
    try:
        assert segment(ras_nifti, "-o", out, weights=tiny_weights) == 2
        one_error_line(capsys, str(out), "not writable")
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []


def test_a_file_in_the_way_of_an_output_folder_is_called_that(tmp_path):
    # Reached when the file appears after the checks (another process): it must not read as a
    # permission problem, which would send the user to chmod a file.
    out = tmp_path / "out"
    out.mkdir()
    (out / "case").write_text("x")
    with pytest.raises(OutputError, match="a file is in the way"):
        make_output_folders([Case("case", Path("case.nii.gz"), out / "case")], out)


# Case folders that a case-insensitive file system would merge ---------------------------------------------


def test_case_names_differing_only_in_case_get_their_own_folders_in_either_order(tmp_path):
    # On macOS and Windows file systems ct/ and CT/ are one folder: the second case's files would replace
    # the first's. Whichever spelling comes first, the other gets a suffix.
    cases = plan_cases([tmp_path / "a" / "ct.nii.gz", tmp_path / "b" / "CT.nii.gz"], False, tmp_path / "out")
    assert [case.name for case in cases] == ["ct", "CT_2"]
    assert len({str(case.folder).casefold() for case in cases}) == 2


def test_a_case_named_like_the_batch_csv_in_any_case_gets_another_folder(tmp_path):
    # A folder input named Report.CSV would be OUTDIR/Report.CSV, which is report.csv on those systems.
    folder = tmp_path / "Report.CSV"
    folder.mkdir()
    cases = plan_cases([folder, tmp_path / "ct.nii.gz"], False, tmp_path / "out")
    assert cases[0].folder == tmp_path / "out" / "Report.CSV_case"
    assert all(case.folder.name.casefold() != "report.csv" for case in cases)


# Exit codes and stdout ------------------------------------------------------------------------------------


def test_an_internal_error_exits_1_with_its_traceback(tmp_path, monkeypatch, capsys):
    # README: 2 is bad input (the user's to fix), 1 an internal error (a bug, to report).
    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(segment_module, "plan_cases", bug)
    assert main(["segment", "--sample", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: division by zero" in err
    assert err.strip().splitlines()[-1].startswith("chsnet: internal error (ZeroDivisionError)")


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_closed_stdout_pipe_exits_141_and_prints_nothing(tmp_path, unbuffered):
    # `chsnet info | head -0` as a shell runs it: stdout block-buffered (no PYTHONUNBUFFERED), so the
    # closed pipe shows only when stdout is flushed; unbuffered, at the first print. README: exit 141, no
    # traceback; nor Python's "Exception ignored ... BrokenPipeError" when it flushes stdout at exit.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    env["CHSNET_HOME"] = str(tmp_path / "home")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from napari_chsnet.cli import run; sys.argv[1:] = ['info']; run()",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141, stderr
    assert stderr == ""


# --overwrite replaces OUTDIR's entries, never what they point at --------------------------------------------


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_overwrite_replaces_an_output_without_writing_through_its_link(
    tmp_path, ras_nifti, tiny_weights, link
):
    # OUTDIR/lungs.nii.gz shares its data with the user's own mask (a `cp -al` / rsync --link-dest
    # snapshot, or a symlink into a dataset): the new file must take the name's place (a rename), so the
    # user's mask keeps its contents, and a reader never sees a half-copied file.
    mask = tmp_path / "dataset" / "lungs.nii.gz"
    mask.parent.mkdir()
    mask.write_bytes(b"the user's corrected mask")
    out = tmp_path / "out"
    out.mkdir()
    if link == "hard":
        os.link(mask, out / "lungs.nii.gz")
    else:
        (out / "lungs.nii.gz").symlink_to(mask)
    assert segment(ras_nifti, "-o", out, "--overwrite", "--model", "rdunet", weights=tiny_weights) == 0
    assert mask.read_bytes() == b"the user's corrected mask"
    written = out / "lungs.nii.gz"
    assert not written.is_symlink() and written.stat().st_ino != mask.stat().st_ino
    assert written.read_bytes()[:2] == b"\x1f\x8b"  # the new gzip'd NIfTI


# chsnet finetune: refusals are exit 2 and one line, before anything is made --------------------------------


def finetune(*args, weights) -> int:
    return main(["finetune", *map(str, args), "--weights", str(weights), "--device", "cpu", "--epochs", "1"])


def finetune_error_line(capsys, *fragments: str) -> None:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chsnet finetune: error:"), lines
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def never_tuned(monkeypatch):
    """Fail the run if it gets past the output check (the staging folder is the first thing made)."""
    from napari_chsnet.training import finetune as finetune_module

    def refuse(*args, **kwargs):
        raise AssertionError("the fine-tune went on past the refusal")

    monkeypatch.setattr(finetune_module, "make_staging", refuse)


def test_finetune_keeps_an_earlier_version_without_overwrite(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    # -o names an earlier fine-tune (it has version.json, so --overwrite could replace it): without
    # --overwrite it is the user's, refused in one line with exit 2.
    earlier = tmp_path / "tuned"
    earlier.mkdir()
    (earlier / "version.json").write_text('{"model": "chsnet", "cases": ["P1"]}')
    never_tuned(monkeypatch)
    case = ("--image", ras_nifti, "--lungs", ras_nifti, "--infection", ras_nifti)
    assert finetune(*case, "-o", earlier, weights=tiny_weights) == 2
    finetune_error_line(capsys, f"{earlier} exists", "--overwrite")
    assert sorted(p.name for p in earlier.iterdir()) == ["version.json"]


@pytest.mark.parametrize(
    ("given", "counts"),
    [(("--image", "--lungs"), "got 1 --image, 1 --lungs, 0 --infection"),
     (("--image", "--infection", "--infection"), "got 1 --image, 0 --lungs, 2 --infection")],
)  # fmt: skip
def test_finetune_refuses_unpaired_masks_in_one_line(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys, given, counts
):
    # README: a bad input is exit 2 and one line saying what to change (not zip's ValueError, exit 1)
    never_tuned(monkeypatch)
    args = [a for option in given for a in (option, ras_nifti)]
    assert finetune(*args, "-o", tmp_path / "out", weights=tiny_weights) == 2
    finetune_error_line(capsys, "give one --lungs and one --infection per --image", counts)
    assert not (tmp_path / "out").exists()


def test_finetune_refuses_a_corrections_file_in_one_line(
    tmp_path, ras_nifti, tiny_weights, monkeypatch, capsys
):
    # --corrections takes the panel's saved folder; a file (say the CT itself) is a bad input, said first
    never_tuned(monkeypatch)
    assert finetune("--corrections", ras_nifti, "-o", tmp_path / "out", weights=tiny_weights) == 2
    finetune_error_line(capsys, f"--corrections {ras_nifti} is not a folder", "saved by the napari panel")
    assert not (tmp_path / "out").exists()
