"""``data.lung_maps: predicted``: CHS-Net's infection stage trains on the lung stage's masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_chsnet.errors import ConfigError
from napari_chsnet.inference.preprocessing import lung_crop_box
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.config import config_from_dict
from napari_chsnet.training.datasets import read_semiseg
from napari_chsnet.training.lung_maps import with_predicted_lung_maps
from napari_chsnet.training.recipes import gather_slices

BUNDLED = bundled_weights_dir() / "chsnet.safetensors"
SLICES = (10, 16, 22)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((32, 256, 256), seed=5, involvement_pct=(30.0, 20.0))


@pytest.fixture
def semiseg_root(tmp_path, phantom, write_semiseg_slices):
    write_semiseg_slices(phantom, tmp_path / "train", SLICES, phantom.infection, "infection_gt")
    return tmp_path


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_predicted_maps_are_the_bundled_lung_stage_s_and_keep_the_infection_labels(semiseg_root, phantom):
    if not BUNDLED.is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {BUNDLED.parent}")
    labelled = read_semiseg(semiseg_root, "train")
    repeated = labelled * 2  # as data.expert_repeat lists them
    messages: list[str] = []
    maps = with_predicted_lung_maps(repeated, BUNDLED, "cpu", messages.append)
    assert messages == [f"lung maps: segmenting 3 slices with the lung stage of {BUNDLED}"]
    assert len(maps) == 6 and all(maps[i].lungs is maps[i + 3].lungs for i in range(3))
    box = lung_crop_box(phantom.lungs)
    for before, after, z in zip(labelled, maps, SLICES, strict=False):
        assert after.infection is before.infection and after.source == before.source
        assert after.lungs.shape == before.lungs.shape and after.lungs.dtype == bool
        assert not np.array_equal(after.lungs, before.lungs), (
            "the map must be the lung stage's, not the label"
        )
        truth = phantom.lungs[z, box.y0 : box.y1, box.x0 : box.x1] > 0
        assert _dice(after.lungs, truth) > 0.9, f"slice {z}: the lung stage's map is not the phantom's lungs"


def test_predicted_maps_need_lung_cropped_slices(semiseg_root):
    uncropped = dataclasses.replace(read_semiseg(semiseg_root, "train")[0], cropped=False, case_id="vol1")
    with pytest.raises(
        ConfigError, match=r"needs lung-cropped 2-D slices; 1 case\(s\) are not \(e.g. vol1\)"
    ):
        with_predicted_lung_maps([uncropped], BUNDLED, "cpu", lambda message: None)


class _Stop(Exception):
    pass


def test_training_and_validation_slices_both_get_the_init_checkpoint_s_maps(
    semiseg_root, tmp_path, monkeypatch
):
    """run_training replaces the maps of both lists (one lung stage for both), so the epoch is chosen
    on what inference reads."""
    import napari_chsnet.training.recipes as recipes

    calls: list[tuple[list[str], str]] = []
    arrays_of: list[list[str]] = []

    def record(slices, checkpoint, device, log):
        calls.append((sorted(s.source for s in slices), checkpoint))
        return [dataclasses.replace(s, source=f"mapped {s.source}") for s in slices]

    def stop(config, slices):
        arrays_of.append(sorted(s.source for s in slices))
        if len(arrays_of) == 2:
            raise _Stop
        return []

    monkeypatch.setattr(recipes, "with_predicted_lung_maps", record)
    monkeypatch.setattr(recipes, "_arrays", stop)  # the maps are all this test is about
    config = config_from_dict(
        {
            "model": "chsnet",
            "init_from": str(BUNDLED),
            "data": {"semiseg": str(semiseg_root), "validation_slices": 1, "lung_maps": "predicted"},
            "output": str(tmp_path / "run"),
        }
    )
    train, validation = gather_slices(config, tmp_path / "cache", log=lambda message: None)
    with pytest.raises(_Stop):
        recipes.run_training(config, log=lambda message: None)
    assert calls == [(sorted(s.source for s in [*train, *validation]), str(BUNDLED))]
    assert arrays_of == [
        sorted(f"mapped {s.source}" for s in train),
        sorted(f"mapped {s.source}" for s in validation),
    ]
    assert len(train) == 2 and len(validation) == 1
