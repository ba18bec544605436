"""The one checkpoint format: round trip (fp32 and fp16) and refusal of anything else, pickles included."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
import torch

from napari_chsnet.errors import OutputExistsError, WeightsError
from napari_chsnet.models.checkpoints import (
    average_checkpoints,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from napari_chsnet.models.factory import build_model


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip_restores_network_and_metadata(tmp_path, half):
    torch.manual_seed(0)
    network = build_model("rdunet", base_channels=4, se_reduction=2)
    path = tmp_path / "rdunet.safetensors"
    sha = save_checkpoint(
        path, network, "rdunet", metadata={"role": "infection", "metrics": {"dice": 0.5}}, half_precision=half
    )
    loaded = load_checkpoint(path, expected_model="rdunet")
    rebuilt = loaded.build()
    assert loaded.sha256 == sha and loaded.metadata["metrics"] == {"dice": 0.5}
    assert read_checkpoint_metadata(path)["config"] == network.config
    for key, value in network.state_dict().items():
        restored = rebuilt.state_dict()[key]
        assert restored.dtype == value.dtype, key  # fp16 is cast back to float32
        # fp16 keeps ~3 significant digits; fp32 is exact
        torch.testing.assert_close(
            restored, value.half().to(value.dtype) if half and value.is_floating_point() else value
        )


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "chsnet.safetensors"
    save_checkpoint(path, build_model("chsnet", base_channels=4), "chsnet")
    with pytest.raises(WeightsError, match="holds a 'chsnet' network"):
        load_checkpoint(path, expected_model="rdunet")


def test_torch_save_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(build_model("chsnet", base_channels=4).state_dict(), path)
    with pytest.raises(WeightsError, match="not a napari-chsnet checkpoint"):
        load_checkpoint(path)


class _Exploit:
    """Unpickling this would create ``marker`` (the classic __reduce__ code execution)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "chsnet.safetensors"  # the right name does not make it a checkpoint
    path.write_bytes(pickle.dumps({"state_dict": _Exploit(marker)}))
    with pytest.raises(WeightsError):
        load_checkpoint(path)
    with pytest.raises(WeightsError):
        read_checkpoint_metadata(path)
    assert not marker.exists(), "loading executed code from the pickle"


def _perturbed_copy(network: torch.nn.Module, offset: float) -> torch.nn.Module:
    """The same network with every float tensor (weights and batch-norm statistics) shifted by ``offset``."""
    copy = build_model("rdunet", **network.config)
    copy.load_state_dict(network.state_dict())
    with torch.no_grad():
        for value in copy.state_dict().values():
            if value.is_floating_point():
                value.add_(offset)
    return copy


def test_average_of_checkpoints_is_the_tensorwise_mean_and_records_its_ingredients(tmp_path):
    torch.manual_seed(0)
    parent = build_model("rdunet", base_channels=4, se_reduction=2)
    parent(torch.randn(2, 1, 32, 32))  # train mode: batch-norm statistics and step counters move
    paths = []
    for index, offset in enumerate((0.0, 0.3, -0.9)):
        paths.append(tmp_path / f"round{index}.safetensors")
        metadata = {"role": "infection", "metrics": {"val_dice_mean": 0.5 + index / 10}}
        save_checkpoint(paths[-1], _perturbed_copy(parent, offset), "rdunet", metadata=metadata)
    averaged = average_checkpoints(paths)
    for key, value in parent.state_dict().items():
        # mean of offsets 0, 0.3 and -0.9 is -0.2; integer counters are equal, so unchanged
        expected = value - 0.2 if value.is_floating_point() else value
        torch.testing.assert_close(averaged.state_dict[key], expected, msg=key)
    assert averaged.metadata["role"] == "infection"
    assert [entry["path"] for entry in averaged.metadata["averaged_from"]] == [str(p) for p in paths]
    # the ingredients' validation figures are theirs, not the average's
    assert "metrics" not in averaged.metadata
    assert [entry["metrics"]["val_dice_mean"] for entry in averaged.metadata["averaged_from"]] == [
        0.5,
        0.6,
        0.7,
    ]

    output = tmp_path / "soup.safetensors"
    sha = averaged.save(output)
    reloaded = load_checkpoint(output, expected_model="rdunet")
    assert reloaded.sha256 == sha and reloaded.metadata["averaged_from"] == averaged.metadata["averaged_from"]
    rebuilt = reloaded.build().eval()
    reference = build_model("rdunet", **parent.config)
    reference.load_state_dict(averaged.state_dict)
    image = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(rebuilt(image), reference.eval()(image))
    with pytest.raises(OutputExistsError):
        averaged.save(output)  # never overwrites


def test_average_refuses_different_networks_and_single_inputs(tmp_path):
    small, wide = tmp_path / "small.safetensors", tmp_path / "wide.safetensors"
    save_checkpoint(small, build_model("rdunet", base_channels=4, se_reduction=2), "rdunet")
    save_checkpoint(wide, build_model("rdunet", base_channels=8, se_reduction=2), "rdunet")
    with pytest.raises(WeightsError, match="only the same network can be averaged"):
        average_checkpoints([small, wide])
    with pytest.raises(WeightsError, match="at least two"):
        average_checkpoints([small])


def test_average_weights_script_writes_the_average_and_reports_bad_input_in_one_line(tmp_path, capsys):
    script = Path(__file__).resolve().parents[2] / "scripts" / "average_weights.py"
    spec = importlib.util.spec_from_file_location("average_weights", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a, b, output = (tmp_path / name for name in ("a.safetensors", "b.safetensors", "ab.safetensors"))
    network = build_model("rdunet", base_channels=4, se_reduction=2)
    save_checkpoint(a, network, "rdunet")
    save_checkpoint(b, _perturbed_copy(network, 1.0), "rdunet")
    assert module.main([str(a), str(b), "-o", str(output)]) == 0
    first_key = next(iter(network.state_dict()))
    torch.testing.assert_close(
        load_checkpoint(output).state_dict[first_key], (network.state_dict()[first_key] + 0.5).half().float()
    )
    capsys.readouterr()
    written = output.read_bytes()
    assert module.main([str(a), str(b), "-o", str(output)]) == 2
    assert output.read_bytes() == written  # the existing output is kept, not overwritten
    assert (
        module.main([str(a), str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.safetensors")])
        == 2
    )
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "exists" in errors[0] and "does not exist" in errors[1]
