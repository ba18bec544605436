"""Would averaging two models' infection probabilities beat the better one? Measured, not built.

CHS-Net's infection stage reads the lungs' box at 224² with 8 base channels; EAMC's members read it at
512² in 128² patches with 3.35 M parameters each. Different architectures and input resolutions make
different errors, so the mean of their probabilities may beat each (the usual gain of a two-model
ensemble). It costs EAMC's run time on top of CHS-Net's, so it is only worth building if the gain is
clear. Both models are read end to end exactly as ``chsnet evaluate --rotate 90`` reads them (lungs
from the bundled lung stage, each model's default mirror averaging); the ensemble's mask is
``(p_a + p_b) / 2 >= 0.5``, one equal weighting chosen before the run (no weight or threshold is
searched: the 10 slices must not choose them).

The slices: the model cards' 10 held-out COVID-SemiSeg slices (``semiseg_validation_names``). Use
weights that never trained on them: CHS-Net round 2f (``git show
5d74329:resources/weights/chsnet.safetensors``; the bundled 2h refit on them) and the bundled EAMC
(whose members trained on the other 40 only).

Rule, fixed before the first run (2026-12-06): worth building (a model choice, then the volume checks
of the cards' rules) only if the ensemble's mean and pooled Dice both beat CHS-Net 2f's by at least
0.02 and the paired per-slice gain over 2f exceeds two standard errors. Otherwise it is recorded in
CHS-Net's card as measured and not built.

First run (2026-12-06; CHS-Net 2f and the bundled EAMC, 34 s): 2f mean / pooled Dice 0.7683 / 0.8045
(the card's figures), EAMC 0.7385 / 0.7966, their mean **0.7712 / 0.8097**, paired +0.003 ± 0.002 over
2f: it fails (gain under 0.02), not built. The two share their worst slices (33: 0.683 / 0.572 →
0.672; 44: 0.593 / 0.487 → 0.589). With RD-UNet as the second model (same rule, recorded only):
0.7393 / 0.7943, −0.029 ± 0.018.

    CHSNET_SHARED_DATA=../shared/data python scripts/compare_model_ensemble.py \
        --first chsnet=CHSNET_2F.safetensors --second eamc [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from paired_figures import add_paired_changes_and_print, slice_figures

from napari_chsnet.inference.device import resolve_device
from napari_chsnet.inference.orientation import upright
from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
from napari_chsnet.inference.slices import segment_cropped_slice
from napari_chsnet.training.datasets import SEMISEG_ROTATION, read_gray_image, semiseg_validation_names


def model_and_weights(text: str) -> SegmentationSettings:
    """``MODEL`` (bundled weights) or ``MODEL=WEIGHTS`` as settings for the CPU."""
    model, _, weights = text.partition("=")
    return SegmentationSettings(model=model, device="cpu", weights=weights or None)


def masks_and_probabilities(settings: SegmentationSettings, images: list[np.ndarray]) -> tuple[list, list]:
    """The model's own masks (its threshold; EAMC: the members' vote) and its probabilities."""
    lung_stage, infection_stage, _ = build_stages(settings, resolve_device(settings.device))
    with torch.inference_mode():
        outputs = [segment_cropped_slice(image, lung_stage, infection_stage) for image in images]
    return [mask for mask, _ in outputs], [probability for _, probability in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=model_and_weights, required=True, help="MODEL[=WEIGHTS], the bar")
    parser.add_argument("--second", type=model_and_weights, required=True, help="MODEL[=WEIGHTS]")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(os.environ.get("CHSNET_SHARED_DATA", "../shared/data")) / "covid-semiseg"
    names = semiseg_validation_names(root)
    images = [upright(read_gray_image(root / "train/images" / f"{n}.jpg"), SEMISEG_ROTATION) for n in names]
    truths = [
        upright(read_gray_image(root / "train/infection_gt" / f"{n}.png") > 127, SEMISEG_ROTATION)
        for n in names
    ]
    first_masks, first = masks_and_probabilities(args.first, images)
    second_masks, second = masks_and_probabilities(args.second, images)
    mean = [(a + b) / 2 for a, b in zip(first, second, strict=True)]
    results = {
        "first": slice_figures(first_masks, truths, first),
        "second": slice_figures(second_masks, truths, second),
        "ensemble": slice_figures([p >= 0.5 for p in mean], truths, mean),
    }
    add_paired_changes_and_print(results, "first")
    print("per slice (first / second / ensemble):")
    for index, name in enumerate(names):
        row = " / ".join(f"{results[k]['per_slice_dice'][index]:.3f}" for k in results)
        print(f"  {name}: {row}")
    if args.json:
        args.json.write_text(json.dumps({"slices": names, **results}, indent=2))


if __name__ == "__main__":
    main()
