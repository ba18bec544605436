"""io/atomic.py's promises: a file is written whole or not at all, its temporary file is its own and never
outlives a failure (Ctrl-C included), and a replaced folder is never lost when its replacement fails."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from napari_chsnet.io import atomic
from napari_chsnet.io.atomic import atomic_write, replace_folder

FIXED = uuid.UUID(int=0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0)


def _write_text(text: str):
    def write(temporary: Path) -> None:
        temporary.write_text(text)

    return write


def test_the_temporary_file_is_created_exclusively_so_another_writers_file_is_never_taken(
    tmp_path, monkeypatch
):
    # Two writers that drew the same hidden name: the second must not truncate and rename the first's file.
    monkeypatch.setattr(atomic, "uuid", SimpleNamespace(uuid4=lambda: FIXED))
    theirs = tmp_path / f".{FIXED.hex[:12]}.part.report.json"
    theirs.write_text("another writer's half-written file")
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "report.json", _write_text("mine"))
    assert theirs.read_text() == "another writer's half-written file"
    assert not (tmp_path / "report.json").exists()


def test_ctrl_c_during_a_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    # KeyboardInterrupt (and SIGTERM's Terminated, a subclass) is no Exception: the cleanup must still run.
    target = tmp_path / "lungs.nii.gz"
    target.write_bytes(b"the previous run's mask")

    def interrupted(temporary: Path) -> None:
        temporary.write_bytes(b"half a mask")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["lungs.nii.gz"]
    assert target.read_bytes() == b"the previous run's mask"


def test_a_failed_write_removes_its_temporary_even_where_the_folder_cannot_be_listed(tmp_path, monkeypatch):
    # In a folder one may write but not list (mode 0o333, a drop box) pathlib's glob finds nothing, so
    # the sweep of the writer's side files cannot be what removes the temporary file itself.
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter(()))

    def fails(temporary: Path) -> None:
        temporary.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "report.pdf", fails)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_successful_write_leaves_only_the_file(tmp_path):
    atomic_write(tmp_path / "LUNGS.MHA", _write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["LUNGS.MHA"]
    assert (tmp_path / "LUNGS.MHA").read_text() == "new"


def test_a_folder_whose_replacement_fails_is_put_back(tmp_path):
    # The staging folder is gone (removed by a cleanup beside this one, or on another file system):
    # the rename fails, and the saved correction it was to replace must still be where it was.
    target = tmp_path / "case"
    target.mkdir()
    (target / "lungs.nii.gz").write_text("a radiologist's correction")
    with pytest.raises(FileNotFoundError):
        replace_folder(tmp_path / ".case.staging", target)
    assert (target / "lungs.nii.gz").read_text() == "a radiologist's correction"
    assert [p.name for p in tmp_path.iterdir()] == ["case"]  # nothing set aside is left behind


def test_a_folder_replacement_swaps_the_contents_and_keeps_nothing_aside(tmp_path):
    target, staging = tmp_path / "case", tmp_path / ".case.staging"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_folder(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["case"]
