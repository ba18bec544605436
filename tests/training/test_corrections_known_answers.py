"""Known answers of a corrected case (training/corrections.py): which masks it accepts, which slices it
trains on, and what saving it again over its saved correction keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.training.corrections import EDITED_SLICES_FILE, CorrectedCase, save_correction

SHAPE = (4, 16, 16)


def _ct() -> CTVolume:
    hu = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) - 1000  # one fixed CT: one fingerprint
    return CTVolume(hu, Geometry((1.0, 1.0, 2.0)), "synthetic")


def _lungs() -> np.ndarray:
    """Right lung (1) in columns 2-6, left lung (2) in columns 9-13, rows 4-11, on every slice."""
    lungs = np.zeros(SHAPE, np.uint8)
    lungs[:, 4:12, 2:7] = 1
    lungs[:, 4:12, 9:14] = 2
    return lungs


def _case(infection=None, **kwargs) -> CorrectedCase:
    infection = np.zeros(SHAPE, np.uint8) if infection is None else infection
    return CorrectedCase(_ct(), _lungs(), infection, "P1", **kwargs)


@pytest.mark.parametrize(("label", "column"), [(1, 4), (2, 11)])
def test_infection_inside_either_lung_is_inside_the_lungs(label, column):
    """Lungs are 1 (right) and 2 (left); infection lying wholly in the left lung is not "outside"."""
    infection = np.zeros(SHAPE, np.uint8)
    infection[:, 6:9, column] = 1
    assert set(np.unique(_lungs()[infection > 0])) == {label}
    case = _case(infection)
    assert np.count_nonzero(case.infection) == 12


def test_infection_outside_the_lungs_is_refused_only_beyond_half():
    """The rule is "mostly outside": exactly half outside is accepted, 3 of 5 is refused."""
    half = np.zeros(SHAPE, np.uint8)
    half[0, 5, 3:5] = 1  # 2 voxels in the right lung
    half[0, 0, 0:2] = 1  # 2 voxels outside
    _case(half)
    more = half.copy()
    more[0, 0, 2] = 1  # 3 of 5 outside
    with pytest.raises(InvalidVolumeError, match="60 % of the infection mask lies outside the lungs"):
        _case(more)


def test_edited_slices_must_lie_on_the_ct():
    """A 4-slice CT has slices 0..3: 3 is accepted, 4 (one past the end) and -1 are refused."""
    assert _case(edited_slices=(3, 0, 3)).edited_slices == (0, 3)
    for bad in (4, -1):
        with pytest.raises(InvalidVolumeError, match=rf"edited slices \[{bad}\] lie outside 0\.\.3"):
            _case(edited_slices=(1, bad))


def test_no_edited_slice_known_trains_on_every_slice_with_lung():
    """Only edited slices "when known": an empty list of edited slices is no list (from_folder and the
    panel store it as None), so every slice with lung trains, as training_slice_indices says."""
    case = _case(edited_slices=())
    every = case.training_slice_indices(only_edited=False)
    assert every == [0, 1, 2, 3]
    assert case.training_slice_indices(only_edited=True) == every
    assert [s.source for s in case.labelled_slices(only_edited=True)] == [f"synthetic#z={z}" for z in every]
    # the other side: known edited slices narrow it
    assert [s.source for s in _case(edited_slices=(2,)).labelled_slices(only_edited=True)] == [
        "synthetic#z=2"
    ]


def test_saving_again_keeps_this_saves_labels_on_the_slices_it_edits_again(tmp_path):
    """Slice 1 edited twice: the second save's labels win there; slice 2, edited only the first time,
    keeps the first save's labels; slice 3, never edited, takes the latest state."""
    first = np.zeros(SHAPE, np.uint8)
    first[1, 5:7, 3:5] = 1
    first[2, 5:7, 10:12] = 1
    save_correction(_case(first, edited_slices=(1, 2)), tmp_path)
    second = np.zeros(SHAPE, np.uint8)
    second[1, 8:10, 10:13] = 1  # slice 1 corrected again, elsewhere
    second[3, 6, 4] = 1  # not edited: the latest segmentation
    folder = save_correction(_case(second, edited_slices=(1,)), tmp_path)

    saved = CorrectedCase.from_folder(folder)
    assert saved.edited_slices == (1, 2)
    np.testing.assert_array_equal(saved.infection[1], second[1])
    np.testing.assert_array_equal(saved.infection[2], first[2])
    np.testing.assert_array_equal(saved.infection[3], second[3])
    np.testing.assert_array_equal(saved.infection[0], 0)


@pytest.mark.parametrize(
    ("saved", "now", "merged"),
    [
        (None, False, None),  # the kept slices may hold infection edits: still unknown, not "no"
        (False, None, None),
        (False, False, False),
        (None, True, True),
        (True, False, True),
    ],
)
def test_a_merged_correction_knows_the_infection_was_edited_only_as_far_as_both_saves_do(
    tmp_path, saved, now, merged
):
    """infection_edited: True when either save edited it, False only when both say no, else None
    (unknown), what a lungs-only fine-tune message relies on."""
    save_correction(_case(edited_slices=(1,), infection_edited=saved), tmp_path)
    folder = save_correction(_case(edited_slices=(2,), infection_edited=now), tmp_path)
    assert json.loads((folder / EDITED_SLICES_FILE).read_text())["infection_edited"] is merged
    assert CorrectedCase.from_folder(folder).infection_edited is merged
