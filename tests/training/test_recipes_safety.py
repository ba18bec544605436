"""``run_training``'s own promises, for the callers that skip the CLI (``python -m
napari_chsnet.training.recipes``, which torchrun runs): the bundled weights set is never written into,
at or around; Ctrl-C exits 130 in one line; a run refused after the write check leaves no folder it
made."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from napari_chsnet.errors import ConfigError, OutputExistsError
from napari_chsnet.interrupts import INTERRUPTED_EXIT
from napari_chsnet.training import recipes
from napari_chsnet.training.config import load_config

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


def quiet(_message: str) -> None:
    pass


@pytest.fixture
def fake_bundled(tmp_path, monkeypatch):
    """A stand-in for the shipped weights folder (a mutant must never reach the real one)."""
    folder = tmp_path / "resources" / "weights"
    folder.mkdir(parents=True)
    (folder / "chsnet.safetensors").write_bytes(b"shipped weights")
    monkeypatch.setattr(recipes, "bundled_weights_dir", lambda: folder)
    monkeypatch.setattr(recipes, "gather_slices", lambda *a, **k: pytest.fail("data was read"))
    return folder


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("where", "overwrite"),
    [("weights", True), ("weights/run", False), ("weights/run", True), ("", True)],
    ids=["at-overwrite", "inside", "inside-overwrite", "above-overwrite"],
)
def test_run_training_refuses_the_bundled_folder_without_the_cli(tmp_path, fake_bundled, where, overwrite):
    # Under torchrun no CLI check runs first: run_training itself must refuse, even with --overwrite,
    # before any data is read or any folder is made.
    output = tmp_path / "resources" / where if where else tmp_path / "resources"
    config = dataclasses.replace(load_config(TINY_CONFIG), output=str(output))
    with pytest.raises(OutputExistsError, match="only read, never written"):
        recipes.run_training(config, log=quiet, overwrite=overwrite)
    assert _listing(fake_bundled) == ["chsnet.safetensors"]
    assert (fake_bundled / "chsnet.safetensors").read_bytes() == b"shipped weights"


def test_ctrl_c_exits_130_in_one_line(tmp_path, monkeypatch, capsys):
    # README / main's docstring: Ctrl-C ends the module entry point with 130 (128 + SIGINT), one line.
    assert INTERRUPTED_EXIT == 130

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "run_training", interrupted)
    with pytest.raises(SystemExit) as done:
        recipes.main([str(TINY_CONFIG), "--output", str(tmp_path / "run")])
    assert done.value.code == 130
    assert capsys.readouterr().err.strip() == "python -m napari_chsnet.training.recipes: interrupted"


def test_a_run_refused_by_its_data_leaves_no_folder_it_made(tmp_path, monkeypatch):
    # The write check makes output/ and its missing parents; data refused afterwards must leave the
    # disk as it was (the docstring: "a run refused later (its data) leaves nothing").
    def no_data(*args, **kwargs):
        raise ConfigError("the config's data gives no lungs training sample")

    monkeypatch.setattr(recipes, "gather_slices", no_data)
    config = dataclasses.replace(load_config(TINY_CONFIG), output=str(tmp_path / "new" / "deeper" / "run"))
    with pytest.raises(ConfigError, match="no lungs training sample"):
        recipes.run_training(config, log=quiet)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_refused_run_keeps_an_output_folder_that_was_already_there(tmp_path, monkeypatch):
    # the other side: only the folders this run made are taken back, never the user's own
    def no_data(*args, **kwargs):
        raise ConfigError("no sample")

    monkeypatch.setattr(recipes, "gather_slices", no_data)
    (tmp_path / "mine").mkdir()
    config = dataclasses.replace(load_config(TINY_CONFIG), output=str(tmp_path / "mine"))
    with pytest.raises(ConfigError):
        recipes.run_training(config, log=quiet)
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []
