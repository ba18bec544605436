"""Choose EAMC's vote threshold on slices no member trained on: each member's own left-out group.

EAMC's members are trained leave-one-group-out (training/recipes.py: ``_train_eamc``): the training
slices are split into K seeded groups and member k never sees group k. This script rebuilds that split
from the EAMC training config (its validation slices, unlabelled count, seed and members; every
``configs/eamc*.yaml`` after round 1 shares them), runs each member alone as ``chsnet evaluate`` runs the ensemble (the whole slice as the crop, resized
to 512, cut into 128² patches, the vote resampled back) on the *expert-labelled* slices of its own left-out group, and prints their mean
and pooled Dice for each threshold. The 10 validation slices of the model cards are not read.

Why a threshold other than the papers' 0.5: the members learn with focal loss at α = 0.8, which weighs
the positive class four times the negative one, so their probabilities run high (precision 0.63 against
recall 0.77 on the validation slices).

Outcome for round 5 (resources/weights/eamc.md, "Vote threshold"): best 0.56 on the left-out groups,
but the ensemble at 0.56 scored lower on the 10 validation slices (0.644 against 0.671), so 0.5 stays.

    CHSNET_SHARED_DATA=../shared/data python scripts/calibrate_eamc_threshold.py \
        --config configs/eamc_round5_continue.yaml [--weights W] [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_chsnet.inference.device import resolve_device
from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
from napari_chsnet.inference.preprocessing import CropBox, crop_and_resize, restore_probabilities
from napari_chsnet.models.metrics import segmentation_metrics
from napari_chsnet.training.config import TrainConfig, load_config
from napari_chsnet.training.datasets import read_semiseg, semiseg_validation_names
from napari_chsnet.training.recipes import eamc_member_groups

THRESHOLDS = np.round(np.arange(0.30, 0.801, 0.01), 2)


def left_out_groups(config: TrainConfig) -> tuple[list, np.ndarray]:
    """The expert-labelled training slices in training order and each one's group (its left-out member).

    ``gather_slices`` puts the expert slices first and the ``unlabelled`` pseudo-labelled ones after
    them; ``_train_eamc`` draws the groups over all of them, so the draw covers that many entries.
    """
    data = config.data
    root = Path(data.semiseg)
    held_out = set(semiseg_validation_names(root, data.validation_slices))
    expert = [s for s in read_semiseg(root, "train") if Path(s.source).stem not in held_out]
    groups = eamc_member_groups(len(expert) + data.unlabelled, config.eamc.members, config.seed)
    return expert, groups[: len(expert)]


def member_probabilities(slice_, eamc_stage) -> torch.Tensor:
    """``(K, 1, 1, S, S)``: every member's infection probability on one slice's crop (the whole slice).

    As in ``chsnet evaluate``, EAMC reads the whole image as its crop (the lung stage only gives the
    lungs, which the scored infection mask is not restricted to), so no lung stage is needed here.
    """
    crops = crop_and_resize(slice_.image[None], CropBox.full(*slice_.image.shape), eamc_stage.slice_size)
    return eamc_stage._member_probabilities(crops)


def vote_on_slice_grid(probability: torch.Tensor, threshold: float, shape: tuple[int, int]) -> np.ndarray:
    """One member's vote at ``threshold``, resampled to the slice as 0/1 and cut at 0.5, as
    ``EAMCInfectionStage`` resamples the ensemble's vote."""
    votes = (probability >= threshold).float()
    return restore_probabilities(votes, CropBox.full(*shape), *shape)[0] >= 0.5


def members_and_their_left_out_slices(description: str, weights_help: str, weights_required: bool = False):
    """Parse ``--config``, ``--weights`` and ``--json``; build the EAMC stage (members alone, no mirror)
    and the expert slices each member left out. Returns ``(args, stage, expert, groups)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, required=True, help="the EAMC training config of the weights")
    parser.add_argument("--weights", type=Path, default=None, required=weights_required, help=weights_help)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    settings = SegmentationSettings(model="eamc", weights=args.weights, mirror_averaging=False)
    _, stage, _ = build_stages(settings, resolve_device(settings.device))
    config = load_config(args.config)
    members = len(stage.network.members)
    if config.model != "eamc" or config.eamc.members != members:
        parser.error(f"{args.config} is not an EAMC config with the weights' {members} members")
    expert, groups = left_out_groups(config)
    print(
        f"{len(expert)} expert slices; left out per member: {np.bincount(groups, minlength=members).tolist()}"
    )
    return args, stage, expert, groups


def main() -> None:
    args, eamc_stage, expert, groups = members_and_their_left_out_slices(
        __doc__.splitlines()[0], "an eamc.safetensors (default: bundled)"
    )
    own_probabilities, truths = [], []
    with torch.inference_mode():
        for slice_, group in zip(expert, groups, strict=True):
            own_probabilities.append(member_probabilities(slice_, eamc_stage)[group])
            truths.append(slice_.infection)
    table = {}
    for threshold in THRESHOLDS:
        masks = [
            vote_on_slice_grid(p, threshold, t.shape) for p, t in zip(own_probabilities, truths, strict=True)
        ]
        scores = segmentation_metrics(masks, truths)
        table[float(threshold)] = {
            "mean_dice": round(scores["mean"]["dice"], 4),
            "pooled_dice": round(scores["pooled"]["dice"], 4),
            "mean_precision": round(scores["mean"]["precision"], 4),
            "mean_recall": round(scores["mean"]["recall"], 4),
        }
        row = table[float(threshold)]
        print(
            f"threshold {threshold:.2f}: mean Dice {row['mean_dice']:.4f}  pooled {row['pooled_dice']:.4f}  "
            f"precision {row['mean_precision']:.4f}  recall {row['mean_recall']:.4f}"
        )
    best = max(table, key=lambda t: table[t]["mean_dice"])
    print(f"best mean Dice at threshold {best:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"per_threshold": table, "best": best}, indent=2))


if __name__ == "__main__":
    main()
