"""Dataset readers on both layouts: a Zenodo-layout folder written here, and the real COVID-SemiSeg."""

from __future__ import annotations

import numpy as np
import pytest

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.writers import write_volume
from napari_chsnet.training.datasets import (
    read_gray_image,
    read_label_image,
    read_semiseg,
    read_volume_folder,
    semiseg_validation_names,
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
