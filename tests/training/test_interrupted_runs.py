"""What a training run leaves behind: an existing checkpoint is refused unless overwriting, an
interrupted run keeps its best state beside (never over) the finished file, and every model keeps its
own log and metrics in a shared folder."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_chsnet.errors import ConfigError, OutputExistsError
from napari_chsnet.interrupts import Terminated
from napari_chsnet.models.checkpoints import file_sha256, load_checkpoint
from napari_chsnet.training import recipes
from napari_chsnet.training.config import config_from_dict, load_config

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


def tiny(tmp_path: Path, **changes):
    return dataclasses.replace(load_config(TINY_CONFIG), output=str(tmp_path / "run"), **changes)


def quiet(_message: str) -> None:
    pass


def interrupt_in_epoch(epoch: int, error: type[BaseException] = KeyboardInterrupt):
    """An on_step that raises ``error`` at the first step of ``epoch`` (of one fit)."""

    def on_step(step: int, total: int, loss: float) -> None:
        steps_per_epoch = total // 2  # the tiny config's 2 epochs
        if step == (epoch - 1) * steps_per_epoch + 1:
            raise error

    return on_step


def test_run_training_refuses_an_existing_checkpoint_before_reading_data(tmp_path, monkeypatch):
    """``python -m napari_chsnet.training.recipes`` (torchrun's entry point) replaced a trained checkpoint
    without a word: the refusal lived in the CLI only."""
    config = tiny(tmp_path)
    checkpoint = Path(config.output) / "chsnet.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"trained weights")
    monkeypatch.setattr(recipes, "gather_slices", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(OutputExistsError, match="chsnet.safetensors exists; .* pass --overwrite"):
        recipes.run_training(config, log=quiet)
    assert checkpoint.read_bytes() == b"trained weights"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["chsnet.safetensors"]


def test_the_module_entry_point_refuses_without_overwrite_and_replaces_with_it(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "chsnet.safetensors").write_bytes(b"trained weights")
    argv = [str(TINY_CONFIG), "--output", str(output)]
    with pytest.raises(SystemExit) as refused:
        recipes.main(argv)
    error = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and "\n" not in error and "exists" in error and "--overwrite" in error
    assert (output / "chsnet.safetensors").read_bytes() == b"trained weights"
    recipes.main([*argv, "--overwrite"])
    assert load_checkpoint(output / "chsnet.safetensors", expected_model="chsnet").metadata["role"] == "lungs"


@pytest.mark.parametrize("error", [KeyboardInterrupt, Terminated], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_keeps_its_best_epoch_beside_the_finished_name(tmp_path, error):
    """An interrupted run left only log.csv: the best state in memory was lost."""
    config = tiny(tmp_path)
    messages: list[str] = []
    with pytest.raises(error):  # the same exception goes on: the CLI's exit code tells Ctrl-C from SIGTERM
        recipes.run_training(config, on_step=interrupt_in_epoch(2, error), log=messages.append)
    output = Path(config.output)
    kept = load_checkpoint(output / "chsnet.interrupted.safetensors", expected_model="chsnet")
    metrics = kept.metadata["metrics"]
    assert (metrics["stopped"], metrics["best_epoch"], metrics["epochs_run"]) == ("interrupted", 1, 1)
    assert not (output / "chsnet.safetensors").exists()
    assert sorted(p.name for p in output.iterdir()) == [
        "chsnet.interrupted.safetensors",
        "chsnet_log.interrupted.csv",
    ]
    assert len((output / "chsnet_log.interrupted.csv").read_text().splitlines()) == 2  # header, epoch 1
    said = [m for m in messages if m.startswith("interrupted")]
    assert len(said) == 1 and "chsnet.interrupted.safetensors" in said[0] and "init_from" in said[0]


def test_the_interrupted_state_continues_with_init_from(tmp_path):
    config = tiny(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(config, on_step=interrupt_in_epoch(2), log=quiet)
    kept = Path(config.output) / "chsnet.interrupted.safetensors"
    path = recipes.run_training(dataclasses.replace(config, init_from=str(kept)), log=quiet)
    assert load_checkpoint(path).metadata["training"]["config"]["init_from"] == str(kept)


def test_an_interrupt_in_the_first_epoch_keeps_nothing_and_says_so(tmp_path):
    config = tiny(tmp_path)
    messages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(config, on_step=interrupt_in_epoch(1), log=messages.append)
    assert not list(Path(config.output).glob("*.safetensors"))
    assert "interrupted before the first epoch ended: no state to keep" in messages


def test_an_interrupted_overwrite_leaves_the_finished_run_whole(tmp_path):
    """--overwrite + SIGTERM truncated the finished run's log.csv before any new checkpoint existed."""
    config = tiny(tmp_path)
    output = Path(config.output)
    recipes.run_training(config, log=quiet)
    before = {name: file_sha256(output / name) for name in ("chsnet.safetensors", "chsnet_log.csv")}
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(config, on_step=interrupt_in_epoch(2), log=quiet, overwrite=True)
    assert {name: file_sha256(output / name) for name in before} == before
    assert (output / "chsnet.interrupted.safetensors").is_file()


def test_models_trained_into_one_folder_keep_their_own_log_and_metrics(tmp_path):
    """A second model's run replaced the first one's log.csv and metrics.json (a weights set is built
    by training several models into one folder)."""
    lungs = tiny(tmp_path, epochs=1)
    recipes.run_training(lungs, log=quiet)
    rdunet = dataclasses.replace(
        lungs, model="rdunet", stage="infection", network={"base_channels": 4, "se_reduction": 2}
    )
    recipes.run_training(rdunet, log=quiet)
    names = sorted(p.name for p in Path(lungs.output).iterdir())
    assert names == [
        "chsnet.safetensors",
        "chsnet_log.csv",
        "chsnet_metrics.json",
        "rdunet.safetensors",
        "rdunet_log.csv",
        "rdunet_metrics.json",
    ]


def tiny_ensemble(tmp_path: Path):
    return config_from_dict(
        {
            "model": "eamc",
            "network": {"base_channels": 4, "dropout": 0.0},
            "data": {"phantoms": 1, "phantom_shape": [8, 128, 128]},
            "eamc": {"members": 2, "slice_size": 128, "lesion_boxes": 1, "random_patches": 1},
            "loss": "focal",
            "epochs": 1,
            "batch_size": 8,
            "device": "cpu",
            "output": str(tmp_path / "run"),
        }
    )


def test_an_interrupted_ensemble_keeps_its_finished_members(tmp_path):
    config = tiny_ensemble(tmp_path)
    fits_started = []

    def interrupt_the_second_member(step: int, total: int, loss: float) -> None:
        fits_started.extend([step] if step == 1 else [])
        if len(fits_started) == 2:
            raise KeyboardInterrupt

    messages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(config, on_step=interrupt_the_second_member, log=messages.append)
    kept = load_checkpoint(tmp_path / "run" / "eamc.interrupted.safetensors", expected_model="eamc")
    assert len(kept.build().members) == 1
    metrics = kept.metadata["metrics"]
    assert (metrics["members_finished"], metrics["members_planned"], metrics["stopped"]) == (
        1,
        2,
        "interrupted",
    )
    assert any("the 1 finished member(s) of 2" in m for m in messages)
    assert (tmp_path / "run" / "eamc_log_member0.interrupted.csv").is_file()


def test_the_module_entry_point_turns_sigterm_into_exit_143_in_one_line(tmp_path):
    """Without a SIGTERM handler (SLURM's time limit) the process died on the spot, keeping nothing."""
    script = (
        "import os, signal, sys\n"
        "from napari_chsnet.training import recipes\n"
        "def terminated(config, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "recipes.run_training = terminated\n"
        "recipes.main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(TINY_CONFIG), "--output", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr.strip() == "python -m napari_chsnet.training.recipes: terminated (SIGTERM)"


def test_an_ensemble_interrupted_in_its_first_member_says_no_member_finished(tmp_path):
    """It said "before the first epoch ended" while member 0's log held 9 finished epochs."""
    messages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(tiny_ensemble(tmp_path), on_step=interrupt_in_epoch(1), log=messages.append)
    assert "interrupted before the first EAMC member finished: no state to keep" in messages
    assert not list((tmp_path / "run").glob("*.safetensors"))


def _interrupt_the_second_member():
    fits_started = []

    def on_step(step: int, total: int, loss: float) -> None:
        fits_started.extend([step] if step == 1 else [])
        if len(fits_started) == 2:
            raise KeyboardInterrupt

    return on_step


def test_an_interrupted_ensemble_finished_with_init_from_has_the_weights_of_an_uninterrupted_run(tmp_path):
    """The member in training when a run was interrupted was lost, and init_from could not continue an
    ensemble smaller than the config's: finishing meant training every member again (hours per member
    on a CPU). Now the finished members are kept and the others train as the first run would have."""
    whole = recipes.run_training(tiny_ensemble(tmp_path / "whole"), log=quiet)
    config = tiny_ensemble(tmp_path / "parts")
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(config, on_step=_interrupt_the_second_member(), log=quiet)
    interrupted = Path(config.output) / "eamc.interrupted.safetensors"
    fits: list[int] = []
    messages: list[str] = []
    finished = recipes.run_training(
        dataclasses.replace(config, init_from=str(interrupted)),
        on_step=lambda step, total, loss: fits.extend([step] if step == 1 else []),
        log=messages.append,
    )
    assert len(fits) == 1  # only the second member trained
    assert any("members 1-1 of 2 kept from" in m for m in messages)
    expected, got = load_checkpoint(whole), load_checkpoint(finished)
    assert expected.state_dict.keys() == got.state_dict.keys()
    for name, tensor in expected.state_dict.items():
        assert torch.equal(tensor, got.state_dict[name]), name
    members = got.metadata["metrics"]["members"]
    assert [m.get("kept_from") for m in members] == [str(interrupted), None]
    assert [m["val_dice_mean"] for m in members] == [
        m["val_dice_mean"] for m in expected.metadata["metrics"]["members"]
    ]


def test_an_interrupted_ensemble_is_not_finished_with_another_seed_or_size(tmp_path):
    """Its other members would train on the finished members' validation group (another seed), or the
    file would silently become a different ensemble (another member count)."""
    config = tiny_ensemble(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        recipes.run_training(config, on_step=_interrupt_the_second_member(), log=quiet)
    interrupted = str(Path(config.output) / "eamc.interrupted.safetensors")
    before = sorted(p.name for p in Path(config.output).iterdir())
    reseeded = dataclasses.replace(config, init_from=interrupted, seed=config.seed + 1)
    with pytest.raises(ConfigError, match=rf"interrupted run of seed {config.seed} on \d+ training samples"):
        recipes.run_training(reseeded, log=quiet)
    larger = dataclasses.replace(
        config, init_from=interrupted, eamc=dataclasses.replace(config.eamc, members=3)
    )
    with pytest.raises(ConfigError, match="interrupted run of 2 members: set eamc.members to that"):
        recipes.run_training(larger, log=quiet)
    assert sorted(p.name for p in Path(config.output).iterdir()) == before
