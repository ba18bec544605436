"""Dataset readers on both layouts: a Zenodo-layout folder written here, and the real COVID-SemiSeg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.preprocessing import CropBox, lung_crop_box
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.io.writers import write_volume
from napari_chsnet.training.datasets import (
    LabelledSlice,
    read_gray_image,
    read_label_image,
    read_semiseg,
    read_volume_folder,
    semiseg_validation_names,
    slices_of_volume,
    slices_with_lung,
)


def test_zenodo_layout_gives_every_lung_slice_with_case_ids(tmp_path, phantom):
    for name in ("coronacases_001.nii.gz", "radiopaedia_002.nii.gz"):
        write_volume(tmp_path / "ct_scans" / name, phantom.ct.hu, phantom.ct.geometry)
        write_volume(tmp_path / "lung_mask" / name, phantom.lungs, phantom.ct.geometry, is_label=True)
        write_volume(
            tmp_path / "infection_mask" / name, phantom.infection, phantom.ct.geometry, is_label=True
        )
    slices = read_volume_folder(tmp_path)
    lung_slices = sum((phantom.lungs[z] > 0).mean() >= 0.002 for z in range(phantom.lungs.shape[0]))
    assert len(slices) == 2 * lung_slices
    assert {s.case_id for s in slices} == {"coronacases_001", "radiopaedia_002"}
    first = slices[0]
    z = int(first.source.split("#z=")[1])
    assert np.array_equal(first.infection, phantom.infection[z] > 0)
    assert first.image.min() >= 0.0 and first.image.max() <= 1.0


def test_zenodo_reader_names_the_expected_layout(tmp_path):
    with pytest.raises(InvalidVolumeError, match="Zenodo layout"):
        read_volume_folder(tmp_path)


@pytest.mark.realdata
def test_real_covid_semiseg_slices(shared_data):
    root = shared_data / "covid-semiseg"
    if not (root / "train" / "images").is_dir():
        pytest.skip(f"{root} holds no COVID-SemiSeg train/images")
    names = sorted(p.stem for p in (root / "train" / "images").glob("*.jpg"))[:3]
    slices = read_semiseg(root, "train", names=names)
    assert len(slices) == 3
    for item in slices:
        assert item.cropped and item.infection is not None and item.lungs is not None
        assert item.image.dtype == np.float32 and item.image.shape == item.infection.shape
        assert item.infection.any(), f"{item.source}: the labelled slices all show infection"
        # lungs are made from HU with the expert infection added, so the infection lies inside them up to
        # the rim that post-processing trims (0.2% on these slices)
        inside = (item.infection & item.lungs).sum() / item.infection.sum()
        assert inside > 0.99, f"{item.source}: only {inside:.3f} of the infection lies in the lung mask"


@pytest.mark.realdata
def test_real_multiclass_masks_are_read_as_labels_that_cover_the_infection_masks(shared_data):
    """COVID-SemiSeg's multiclass masks are palette PNGs (1 ground-glass, 2 consolidation, coloured
    dark red and green: grey 38 and 75); read as labels, their non-zero pixels are the infection masks."""
    root = shared_data / "covid-semiseg" / "train"
    if not (root / "multiclass_gt").is_dir():
        pytest.skip(f"{root} holds no multiclass_gt")
    paths = sorted((root / "multiclass_gt").glob("*.png"))
    assert len(paths) == 50
    classes = set()
    for path in paths:
        labels = read_label_image(path)
        classes |= set(np.unique(labels).tolist())
        infection = read_gray_image(root / "infection_gt" / path.name) > 127
        assert np.array_equal(labels > 0, infection), path.name
    assert classes == {0, 1, 2}


def test_held_out_slices_are_a_fixed_prefix_whatever_the_training_seed(semiseg_names_root):
    ten = semiseg_validation_names(semiseg_names_root)
    assert ten == ["10", "11", "12", "28", "3", "32", "33", "35", "44", "46"]  # the model cards' list
    # fewer held out: a subset of the same order, so every run's validation slices come from the 10
    assert set(semiseg_validation_names(semiseg_names_root, 5)) <= set(ten)
    assert semiseg_validation_names(semiseg_names_root, 0) == []


def test_a_slice_whose_lungs_cover_exactly_the_minimum_fraction_is_used():
    """``min_lung_fraction`` 0.002 of a 50 x 40 slice is 4 pixels: 4 lung pixels (either side's label)
    are "at least" that, 3 are not."""
    lungs = np.zeros((4, 50, 40), np.uint8)
    lungs[1].flat[:4] = 2  # the left lung's label counts as lung
    lungs[2].flat[:3] = 1
    lungs[3].flat[:5] = 1
    assert 0.002 * lungs[0].size == 4
    assert slices_with_lung(lungs, min_lung_fraction=0.002) == [1, 3]


def _volume_with_a_lung_that_moves(infection_label: int):
    """Three slices whose lungs lie in different places (so each slice's own box differs from the
    volume's), infection labelled ``infection_label`` on the middle one."""
    lungs = np.zeros((3, 40, 40), np.uint8)
    lungs[0, 5:15, 5:15] = 1
    lungs[1, 10:20, 10:20] = 2
    lungs[2, 20:35, 22:36] = 1
    infection = np.zeros_like(lungs)
    infection[1, 12:15, 12:16] = infection_label
    volume = CTVolume(np.full(lungs.shape, -800.0, np.float32), Geometry(spacing_mm=(1.0, 1.0, 1.0)), "scan")
    return volume, lungs, infection


def test_multiclass_infection_labels_all_count_as_infection():
    """Infection labels above 1 (COVID-SemiSeg's 2 = consolidation) are infection, like 1 (ground glass)."""
    volume, lungs, infection = _volume_with_a_lung_that_moves(infection_label=2)
    middle = slices_of_volume(volume, lungs, infection, "case")[1]
    np.testing.assert_array_equal(middle.infection, infection[1] > 0)
    assert middle.infection.sum() == 12


def test_slices_of_a_volume_share_the_volumes_lung_box_as_at_inference():
    """The inference pipeline crops every slice of a scan to one box around all its lungs; training
    slices of a volume must see the same crop, not a box around their own slice's lungs."""
    volume, lungs, infection = _volume_with_a_lung_that_moves(infection_label=1)
    slices = slices_of_volume(volume, lungs, infection, "case")
    volume_box = lung_crop_box(lungs)
    assert len(slices) == 3 and lung_crop_box(lungs[0]) != volume_box
    assert [s.infection_box() for s in slices] == [volume_box] * 3


def test_a_slice_already_cropped_to_the_lungs_is_read_whole_by_the_infection_stage():
    """COVID-SemiSeg slices are cropped already: their infection box is the whole image, even though a
    lung mask (smaller than the image) is known."""
    lungs = np.zeros((30, 40), bool)
    lungs[10:20, 12:25] = True
    item = LabelledSlice("case", np.zeros((30, 40), np.float32), lungs, None, cropped=True)
    assert item.infection_box() == CropBox.full(30, 40)
    assert LabelledSlice("case", item.image, lungs, None).infection_box() == lung_crop_box(lungs)


def test_unlabelled_semiseg_slices_are_grouped_by_the_case_in_their_name(tmp_path):
    """Unlabelled COVID-SemiSeg names are ``Data-<n>_<case>_<slice>``: slices 10 and 11 of one scan
    are one case, ``coronacases_org_001``."""
    images = tmp_path / "unlabelled" / "images"
    images.mkdir(parents=True)
    names = (
        "Data-1_coronacases_org_001_10",
        "Data-1_coronacases_org_001_11",
        "Data-9_radiopaedia_4_85506_1_120",
    )
    for name in names:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / f"{name}.jpg")
    slices = read_semiseg(tmp_path, "unlabelled", with_lungs=False)
    cases = {Path(s.source).stem: s.case_id for s in slices}
    assert cases == {
        names[0]: "coronacases_org_001",
        names[1]: "coronacases_org_001",
        names[2]: "radiopaedia_4_85506_1",
    }
