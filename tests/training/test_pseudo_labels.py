"""Self-training pseudo labels: the bundled CHS-Net labels COVID-SemiSeg-like phantom slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_chsnet.inference.cascade import mirror_averaged
from napari_chsnet.inference.orientation import upright
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models.checkpoints import load_checkpoint
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.config import config_from_dict
from napari_chsnet.training.datasets import SEMISEG_ROTATION, read_gray_image, read_semiseg
from napari_chsnet.training.pseudo_labels import label_with_teacher
from napari_chsnet.training.recipes import gather_slices

TEACHER = bundled_weights_dir() / "chsnet.safetensors"
UNLABELLED_SLICES = (12, 16, 20)


def test_mirror_averaging_averages_a_pass_over_the_slice_and_one_over_its_mirror():
    pixels = np.zeros((3, 5), np.uint8)

    def column_ramp(image: np.ndarray) -> np.ndarray:  # ignores the content: not mirror-symmetric
        return np.tile(np.arange(image.shape[1], dtype=float), (image.shape[0], 1))

    np.testing.assert_allclose(mirror_averaged(column_ramp, pixels), np.full((3, 5), 2.0))
    ramp_image = np.tile(np.arange(5, dtype=np.uint8), (3, 1))
    np.testing.assert_allclose(mirror_averaged(lambda x: x / 4.0, ramp_image), ramp_image / 4.0)


@pytest.fixture(scope="module")
def infected_phantom():
    return make_phantom((32, 256, 256), seed=5, involvement_pct=(30.0, 20.0))


@pytest.fixture
def semiseg_root(tmp_path, infected_phantom, write_semiseg_slices):
    """A COVID-SemiSeg layout: 2 expert-labelled slices, 3 unlabelled ones whose shipped
    (Inf-Net) labels are empty, so the teacher's labels can be told apart."""
    root = tmp_path / "covid-semiseg"
    phantom = infected_phantom
    write_semiseg_slices(phantom, root / "train", (10, 22), phantom.infection, "infection_gt")
    no_infection = np.zeros_like(phantom.infection)
    write_semiseg_slices(phantom, root / "unlabelled", UNLABELLED_SLICES, no_infection, "infnet_pseudo_gt")
    return root


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_the_teacher_labels_the_slices_in_the_dataset_orientation_and_caches_them(
    semiseg_root, infected_phantom, tmp_path
):
    images = sorted((semiseg_root / "unlabelled" / "images").glob("*.jpg"))
    messages: list[str] = []
    folder = label_with_teacher(TEACHER, images, tmp_path / "cache", SEMISEG_ROTATION, "cpu", messages.append)
    assert messages == [f"labelling 3 unlabelled slices with the teacher {TEACHER}"]
    about = json.loads((folder / "teacher.json").read_text())
    assert about["sha256"] == load_checkpoint(TEACHER).sha256 and about["mirror_averaged"]

    phantom = infected_phantom
    from napari_chsnet.inference.preprocessing import lung_crop_box

    box = lung_crop_box(phantom.lungs)
    truth = phantom.infection[:, box.y0 : box.y1, box.x0 : box.x1] > 0
    label_masks, truths = [], []
    for z in UNLABELLED_SLICES:
        stored = read_gray_image(folder / f"slice_{z}.png")
        assert (
            stored.shape == read_gray_image(semiseg_root / "unlabelled" / "images" / f"slice_{z}.jpg").shape
        )
        assert set(np.unique(stored)) <= {0, 255}
        label_masks.append(upright(stored, SEMISEG_ROTATION) > 127)  # back to anterior-up
        truths.append(truth[z])
    assert _dice(np.array(label_masks), np.array(truths)) > 0.6  # the phantom's infection, where it is

    stamps = [p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))]
    again = label_with_teacher(TEACHER, images, tmp_path / "cache", SEMISEG_ROTATION, "cpu", messages.append)
    assert again == folder and len(messages) == 1  # cached: nothing relabelled
    assert [p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))] == stamps
    assert not list(folder.glob(".*.part"))


def test_a_config_with_a_teacher_trains_on_its_labels_not_on_the_shipped_ones(semiseg_root, tmp_path):
    def unlabelled_of(config_data: dict) -> list:
        config = config_from_dict({"model": "chsnet", "data": config_data})
        train, validation = gather_slices(config, tmp_path / "cache", log=lambda message: None)
        assert len(validation) == 1 and len(train) == 1 + len(UNLABELLED_SLICES)
        return sorted((s for s in train if s.infection_weight < 1), key=lambda s: s.source)

    data = {"semiseg": str(semiseg_root), "validation_slices": 1, "unlabelled": len(UNLABELLED_SLICES)}
    shipped = unlabelled_of(data)
    taught = unlabelled_of({**data, "pseudo_teacher": str(TEACHER), "pseudo_weight": 0.25})
    assert not any(s.infection.any() for s in shipped)  # the empty "Inf-Net" labels
    assert {s.infection_weight for s in shipped} == {0.5}  # the default weight
    assert sum(int(s.infection.sum()) for s in taught) > 1000
    folder = next((tmp_path / "cache").glob("pseudo_chsnet_*"))
    expected = read_semiseg(semiseg_root, "unlabelled", mask_folder=folder)
    for got, want in zip(taught, sorted(expected, key=lambda s: s.source), strict=True):
        assert got.infection_weight == 0.25
        np.testing.assert_array_equal(got.infection, want.infection)
        assert (got.lungs | ~got.infection).all()  # the lung label holds the teacher's infection


def test_expert_repeat_repeats_the_expert_training_slices_only(semiseg_root, tmp_path):
    data = {"semiseg": str(semiseg_root), "validation_slices": 1, "unlabelled": len(UNLABELLED_SLICES)}
    config = config_from_dict({"model": "chsnet", "data": {**data, "expert_repeat": 3}})
    train, validation = gather_slices(config, tmp_path / "cache", log=lambda message: None)
    expert = [s for s in train if s.infection_weight == 1]
    assert len(expert) == 3 and len({s.source for s in expert}) == 1  # one expert slice, 3 times
    assert len(train) - len(expert) == len(UNLABELLED_SLICES)  # pseudo-labelled ones once each
    assert len(validation) == 1 and validation[0].source != expert[0].source  # never repeated


def test_no_validation_slices_trains_on_every_expert_slice(semiseg_root, tmp_path):
    config = config_from_dict(
        {"model": "chsnet", "data": {"semiseg": str(semiseg_root), "validation_slices": 0}}
    )
    train, validation = gather_slices(config, tmp_path / "cache", log=lambda message: None)
    assert validation == []
    assert sorted(Path(s.source).stem for s in train) == ["slice_10", "slice_22"]


def test_a_union_config_trains_on_the_teacher_or_the_shipped_label(semiseg_root, tmp_path):
    shipped_folder = semiseg_root / "unlabelled" / "infnet_pseudo_gt"
    shipped = read_gray_image(shipped_folder / "slice_16.png").copy()
    shipped[: shipped.shape[0] // 3, : shipped.shape[1] // 3] = 255  # a corner the teacher leaves out
    Image.fromarray(shipped).save(shipped_folder / "slice_16.png")
    data = {
        "semiseg": str(semiseg_root),
        "validation_slices": 1,
        "unlabelled": len(UNLABELLED_SLICES),
        "pseudo_teacher": str(TEACHER),
        "pseudo_union_infnet": True,
    }
    config = config_from_dict({"model": "chsnet", "data": data})
    train, _ = gather_slices(config, tmp_path / "cache", log=lambda message: None)
    union = sorted((s for s in train if s.infection_weight < 1), key=lambda s: s.source)

    teacher_folder = next((tmp_path / "cache").glob("pseudo_chsnet_*[0-9a-f]"))
    teacher = read_semiseg(semiseg_root, "unlabelled", mask_folder=teacher_folder, with_lungs=False)
    inf_net = read_semiseg(semiseg_root, "unlabelled", with_lungs=False)
    for got, taught, listed in zip(union, teacher, inf_net, strict=True):
        np.testing.assert_array_equal(got.infection, taught.infection | listed.infection)
    assert union[1].infection.sum() > teacher[1].infection.sum()  # slice_16 gained the corner
    assert (tmp_path / "cache" / f"{teacher_folder.name}_or_infnet" / "slice_16.png").exists()


def test_a_union_needs_a_teacher():
    from napari_chsnet.errors import ConfigError

    with pytest.raises(ConfigError, match="pseudo_union_infnet needs a pseudo_teacher"):
        config_from_dict({"model": "chsnet", "data": {"pseudo_union_infnet": True}})


def _label_with_scripted_teacher(monkeypatch, tmp_path, probability: np.ndarray) -> np.ndarray:
    """The mask ``label_with_teacher`` writes for one upright 8 x 8 slice when the teacher's end-to-end
    infection probability is ``probability``, whatever the pixels (the networks are not run)."""
    import napari_chsnet.inference.pipeline as pipeline_module
    import napari_chsnet.inference.slices as slices_module

    monkeypatch.setattr(pipeline_module, "build_stages", lambda settings, device: (None, None, {}))
    monkeypatch.setattr(
        slices_module,
        "segment_cropped_slice",
        lambda pixels, lung_stage, infection_stage: (probability >= 0.5, probability.copy()),
    )
    image = tmp_path / "images" / "slice.jpg"
    image.parent.mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(image)
    folder = label_with_teacher(TEACHER, [image], tmp_path / "cache", 0, "cpu", lambda message: None)
    return read_gray_image(folder / "slice.png") > 127


def test_pseudo_labels_threshold_the_teachers_probability_at_one_half(monkeypatch, tmp_path):
    """docs/training.md: the teacher's probability is thresholded at 0.5 (as at inference). Rows of
    0.3, 0.45, 0.49 stay background; 0.5, 0.51, 0.7 and 1 are labelled (mirror-symmetric rows, so the
    averaging over the mirror leaves them as they are)."""
    rows = np.array([0.3, 0.45, 0.49, 0.5, 0.51, 0.7, 0.0, 1.0])
    mask = _label_with_scripted_teacher(monkeypatch, tmp_path, np.repeat(rows[:, None], 8, axis=1))
    np.testing.assert_array_equal(mask.all(axis=1), rows >= 0.5)
    assert (mask.all(axis=1) == mask.any(axis=1)).all()


def test_pseudo_labels_average_the_teacher_over_the_slice_and_its_mirror(monkeypatch, tmp_path):
    """A teacher that marks the image's two left columns whatever it is shown (certain, 1) does so on the
    slice and on its mirror: averaged, both outer column pairs hold 0.5 and are labelled, the rest 0."""
    probability = np.zeros((8, 8))
    probability[:, :2] = 1.0
    mask = _label_with_scripted_teacher(monkeypatch, tmp_path, probability)
    expected = np.zeros((8, 8), bool)
    expected[:, [0, 1, 6, 7]] = True
    np.testing.assert_array_equal(mask, expected)
