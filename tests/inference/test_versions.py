"""Weights versions in the user folder, revert to bundled, and saved corrections."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from napari_chsnet.errors import InvalidVolumeError, WeightsError
from napari_chsnet.inference import versions
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.corrections import CorrectedCase, save_correction, saved_corrections
from napari_chsnet.training.datasets import read_corrections


def _fake_version(model, name, **info):
    folder = versions.user_weights_dir() / model / name
    folder.mkdir(parents=True)
    (folder / "version.json").write_text(json.dumps({"model": model, "cases": ["P1"], **info}))
    return folder


def test_user_folder_follows_chsnet_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path))
    assert versions.user_weights_dir() == tmp_path / "weights"
    assert versions.corrections_dir() == tmp_path / "corrections"


def test_versions_are_listed_newest_first_and_revert_deletes_nothing():
    old = _fake_version("chsnet", "20240101-120000", dice_before=0.5, dice_after=0.7)
    new = _fake_version("chsnet", "20240202-120000", dice_before=0.7, dice_after=0.8)
    (versions.user_weights_dir() / "chsnet" / ".20240303-000000.tmp").mkdir()  # an unfinished fine-tune
    listed = versions.list_versions("chsnet")
    assert [v.path for v in listed] == [new, old]
    assert listed[0].label() == "20240202-120000  P1  Dice 0.700 → 0.800"
    assert versions.active_weights_dir("chsnet") == bundled_weights_dir()
    assert versions.set_active("chsnet", new.name) == new
    assert versions.active_weights_dir("chsnet") == new
    assert versions.active_weights_dir("rdunet") == bundled_weights_dir()
    assert versions.set_active("chsnet", versions.BUNDLED) == bundled_weights_dir()
    assert versions.active_choice("chsnet") == "bundled" and new.exists() and old.exists()


def test_unknown_version_is_refused_with_the_known_ones():
    _fake_version("rdunet", "20240101-120000")
    with pytest.raises(WeightsError, match="versions: 20240101-120000"):
        versions.set_active("rdunet", "20990101-000000")


def test_saved_correction_round_trips_with_its_edited_slices(tmp_path, phantom):
    case = CorrectedCase(
        phantom.ct, phantom.lungs, phantom.infection, "patient 7/ct", (5, 2, 2), lungs_edited=True
    )
    folder = save_correction(case, tmp_path)
    assert folder.name == "patient_7_ct" and saved_corrections(tmp_path) == [folder]
    loaded = CorrectedCase.from_folder(folder)
    assert loaded.edited_slices == (2, 5) and loaded.lungs_edited
    assert np.array_equal(loaded.lungs, phantom.lungs) and np.array_equal(loaded.infection, phantom.infection)
    assert np.array_equal(loaded.ct.hu, phantom.ct.hu)
    # the training reader sees the same slices
    assert [s.source.split("#")[1] for s in read_corrections(folder)] == ["z=2", "z=5"]
    assert saved_corrections(tmp_path, exclude=["patient_7_ct"]) == []
    # the case's own name (as the napari tab passes it) excludes its folder too: no self-replay
    assert saved_corrections(tmp_path, exclude=["patient 7/ct"]) == []


def test_masks_off_the_ct_grid_are_refused(phantom):
    with pytest.raises(InvalidVolumeError, match="CT's voxel grid"):
        CorrectedCase(phantom.ct, phantom.lungs[:-1], phantom.infection, "bad")
    with pytest.raises(InvalidVolumeError, match="outside"):
        CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "bad", (99,))


def _other_ct(phantom):
    """Another patient's scan on the same grid (its file has the same name, say ct.nii.gz)."""
    return dataclasses.replace(phantom.ct, hu=phantom.ct.hu + 7)


def test_a_different_ct_of_the_same_name_never_replaces_a_saved_correction(tmp_path, phantom):
    first = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "ct", (2,))
    second = CorrectedCase(_other_ct(phantom), phantom.lungs, np.zeros_like(phantom.infection), "ct", (3,))
    assert save_correction(first, tmp_path).name == "ct"
    assert save_correction(second, tmp_path).name == "ct-2"

    # saving the same CT again updates its own folder (merged: the slices edited before stay edited)
    first.edited_slices = (4,)
    assert save_correction(first, tmp_path).name == "ct"
    assert save_correction(second, tmp_path).name == "ct-2"
    assert saved_corrections(tmp_path) == [tmp_path / "ct", tmp_path / "ct-2"]
    assert CorrectedCase.from_folder(tmp_path / "ct").edited_slices == (2, 4)
    kept = CorrectedCase.from_folder(tmp_path / "ct-2")
    assert np.array_equal(kept.ct.hu, second.ct.hu) and kept.edited_slices == (3,)
    with pytest.raises(InvalidVolumeError, match="this CT's correction is already saved in .*ct$"):
        save_correction(first, tmp_path, overwrite=False)


def test_a_correction_saved_before_fingerprints_is_kept_and_readable(tmp_path, phantom):
    case = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "ct", (2,))
    old = save_correction(case, tmp_path)
    (old / "edited_slices.json").write_text(json.dumps({"slices": [2], "lungs_edited": False}))

    # unknown CT: it may be another patient's, so it is left alone
    assert save_correction(case, tmp_path).name == "ct-2"
    assert CorrectedCase.from_folder(old).edited_slices == (2,)
    assert [s.source.split("#")[1] for s in read_corrections(old)] == ["z=2"]
