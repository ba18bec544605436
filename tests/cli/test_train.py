"""``chsnet train`` from the command line: the shipped weights are never an output, and a config's numbers
must be finite (one line, exit 2, before any data is read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_chsnet.cli import main
from napari_chsnet.models.checkpoints import file_sha256
from napari_chsnet.resources_path import bundled_weights_dir, resources_dir
from napari_chsnet.training import recipes

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


@pytest.fixture
def no_training(monkeypatch):
    """run_training replaced: a refusal must come before it, and no test may write the real weights."""
    calls = []

    def refuse(config, **kwargs):
        calls.append(config.output)
        raise AssertionError(f"training started into {config.output}")

    monkeypatch.setattr(recipes, "run_training", refuse)
    return calls


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _hashes() -> dict[str, str]:
    return {path.name: file_sha256(path) for path in sorted(bundled_weights_dir().glob("*.safetensors"))}


@pytest.mark.parametrize(
    "output_of",
    [
        pytest.param(lambda: bundled_weights_dir(), id="at"),
        pytest.param(lambda: bundled_weights_dir() / "run", id="inside"),
        pytest.param(lambda: resources_dir(), id="above"),
        pytest.param(lambda: bundled_weights_dir() / ".." / "weights", id="spelled-otherwise"),
    ],
)
def test_train_never_writes_at_inside_or_above_the_bundled_weights(no_training, capsys, output_of):
    before = _hashes()
    argv = ["train", "--config", str(TINY_CONFIG), "--output", str(output_of()), "--overwrite"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "which is only read, never written" in line and str(bundled_weights_dir().resolve()) in line
    assert no_training == [] and _hashes() == before


def test_a_config_output_at_the_bundled_weights_is_refused_too(tmp_path, no_training, capsys):
    config = tmp_path / "into_bundled.yaml"
    config.write_text(
        f"{TINY_CONFIG.read_text()}\noutput: {bundled_weights_dir()}\n".replace(
            "output: runs/tiny_test\n", ""
        )
    )
    assert main(["train", "--config", str(config), "--overwrite"]) == 2
    assert "which is only read, never written" in one_error_line(capsys) and no_training == []


def test_an_output_beside_the_bundled_weights_still_trains(tmp_path, monkeypatch, capsys):
    outputs = []

    def record(config, **kwargs):
        outputs.append(config.output)
        return Path(config.output) / "chsnet.safetensors"

    monkeypatch.setattr(recipes, "run_training", record)
    assert (
        main(["train", "--config", str(TINY_CONFIG), "--output", str(tmp_path / "run"), "--overwrite"]) == 0
    )
    assert outputs == [str(tmp_path / "run")]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("learning_rate: .nan", "learning_rate"),
        ("learning_rate: .inf", "learning_rate"),
        ("learning_rate: -.inf", "learning_rate"),
        ("learning_rate: '1e999'", "learning_rate"),
        ("max_minutes: .inf", "max_minutes"),
    ],
)
def test_a_config_number_that_is_not_finite_is_one_line_naming_the_key(
    tmp_path, no_training, capsys, line, key
):
    """``.nan`` was an internal error (exit 1); ``.inf`` trained to a NaN loss and wrote Infinity (exit 0)."""
    config = tmp_path / "bad.yaml"
    text = TINY_CONFIG.read_text().replace("learning_rate: 0.01\n", "")
    config.write_text(f"{text}\n{line}\n")
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    error = one_error_line(capsys)
    assert f"{key} must be a finite number" in error and "bad.yaml" in error
    assert no_training == [] and not (tmp_path / "run").exists()


def test_malformed_yaml_is_one_line_with_line_and_column(tmp_path, no_training, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model: chsnet\nstage: [lungs\n")
    assert main(["train", "--config", str(config)]) == 2
    error = one_error_line(capsys)
    assert "bad.yaml is not valid YAML" in error and "line 3, column 1" in error and "expected ','" in error


@pytest.mark.parametrize(("device", "absent"), [("cuda", "cuda"), ("mps", "mps"), ("cuda:1", "cuda")])
def test_a_device_this_machine_lacks_is_one_line_before_data_or_output(
    tmp_path, monkeypatch, capsys, device, absent
):
    """It was an internal error (exit 1) after the data was loaded, leaving an empty output folder."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(recipes, "gather_slices", lambda *args, **kwargs: pytest.fail("data was read"))
    config = tmp_path / "gpu.yaml"
    config.write_text(TINY_CONFIG.read_text().replace("device: cpu\n", f"device: {device}\n"))
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys) == (
        f"chsnet train: error: device '{absent}' is not available on this machine (available: cpu); "
        "choose one of those or 'auto'"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_gpu_past_the_machine_s_count_is_one_line_before_data_or_output(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(recipes, "gather_slices", lambda *args, **kwargs: pytest.fail("data was read"))
    config = tmp_path / "gpu.yaml"
    config.write_text(TINY_CONFIG.read_text().replace("device: cpu\n", "device: cuda:1\n"))
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "device 'cuda:1' is not available on this machine: it has 1 CUDA device(s), cuda:0 to cuda:0" in (
        one_error_line(capsys)
    )
    assert not (tmp_path / "run").exists()


def test_an_output_that_cannot_be_made_is_one_line_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    """It was an OSError traceback (exit 1); a full disk or read-only place fails the same way."""
    monkeypatch.setattr(recipes, "gather_slices", lambda *args, **kwargs: pytest.fail("data was read"))
    (tmp_path / "taken").write_text("a file where the output folder's parent should be")
    output = tmp_path / "taken" / "run"
    assert main(["train", "--config", str(TINY_CONFIG), "--output", str(output)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("chsnet train: error: cannot write the training output") and str(output) in line


def test_an_interrupted_train_keeps_its_best_state_says_so_and_exits_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C (SIGTERM alike, exit 143) left only log.csv: the best state in memory was lost."""
    from napari_chsnet.cli import train as train_command

    def interrupt_in_the_second_epoch():
        def on_step(step: int, total: int, loss: float) -> None:
            if step == total // 2 + 1:  # the tiny config's 2 epochs
                raise KeyboardInterrupt

        return on_step

    monkeypatch.setattr(train_command, "_progress", interrupt_in_the_second_epoch)
    output = tmp_path / "run"
    assert main(["train", "--config", str(TINY_CONFIG), "--output", str(output)]) == 130
    captured = capsys.readouterr()
    kept = output / "chsnet.interrupted.safetensors"
    assert f"interrupted: kept the best state so far (epoch 1 of 1 finished) as {kept}" in captured.out
    assert captured.err.strip() == "chsnet: interrupted"
    assert sorted(p.name for p in output.iterdir()) == [kept.name, "chsnet_log.interrupted.csv"]
