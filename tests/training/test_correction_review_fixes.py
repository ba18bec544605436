"""Saving corrections of a CT on a skewed grid, the message of a correction saved already, and the
no-slice message of a fine-tune mixing a case with edited slices and one without."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from napari_chsnet.cli import main as chsnet
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.orientation import nearest_orthonormal
from napari_chsnet.io.writers import write_volume
from napari_chsnet.training.corrections import (
    EDITED_SLICES_FILE,
    CorrectedCase,
    ct_sha256,
    save_correction,
)
from napari_chsnet.training.finetune import finetune

SHEAR = math.radians(15)
SHEARED = (1.0, 0.0, 0.0, 0.0, 1.0, math.sin(SHEAR), 0.0, 0.0, math.cos(SHEAR))  # gantry tilt kept as a shear


def _tilted(phantom):
    geometry = dataclasses.replace(phantom.ct.geometry, direction=SHEARED)
    return dataclasses.replace(phantom.ct, geometry=geometry)


def test_a_skewed_cts_correction_is_saved_on_the_nearest_perpendicular_grid(tmp_path, phantom):
    """The Fine-tune tab always failed on a gantry-tilted .mha/.nrrd: the correction files are NIfTI,
    which check_writable refuses for a skewed grid (naming a hidden staging file)."""
    ct = _tilted(phantom)
    infection = phantom.infection.copy()
    case = CorrectedCase(ct, phantom.lungs, infection, "tilted", edited_slices=(3,))
    folder = save_correction(case, tmp_path)

    info = json.loads((folder / EDITED_SLICES_FILE).read_text())
    assert info["ct_sha256"] == ct_sha256(ct.hu)  # the voxels' fingerprint, grid or not
    assert info["grid_straightened"]["skew_deg"] == pytest.approx(15.0)
    assert info["grid_straightened"]["direction"] == pytest.approx(list(SHEARED))

    back = CorrectedCase.from_folder(folder)  # CT and masks reopen on one grid
    np.testing.assert_array_equal(back.ct.hu, ct.hu)
    np.testing.assert_array_equal(back.lungs, phantom.lungs)
    np.testing.assert_array_equal(back.infection, infection)
    assert back.edited_slices == (3,)
    straight = nearest_orthonormal(np.reshape(SHEARED, (3, 3)))
    np.testing.assert_allclose(np.reshape(back.ct.geometry.direction, (3, 3)), straight, atol=1e-6)
    assert back.ct.geometry.spacing_mm == pytest.approx(ct.geometry.spacing_mm)

    # saved again (other slices edited): the same folder, found by the fingerprint, and merged
    infection[5] = 0
    again = save_correction(
        CorrectedCase(ct, phantom.lungs, infection, "renamed", edited_slices=(5,)), tmp_path
    )
    assert again == folder
    assert CorrectedCase.from_folder(folder).edited_slices == (3, 5)


def test_a_perpendicular_grid_is_saved_as_it_is(tmp_path, phantom):
    folder = save_correction(CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "p", (2,)), tmp_path)
    assert "grid_straightened" not in json.loads((folder / EDITED_SLICES_FILE).read_text())
    back = CorrectedCase.from_folder(folder).ct.geometry
    np.testing.assert_allclose(back.direction, phantom.ct.geometry.direction, atol=1e-7)


def test_a_correction_saved_already_is_named_by_where_it_is(tmp_path, phantom):
    """The message was "<folder> exists; choose another case name", but the folder is found by the CT's fingerprint, so
    another name finds it too."""
    save_correction(CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "first name", (1,)), tmp_path)
    for name in ("first name", "another name"):
        case = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, name, (2,))
        with pytest.raises(InvalidVolumeError) as caught:
            save_correction(case, tmp_path, overwrite=False)
        assert str(caught.value) == f"this CT's correction is already saved in {tmp_path / 'first_name'}"


def _no_lung_cases(phantom):
    empty = np.zeros_like(phantom.lungs)
    narrowed = CorrectedCase(phantom.ct, empty, empty.copy(), "edited", edited_slices=(1,))
    whole = CorrectedCase(phantom.ct, empty.copy(), empty.copy(), "whole")
    return narrowed, whole


def test_no_slice_to_train_on_names_a_narrowed_and_a_whole_case(tiny_set, phantom):
    """``c not in narrowed`` compared the cases' numpy arrays: ValueError (truth value of an array is
    ambiguous) instead of the message."""
    with pytest.raises(InvalidVolumeError) as caught:
        finetune(tiny_set, "rdunet", list(_no_lung_cases(phantom)), epochs=1)
    message = str(caught.value)
    assert "edited: slices 1) has lung" in message and "--all-slices" in message
    assert "lungs mask of whole has enough lung" in message


def test_chsnet_finetune_mixing_a_saved_correction_and_an_image_without_lung_is_one_line(
    tmp_path, tiny_set, phantom, capsys
):
    narrowed, whole = _no_lung_cases(phantom)
    folder = save_correction(narrowed, tmp_path / "corrections")
    paths = [
        write_volume(tmp_path / f"b_{name}.nii.gz", array, phantom.ct.geometry, is_label=label)
        for name, array, label in (
            ("ct", whole.ct.hu, False),
            ("l", whole.lungs, True),
            ("i", whole.infection, True),
        )
    ]
    argv = ["finetune", "--model", "rdunet", "--weights", str(tiny_set), "--epochs", "1", "--replay", "0"]
    argv += ["--corrections", str(folder), "--image", str(paths[0]), "--lungs", str(paths[1])]
    assert chsnet([*argv, "--infection", str(paths[2]), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "hold no slice to train on" in error[0], error
    assert "edited: slices 1" in error[0] and "of b_ct" in error[0]
    assert not (tmp_path / "out").exists()


def test_a_ct_with_rounded_cosines_beyond_1e_3_saves_its_correction_on_the_straightened_grid(
    tmp_path, phantom
):
    """6.0° written to 3 decimals (0.995/0.105) departs 1.05e-3 from orthonormal: it was neither straightened
    nor counted skewed, so save_correction failed writing the NIfTI files (the Fine-tune tab was broken for
    such CTs). Any direction that is not orthonormal is saved straightened."""
    from napari_chsnet.io.orientation import orthonormal_departure
    from napari_chsnet.training.corrections import correction_geometry

    c, s = round(math.cos(math.radians(6.0)), 3), round(math.sin(math.radians(6.0)), 3)
    rounded = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    assert orthonormal_departure(np.reshape(rounded, (3, 3))) > 1e-3
    ct = dataclasses.replace(phantom.ct, geometry=dataclasses.replace(phantom.ct.geometry, direction=rounded))
    geometry, record = correction_geometry(ct.geometry)
    assert record is None  # rounding, not a skew
    matrix = np.reshape(geometry.direction, (3, 3))
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)

    folder = save_correction(CorrectedCase(ct, phantom.lungs, phantom.infection, "rounded", (2,)), tmp_path)
    assert "grid_straightened" not in json.loads((folder / EDITED_SLICES_FILE).read_text())
    back = CorrectedCase.from_folder(folder)
    np.testing.assert_array_equal(back.lungs, phantom.lungs)
    np.testing.assert_allclose(np.reshape(back.ct.geometry.direction, (3, 3)), matrix, atol=1e-6)
