"""Where a fine-tune's new set goes (``target_folder``): never into the bundled set, never over an earlier
fine-tune without --overwrite, and never over the version made in the same second when no -o is given
(``replace_folder`` would delete that one once the new set is in place)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from napari_chsnet.errors import OutputExistsError
from napari_chsnet.inference.versions import user_weights_dir
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training import finetune_output
from napari_chsnet.training.finetune_output import target_folder


@pytest.fixture
def base_file(tmp_path):
    """A user's base weights set outside the bundled folder (--weights other/chsnet.safetensors)."""
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "chsnet.safetensors").write_bytes(b"base weights")
    return folder / "chsnet.safetensors"


def _earlier_finetune(folder):
    folder.mkdir(parents=True)
    (folder / "version.json").write_text(json.dumps({"model": "chsnet", "cases": ["P1"]}))
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_inside_the_bundled_set_is_refused_when_the_base_is_elsewhere(base_file, overwrite):
    # -o <bundled>/tuned with --weights elsewhere: a new folder, so no "exists" check stops it; only the
    # bundled folder's own guard does (target_folder only names the place: nothing is written here).
    with pytest.raises(OutputExistsError, match="only read, never written"):
        target_folder("chsnet", bundled_weights_dir() / "tuned", overwrite, base_file)
    assert not (bundled_weights_dir() / "tuned").exists()


def test_an_earlier_finetune_is_not_replaced_without_overwrite(tmp_path, base_file):
    # A folder holding version.json passes the "not a fine-tuned set" check, so only the overwrite
    # check keeps the user's earlier version.
    earlier = _earlier_finetune(tmp_path / "tuned")
    with pytest.raises(
        OutputExistsError, match=r"tuned exists; choose another output folder or pass --overwrite"
    ):
        target_folder("chsnet", earlier, False, base_file)
    assert target_folder("chsnet", earlier, True, base_file) == earlier  # the other side: --overwrite


def test_two_finetunes_in_one_second_get_their_own_version_folders(base_file, monkeypatch):
    class FixedClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 5, 6, 7, 8, 9)

    monkeypatch.setattr(finetune_output, "datetime", FixedClock)
    versions = user_weights_dir() / "chsnet"
    assert target_folder("chsnet", None, False, base_file) == versions / "20240506-070809"
    _earlier_finetune(versions / "20240506-070809")
    assert target_folder("chsnet", None, False, base_file) == versions / "20240506-070809-2"
    _earlier_finetune(versions / "20240506-070809-2")
    assert target_folder("chsnet", None, False, base_file) == versions / "20240506-070809-3"
