"""Compare how EAMC's members read the 512² lung crop, on slices no member trained on.

The paper (Pal Das et al., Sec. 5.1) cuts the crop into 16 non-overlapping 128² patches at inference, as
in training. AMC-Net is fully convolutional, so a member can also read

* ``whole``: the 512² crop in one pass (same cost; no tile borders, every pixel sees its context), or
* ``overlap``: 128² tiles every 64 pixels (49 tiles, 3 times the cost), probabilities averaged.

Why: the bundled members mark dense lesions only at their rim and miss small lesions (the model
card's failure modes); a 128² tile that lies inside a large opacity, or cuts a lesion at its edge, sees
no lung around it. Each member is scored alone (threshold 0.5, resampled back as
``EAMCInfectionStage`` does) on the expert-labelled slices of its own left-out group (the split of
``scripts/calibrate_eamc_threshold.py``); the 10 validation slices of the model cards are not read.

Use weights whose members all share the config's split: round 9 (``git show
ecd993f:resources/weights/eamc.safetensors``), not the bundled average (its round-11 ingredient drew
other groups over 340 slices).

Rule, fixed before the first run (2026-12-06): a mode other than ``patches`` is a candidate only if
both its mean and pooled Dice over the 40 left-out slices beat ``patches``'; ``whole`` is preferred
(same cost) unless ``overlap`` beats it by more than two standard errors of the paired per-slice
difference. The candidate then faces the model card's end-to-end rule.

First run (round 9, 40 slices): patches mean/pooled Dice 0.6668 / 0.6945; whole 0.6561 / 0.6861
(−0.011 ± 0.008 per slice); overlap 0.6790 / 0.7097 (+0.012 ± 0.003). So ``overlap`` is the candidate.

Second rule, fixed before the second run (same day), since EAMC's default also averages each slice
with its mirror (the ``+mirror`` modes: a member's probability averaged with that of the mirrored
crop, which for one member is what the vote of its two outputs gives): ``overlap+mirror`` (6 times the
paper's cost) is chosen over ``overlap`` only if it beats it by more than two standard errors; the
chosen one goes on only if both its mean and pooled Dice beat ``patches+mirror``, the default today.

    CHSNET_SHARED_DATA=../shared/data python scripts/compare_eamc_tiling.py \
        --config configs/eamc_round9_continue.yaml --weights ROUND9.safetensors [--json F]
"""

from __future__ import annotations

import json

import numpy as np
import torch
from calibrate_eamc_threshold import members_and_their_left_out_slices, vote_on_slice_grid
from paired_figures import add_paired_changes_and_print, paired_change, slice_figures

from napari_chsnet.inference.preprocessing import CropBox, crop_and_resize, from_tiles, to_tiles

MODES = ("patches", "whole", "overlap", "patches+mirror", "overlap+mirror")
STRIDES = {"patches": 128, "overlap": 64}


def member_probability(member: torch.nn.Module, crop: torch.Tensor, patch: int, mode: str) -> torch.Tensor:
    """One member's probability on a ``(1, 1, S, S)`` crop read as ``mode`` says."""
    if mode.endswith("+mirror"):
        tiling = mode.removesuffix("+mirror")
        mirrored = member_probability(member, crop.flip(-1), patch, tiling).flip(-1)
        return (member_probability(member, crop, patch, tiling) + mirrored) / 2
    if mode == "whole":
        return member(crop).float().sigmoid()
    stride = STRIDES[mode] * patch // 128
    tiles = member(to_tiles(crop, patch, stride)).float().sigmoid()
    return from_tiles(tiles, 1, crop.shape[-1], stride)


def main() -> None:
    args, stage, expert, groups = members_and_their_left_out_slices(
        __doc__.splitlines()[0], "an eamc.safetensors sharing the config's split", weights_required=True
    )
    masks: dict[str, list[np.ndarray]] = {mode: [] for mode in MODES}
    truths = []
    with torch.inference_mode():
        for index, (slice_, group) in enumerate(zip(expert, groups, strict=True)):
            shape = slice_.image.shape
            crop = crop_and_resize(slice_.image[None], CropBox.full(*shape), stage.slice_size).to(
                stage.device
            )
            member = stage.network.members[group]
            for mode in MODES:
                probability = member_probability(member, crop, stage.patch_size, mode).cpu()
                masks[mode].append(vote_on_slice_grid(probability, 0.5, shape))
            truths.append(slice_.infection)
            print(f"slice {index + 1}/{len(expert)} (member {group})", flush=True)
    figures = {mode: slice_figures(masks[mode], truths) for mode in MODES}
    add_paired_changes_and_print(figures, "patches")
    for mode, other in (("overlap", "whole"), ("overlap+mirror", "overlap"), ("overlap", "patches+mirror")):
        change, error = paired_change(figures[mode], figures[other])
        print(f"{mode} vs {other} {change:+.4f} ± {error:.4f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
