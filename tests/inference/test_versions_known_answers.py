"""``refuse_protected_target`` compares real places, not spellings: a symlink or a relative path to the
base or bundled weights set is that set, and is refused as it (docs: the base weights and the bundled set
are only read, never written into, over or around, even with --overwrite)."""

from __future__ import annotations

import pytest

from napari_chsnet.errors import OutputExistsError
from napari_chsnet.inference.versions import refuse_protected_target
from napari_chsnet.training.finetune_output import target_folder


@pytest.fixture
def weights_set(tmp_path):
    """A read-only weights set (stands for the bundled or base set) and a symlink to it."""
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "chsnet.safetensors").write_bytes(b"shipped weights")
    link = tmp_path / "link_to_weights"
    link.symlink_to(folder, target_is_directory=True)
    return folder, link


@pytest.mark.parametrize("inside", ["", "tuned"], ids=["at", "inside"])
def test_a_target_reached_through_a_symlink_is_refused(weights_set, inside):
    folder, link = weights_set
    target = link / inside if inside else link
    with pytest.raises(OutputExistsError, match="only read, never written"):
        refuse_protected_target(target, [folder])


def test_a_relative_target_is_the_folder_it_names(weights_set, tmp_path, monkeypatch):
    # `chsnet train -o weights` run from the folder holding the set: the same place as its absolute path.
    folder, _link = weights_set
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputExistsError, match="only read, never written"):
        refuse_protected_target(type(folder)("weights"), [folder])


def test_a_protected_folder_given_through_a_symlink_still_guards_the_real_folder(weights_set):
    # --weights link_to_weights: the base set's real folder must not receive the output.
    folder, link = weights_set
    with pytest.raises(OutputExistsError, match="only read, never written"):
        refuse_protected_target(folder / "tuned", [link])


def test_a_protected_folder_given_relative_still_guards_it(weights_set, tmp_path, monkeypatch):
    folder, _link = weights_set
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputExistsError, match="only read, never written"):
        refuse_protected_target(folder / "tuned", [type(folder)("weights")])


def test_finetune_refuses_an_output_in_a_base_set_named_through_a_symlink(weights_set):
    # chsnet finetune --weights link_to_weights/chsnet.safetensors -o <the real set>/tuned
    folder, link = weights_set
    with pytest.raises(OutputExistsError, match="only read, never written"):
        target_folder("chsnet", folder / "tuned", False, link / "chsnet.safetensors")
    assert sorted(p.name for p in folder.iterdir()) == ["chsnet.safetensors"]


def test_an_unrelated_folder_beside_the_set_is_allowed(weights_set, tmp_path):
    # the known answer on the other side: a sibling (same prefix) is neither at, inside nor above it
    folder, link = weights_set
    refuse_protected_target(tmp_path / "weights2", [folder, link])
    refuse_protected_target(tmp_path / "elsewhere" / "tuned", [folder, link])
