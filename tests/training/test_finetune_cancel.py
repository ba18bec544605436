"""A Cancel that comes after the last batch (during the final Dice evaluation or while the new set is
written) still leaves no version: ``finetune`` asks ``should_stop`` again before the set is put in place."""

from __future__ import annotations

import pytest

from napari_chsnet.inference.versions import list_versions, user_weights_dir
from napari_chsnet.training import finetune as finetune_module
from napari_chsnet.training.corrections import CorrectedCase
from napari_chsnet.training.finetune import finetune
from napari_chsnet.training.loop import Cancelled


def _nothing_written(model: str) -> bool:
    versions = user_weights_dir() / model
    return (not versions.exists() or list(versions.iterdir()) == []) and list_versions() == []


def test_cancel_after_the_last_batch_leaves_no_version(tiny_set, phantom):
    steps: list[tuple[int, int]] = []
    polls: list[int] = []

    def should_stop() -> bool:
        # False at every batch (fit's own polls); True once asked after the last one
        polls.append(len(steps))
        return bool(steps) and len(polls) > steps[-1][1]

    with pytest.raises(Cancelled):
        finetune(
            tiny_set,
            "rdunet",
            [(phantom.ct, phantom.lungs, phantom.infection)],
            epochs=1,
            batch_size=4,
            replay=0.0,
            on_step=lambda step, total, _loss: steps.append((step, total)),
            should_stop=should_stop,
        )
    assert steps and steps[-1][0] == steps[-1][1]  # every batch ran
    assert _nothing_written("rdunet")


def test_cancel_during_the_final_dice_evaluation_leaves_no_version(tiny_set, phantom, monkeypatch):
    stop = []
    evaluate = finetune_module.pooled_score

    def evaluate_then_cancel(*args, **kwargs):
        score = evaluate(*args, **kwargs)
        stop.append(True)  # Cancel pressed while the fine-tune measured Dice (before, then after)
        return score

    monkeypatch.setattr(finetune_module, "pooled_score", evaluate_then_cancel)
    calls = []

    def should_stop() -> bool:
        calls.append(len(stop))
        return len(stop) >= 2  # only after the "after" evaluation, which follows the last batch

    case = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "P1", (2, 3))
    with pytest.raises(Cancelled):
        finetune(tiny_set, "chsnet", [case], epochs=1, batch_size=4, replay=0.0, should_stop=should_stop)
    assert calls[:-1] and all(n == 1 for n in calls[:-1])  # fit polled at every batch, never cancelled
    assert _nothing_written("chsnet")


def test_training_slice_indices_match_the_slices_trained_on(phantom):
    case = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "P1", (0, 2, 3))
    for only_edited in (True, False):
        trained = [int(s.source.rsplit("=", 1)[1]) for s in case.labelled_slices(only_edited)]
        assert case.training_slice_indices(only_edited) == trained
