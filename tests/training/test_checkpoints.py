"""The one checkpoint format: round trip (fp32 and fp16) and refusal of anything else, pickles included."""

from __future__ import annotations

import pickle

import pytest
import torch

from napari_chsnet.errors import WeightsError
from napari_chsnet.models.factory import build_model
from napari_chsnet.training.checkpoints import load_checkpoint, read_checkpoint_metadata, save_checkpoint


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
