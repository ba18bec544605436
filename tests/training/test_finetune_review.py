"""Fine-tuning review fixes: merged re-saves, the same CT under another name, erase-only corrections,
unwritable or full outputs, no-improvement and lungs-only notes, what version.json records."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

from napari_chsnet.errors import InvalidVolumeError, OutputError, WeightsError
from napari_chsnet.inference import versions
from napari_chsnet.models import checkpoints as checkpoints_module
from napari_chsnet.models.checkpoints import load_checkpoint
from napari_chsnet.training import finetune as finetune_module
from napari_chsnet.training.augment import AugmentSettings
from napari_chsnet.training.corrections import (
    CorrectedCase,
    ct_sha256,
    save_correction,
    saved_corrections,
)
from napari_chsnet.training.finetune import NOT_IMPROVED, finetune
from napari_chsnet.training.loop import FitSettings, PooledScore, fit, pooled_score
from napari_chsnet.training.stage_data import StageArrays, lung_stage_arrays

TINY = {"base_channels": 4, "se_reduction": 2, "dropout": 0.0}

# --------------------------------------------------------------------------- A: re-saving merges


def test_re_saving_a_correction_keeps_the_earlier_edits_on_slices_not_edited_again(tmp_path, phantom):
    """Round 1 erased the infection of slices 2-3; after a re-segmentation (which predicts infection
    there again) round 2 edits slice 5 only: the saved correction keeps round 1's slices."""
    predicted = phantom.infection.astype(np.uint8)
    assert predicted[[2, 3, 5]].any(axis=(1, 2)).all()  # the phantom has infection on these slices
    round1 = predicted.copy()
    round1[[2, 3]] = 0
    lungs1 = phantom.lungs.copy()
    lungs1[3, :, :4] = 0  # a lung edit of round 1 too
    folder = save_correction(
        CorrectedCase(phantom.ct, lungs1, round1, "P1", (2, 3), lungs_edited=True), tmp_path
    )

    round2 = predicted.copy()  # the new segmentation predicts infection on 2-3 again
    round2[5] = 0
    round2_before = round2.copy()
    again = CorrectedCase(phantom.ct, phantom.lungs, round2, "P1", (5,), infection_edited=True)
    assert save_correction(again, tmp_path) == folder

    saved = CorrectedCase.from_folder(folder)
    assert saved.edited_slices == (2, 3, 5)  # was (5,): round 1's slices were lost
    assert not saved.infection[[2, 3, 5]].any()  # round 1's erasures and round 2's
    assert np.array_equal(saved.infection[[0, 1, 4, 6, 7]], predicted[[0, 1, 4, 6, 7]])
    assert np.array_equal(saved.lungs[3], lungs1[3]) and np.array_equal(saved.lungs[5], phantom.lungs[5])
    assert saved.lungs_edited and saved.infection_edited
    assert np.array_equal(round2, round2_before)  # the caller's arrays are not written into
    assert [p.name for p in tmp_path.iterdir()] == ["P1"]  # no staging or set-aside folder left


def test_a_correction_with_unknown_edited_slices_replaces_and_is_kept_where_not_edited(tmp_path, phantom):
    whole = phantom.infection.astype(np.uint8).copy()
    whole[4] = 0
    folder = save_correction(CorrectedCase(phantom.ct, phantom.lungs, whole, "P1"), tmp_path)  # every slice
    later = phantom.infection.astype(np.uint8).copy()
    later[6] = 0
    save_correction(CorrectedCase(phantom.ct, phantom.lungs, later, "P1", (6,)), tmp_path)
    saved = CorrectedCase.from_folder(folder)
    assert saved.edited_slices is None  # still "every slice was corrected"
    assert not saved.infection[4].any() and not saved.infection[6].any()
    # a case without known edited slices is a whole correction: it replaces the saved one
    save_correction(CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "P1"), tmp_path)
    assert np.array_equal(CorrectedCase.from_folder(folder).infection, phantom.infection > 0)


# --------------------------------------------------------------------------- B: same CT, another name


def test_the_same_ct_under_another_name_updates_its_folder_and_is_never_replayed_into_itself(
    tiny_set, phantom, monkeypatch, tmp_path
):
    monkeypatch.setenv("CHSNET_SHARED_DATA", str(tmp_path / "no_shared_data"))  # no COVID-SemiSeg replay
    first = save_correction(CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "sample_ct", (2, 3)))
    renamed = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "patient A", (4,))
    assert save_correction(renamed) == first  # was a second folder, patient_A
    assert [p.name for p in saved_corrections()] == ["sample_ct"]

    # a copy saved by an older version under the old name is excluded from replay by fingerprint
    other = dataclasses.replace(phantom.ct, hu=phantom.ct.hu + 7)
    save_correction(CorrectedCase(other, phantom.lungs, phantom.infection, "another patient", (2, 3)))
    sha = ct_sha256(phantom.ct.hu)
    assert [p.name for p in saved_corrections(exclude=["patient A"], exclude_ct=[sha])] == ["another_patient"]
    drawn = finetune_module._replay_slices(
        0.5, 10, None, ["patient A"], 0, lambda _message: None, exclude_ct=[sha]
    )
    assert drawn and {s.case_id for s in drawn} == {"another_patient"}

    # through finetune: only the other patient's two edited slices are replayed (not its own two)
    result = finetune(tiny_set, "rdunet", [renamed], epochs=1, replay=0.9, batch_size=4)
    assert (result.corrected_slices, result.replay_slices) == (1, 2)


# --------------------------------------------------------------------------- C: pooled score, ties


def _lung_arrays(phantom):
    from napari_chsnet.training.datasets import slices_of_volume

    return lung_stage_arrays(slices_of_volume(phantom.ct, phantom.lungs, phantom.infection, "p"), 64)


def test_ties_go_to_the_later_epoch_only_when_asked(phantom):
    from napari_chsnet.models.factory import build_model

    data = _lung_arrays(phantom).subset([0, 1])
    settings = FitSettings(epochs=3, batch_size=2, patience=10, augment=AugmentSettings.none())

    def constant(*_args):
        return 0.5

    for later, expected in ((False, 1), (True, 3)):  # chsnet train keeps the first of equal epochs
        torch.manual_seed(0)
        net = build_model("chsnet", base_channels=4).lung_net
        loss = torch.nn.BCEWithLogitsLoss()
        result = fit(net, data, data, loss, settings, score=constant, ties_to_later=later)
        assert result.best_epoch == expected


def test_pooled_score_gives_partial_credit_where_per_slice_dice_is_0_or_1():
    masks = torch.zeros(2, 2, 4, 4)
    masks[:, 1] = 1  # all lung, no infection (an erase-only correction)

    class Fixed(torch.nn.Module):
        def __init__(self, positives: int):
            super().__init__()
            self.positives, self.weight = positives, torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            out = torch.full_like(images, -5.0)
            out.view(-1)[: self.positives] = 5.0
            return out

    data = StageArrays(torch.zeros(2, 1, 4, 4), masks, torch.ones(2))
    few, many = pooled_score(Fixed(2), data), pooled_score(Fixed(8), data)
    assert few.truth_pixels == 0 and few.false_positive_fraction == pytest.approx(2 / 32)
    assert few.value > many.value  # fewer false positives score higher
    assert pooled_score(Fixed(0), data).value == 1.0


def _erase_only_case(phantom, edited=(2, 3)):
    erased = phantom.infection.astype(np.uint8).copy()
    erased[list(edited)] = 0
    return CorrectedCase(phantom.ct, phantom.lungs, erased, "fp", edited, infection_edited=True)


def test_an_erase_only_correction_is_measured_by_its_false_positives_and_equal_scores_keep_the_start(
    tiny_set, phantom
):
    """The reviewer's fp_epochs.py: per-slice Dice scored the start and every epoch 0, epoch 1 replaced
    the starting weights on a tie, and the fine-tune reported "0.000 -> 0.000" as a new version. The
    untrained tiny network marks the whole lung as infection before and after these few steps."""
    result = finetune(
        tiny_set,
        "chsnet",
        [_erase_only_case(phantom)],
        epochs=2,
        batch_size=2,
        replay=0.0,
        augment=AugmentSettings.none(),
    )
    assert result.false_positive_before == pytest.approx(
        1.0
    ) and result.false_positive_after == pytest.approx(1.0)
    assert result.improved is False and result.notes == [NOT_IMPROVED]
    start, written = load_checkpoint(tiny_set / "chsnet.safetensors"), load_checkpoint(result.checkpoint)
    assert all(torch.equal(start.state_dict[k], written.state_dict[k]) for k in start.state_dict)
    info = json.loads((result.weights_dir / "version.json").read_text())
    assert info["improved"] is False and info["false_positive_before"] == 1.0


def test_fine_tuning_keeps_the_best_pooled_epoch_and_of_equal_ones_the_later(tiny_set, phantom, monkeypatch):
    scores = iter([0.93, 0.95, 0.95])  # epochs 1-3 on the corrected slices; the start scores 0 (all FP)
    monkeypatch.setattr(finetune_module, "pooled_score_value", lambda *_args: next(scores))
    fits = []

    def recording_fit(*args, **kwargs):
        fits.append(fit(*args, **kwargs))
        return fits[-1]

    monkeypatch.setattr(finetune_module, "fit", recording_fit)
    result = finetune(
        tiny_set,
        "chsnet",
        [_erase_only_case(phantom)],
        epochs=3,
        batch_size=2,
        replay=0.0,
        learning_rate=1e-2,
    )
    (fitted,) = fits
    assert fitted.best_epoch == 3 and result.improved and result.notes == []
    written = load_checkpoint(result.checkpoint).state_dict
    kept = {f"infection_net.{k}": v for k, v in fitted.best_state.items()}
    floats = [k for k, v in kept.items() if v.is_floating_point()]
    assert floats and all(torch.allclose(written[k], kept[k], atol=1e-2) for k in floats)  # stored as fp16


# --------------------------------------------------------------------------- D: unwritable, disk full


def test_an_output_that_cannot_be_written_is_refused_before_any_data_is_read(tiny_set, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    never_read = [(tmp_path / "missing_ct.nii.gz", tmp_path / "l.nii.gz", tmp_path / "i.nii.gz")]
    with pytest.raises(
        OutputError, match="cannot write the new weights set .*choose a writable output folder"
    ):
        finetune(tiny_set, "rdunet", never_read, output=blocker / "out")
    monkeypatch.setenv("CHSNET_HOME", str(blocker / "home"))  # the default place, under a file
    with pytest.raises(OutputError, match="set CHSNET_HOME to a writable folder"):
        finetune(tiny_set, "rdunet", never_read)


@pytest.mark.parametrize(
    "failure",
    [
        SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })'
        ),
        OSError(28, "No space left on device"),
    ],
)
def test_a_full_disk_while_saving_is_one_line_and_leaves_no_version(tiny_set, phantom, monkeypatch, failure):
    def full(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr(checkpoints_module, "save_file", full)
    with pytest.raises(OutputError, match="check free disk space"):
        finetune(
            tiny_set, "rdunet", [(phantom.ct, phantom.lungs, phantom.infection, [3])], epochs=1, replay=0.0
        )
    folder = versions.user_weights_dir() / "rdunet"
    assert list(folder.iterdir()) == [] and versions.list_versions() == []  # no version, no staging


def test_save_checkpoint_turns_write_errors_into_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    from napari_chsnet.models.factory import build_model

    def full(*_args, **_kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(checkpoints_module, "save_file", full)
    with pytest.raises(OutputError, match=r"could not write .*x\.safetensors \(Error while serializing"):
        checkpoints_module.save_checkpoint(
            tmp_path / "x.safetensors", build_model("rdunet", **TINY), "rdunet"
        )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- E: no improvement, lungs only


def test_no_epoch_improving_is_said_and_lungs_only_corrections_hint_at_tuning_the_lungs(
    tiny_set, phantom, monkeypatch
):
    monkeypatch.setattr(finetune_module, "pooled_score_value", lambda *_args: -1.0)  # every epoch worse
    lungs = phantom.lungs.copy()
    lungs[3][lungs[3] == 1] = 2  # a left/right relabelling of slice 3: the lungs alone were corrected
    case = CorrectedCase(
        phantom.ct, lungs, phantom.infection, "L", (3,), lungs_edited=True, infection_edited=False
    )
    said = []
    result = finetune(tiny_set, "chsnet", [case], epochs=1, replay=0.0, log=said.append)
    assert result.improved is False and result.notes[0] == NOT_IMPROVED
    assert "only the lung labels were corrected" in result.notes[1] and "--tune-lungs" in result.notes[1]
    assert said[-1].startswith("wrote ") and NOT_IMPROVED not in said[-1]  # the caller shows the notes, once
    start, written = load_checkpoint(tiny_set / "chsnet.safetensors"), load_checkpoint(result.checkpoint)
    assert all(torch.equal(start.state_dict[k], written.state_dict[k]) for k in start.state_dict)
    assert json.loads((result.weights_dir / "version.json").read_text())["improved"] is False


@pytest.mark.parametrize(("vote_after", "improved"), [(0.876, False), (0.95, True)])
def test_an_eamc_fine_tune_is_kept_only_when_the_members_vote_improves(
    tiny_set, phantom, monkeypatch, vote_after, improved
):
    """Each member was kept when it beat its own patch check, and the set reported improved although
    the ensemble's vote scored worse (0.8892 -> 0.876)."""
    epochs = itertools.count()  # every member's epoch beats its start on its patches
    monkeypatch.setattr(finetune_module, "pooled_score_value", lambda *_args: float(next(epochs)))
    votes = iter([PooledScore(0.8892, 100, 0.01), PooledScore(vote_after, 100, 0.01)])
    monkeypatch.setattr(finetune_module, "pooled_score", lambda *_args, **_kwargs: next(votes))
    case = (phantom.ct, phantom.lungs, phantom.infection, [3])
    result = finetune(tiny_set, "eamc", [case], epochs=1, batch_size=2, replay=0.0, learning_rate=1e-2)

    assert result.improved is improved
    assert result.notes == ([] if improved else [NOT_IMPROVED])
    assert result.dice_after == (vote_after if improved else 0.8892)
    start, written = load_checkpoint(tiny_set / "eamc.safetensors"), load_checkpoint(result.checkpoint)
    unchanged = all(torch.equal(start.state_dict[k], written.state_dict[k]) for k in start.state_dict)
    assert unchanged is not improved
    assert json.loads((result.weights_dir / "version.json").read_text())["improved"] is improved


def test_lung_corrections_for_another_model_say_where_learnt_lungs_are_used(tiny_set, phantom):
    """The note said rdunet uses CHS-Net's lung stage, but an rdunet set keeps its own copy: tuning
    CHS-Net's lungs never changes an rdunet run."""
    lungs = phantom.lungs.copy()
    lungs[3][lungs[3] == 1] = 2
    case = CorrectedCase(phantom.ct, lungs, phantom.infection, "L", (3,), lungs_edited=True)
    result = finetune(tiny_set, "rdunet", [case], epochs=1, replay=0.0)
    (note,) = [n for n in result.notes if "lung labels" in n]
    assert "rdunet sets keep their own copy of CHS-Net's lung stage" in note
    assert "used when segmenting with chsnet" in note


# --------------------------------------------------------------------------- F: records and messages


def test_version_json_records_all_slices_for_cases_without_edited_slices(tiny_set, phantom):
    result = finetune(
        tiny_set, "rdunet", [(phantom.ct, phantom.lungs, phantom.infection)], epochs=1, replay=0.0
    )
    info = json.loads((result.weights_dir / "version.json").read_text())
    assert info["settings"]["only_edited_slices"] is False  # was True although every slice was trained
    (trained,) = info["slices_trained"]
    assert trained["case"] == "case1" and not trained["only_edited"]
    assert len(trained["slices"]) == result.corrected_slices


def test_no_slice_to_train_on_gives_advice_that_applies(tiny_set, phantom):
    empty = np.zeros_like(phantom.lungs)
    no_lungs = (phantom.ct, empty, np.zeros_like(phantom.infection))  # --image case: every slice already
    with pytest.raises(InvalidVolumeError, match="is it the lung mask of that CT") as caught:
        finetune(tiny_set, "rdunet", [no_lungs], epochs=1)
    assert "--all-slices" not in str(caught.value)
    lungs = phantom.lungs.copy()
    lungs[0] = 0
    narrowed = CorrectedCase(phantom.ct, lungs, phantom.infection * (lungs > 0), "P", (0,))
    with pytest.raises(InvalidVolumeError, match=r"P: slices 0\) has lung.*--all-slices"):
        finetune(tiny_set, "rdunet", [narrowed], epochs=1)


def test_base_weights_that_do_not_exist_are_named(tmp_path, phantom):
    with pytest.raises(WeightsError, match=r"the base weights .*nope do not exist"):
        finetune(tmp_path / "nope", "chsnet", [(phantom.ct, phantom.lungs, phantom.infection)])


def test_a_version_whose_weights_were_deleted_by_hand_is_dropped_from_the_lists():
    folder = versions.user_weights_dir() / "chsnet" / "20240101-120000"
    folder.mkdir(parents=True)
    (folder / "chsnet.safetensors").write_bytes(b"weights")
    (folder / "version.json").write_text(
        json.dumps({"model": "chsnet", "files": {"chsnet.safetensors": "x"}})
    )
    assert [v.path for v in versions.list_versions("chsnet")] == [folder]
    (folder / "chsnet.safetensors").unlink()  # deleted by hand (a file manager, a sync tool)
    assert versions.list_versions("chsnet") == []
    with pytest.raises(WeightsError, match="lost chsnet.safetensors"):
        versions.weights_set_dir("chsnet", folder.name)
