"""Fine-tuning cost on this machine: one epoch over the corrected slices of a 512 x 512 x 150 case,
and training throughput (slices per second) of each model.

    python benchmarks/bench_finetune.py [--threads 2] [--edited 20] [--models chsnet rdunet eamc]
                                        [--shape 150 512 512] [--output bench_finetune.json]

Networks are at their paper width (random init: the cost does not depend on the weights). The case
is a synthetic phantom; "corrected slices" are ``--edited`` evenly spread slices through the lungs
(``--edited 0``: every slice with lung). Throughput: ``--steps`` optimiser steps of batch
``--batch`` at each model's training input (CHS-Net infection stage and RD-UNet 256 x 256 slices,
EAMC 128 x 128 patches, counted as slices of 512 x 512 / 16), after one warm-up step.
Run it on an otherwise idle machine: OpenMP threads that lose their core make every step wait.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_chsnet.inference.preprocessing import (
    EAMC_PATCH_SIZE,
    EAMC_SLICE_SIZE,
    INFECTION_INPUT_SIZE,
    LUNG_INPUT_SIZE,
)
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.models.checkpoints import save_checkpoint
from napari_chsnet.models.factory import build_model
from napari_chsnet.training.augment import AugmentSettings
from napari_chsnet.training.corrections import CorrectedCase
from napari_chsnet.training.finetune import FINETUNE_LOSSES, finetune
from napari_chsnet.training.loop import FitSettings, fit
from napari_chsnet.training.stage_data import StageArrays

MODELS = ("chsnet", "rdunet", "eamc")


def paper_weights_set(folder: Path) -> Path:
    """Random-init networks at their paper configuration, as a weights set."""
    for model in MODELS:
        preprocessing = {
            "lung_input_size": LUNG_INPUT_SIZE,
            "infection_input_size": EAMC_SLICE_SIZE if model == "eamc" else INFECTION_INPUT_SIZE,
            "patch_size": EAMC_PATCH_SIZE,
        }
        save_checkpoint(
            folder / f"{model}.safetensors",
            build_model(model),
            model,
            metadata={"preprocessing": preprocessing},
            half_precision=True,
        )
    return folder


def throughput_slices_per_s(model: str, steps: int, batch: int) -> float:
    """Training slices (or slice equivalents) per second at the model's training input."""
    network = build_model(model)
    if model == "chsnet":
        stage, size, per_slice = network.infection_net, INFECTION_INPUT_SIZE, 1.0

        def prepare(images, masks):
            return network.infection_input(images, masks[:, 1:2]), masks[:, :1]
    elif model == "eamc":
        stage, size, per_slice = network.members[0], EAMC_PATCH_SIZE, (EAMC_PATCH_SIZE / EAMC_SLICE_SIZE) ** 2

        def prepare(images, masks):
            return images, masks[:, :1]
    else:
        stage, size, per_slice = network, INFECTION_INPUT_SIZE, 1.0

        def prepare(images, masks):
            return images, masks[:, :1]

    generator = torch.Generator().manual_seed(0)
    n = batch * (steps + 1)
    images = torch.rand(n, 1, size, size, generator=generator)
    masks = torch.cat([(images > 0.7).float(), torch.ones_like(images)], dim=1)
    data = StageArrays(images, masks, torch.ones(n))
    settings = FitSettings(epochs=1, batch_size=batch, augment=AugmentSettings(), patience=2)
    stamps = []
    fit(
        stage,
        data,
        StageArrays.empty(2, size),
        FINETUNE_LOSSES[model](),
        settings,
        prepare,
        on_step=lambda step, total, loss: stamps.append(time.perf_counter()),
    )
    seconds = stamps[-1] - stamps[0]  # the first step (warm-up) is not timed
    return steps * batch * per_slice / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--edited", type=int, default=20, help="corrected slices (0: every slice with lung)")
    parser.add_argument("--shape", type=int, nargs=3, default=(150, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps for the throughput")
    parser.add_argument("--batch", type=int, default=4, help="batch size (fine-tune default)")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    phantom = make_phantom(tuple(args.shape), seed=0)
    print(f"phantom {tuple(args.shape)} in {time.perf_counter() - started:.0f} s")
    lung_slices = np.nonzero(phantom.lungs.reshape(phantom.lungs.shape[0], -1).any(1))[0]
    edited = None
    if args.edited:
        edited = tuple(
            int(z) for z in lung_slices[np.linspace(0, len(lung_slices) - 1, args.edited).round().astype(int)]
        )
    case = CorrectedCase(phantom.ct, phantom.lungs, phantom.infection, "bench", edited)

    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = paper_weights_set(Path(scratch) / "base")
        for model in args.models:
            started = time.perf_counter()
            result = finetune(
                base,
                model,
                [case],
                epochs=1,
                replay=0.0,
                batch_size=args.batch,
                device="cpu",
                output=Path(scratch) / f"tuned_{model}",
            )
            total = time.perf_counter() - started
            figures[model] = {
                "corrected_slices": result.corrected_slices,
                "epoch_s": round(sum(r.seconds for r in result.history), 1),  # EAMC: the last member's epoch
                "finetune_call_s": round(total, 1),
                "train_slices_per_s": round(throughput_slices_per_s(model, args.steps, args.batch), 2),
            }
            print(model, figures[model], flush=True)
    print(f"\n{'model':8} {'slices':>6} {'epoch s':>8} {'call s':>8} {'slices/s':>9}")
    for model, row in figures.items():
        print(
            f"{model:8} {row['corrected_slices']:>6} {row['epoch_s']:>8} {row['finetune_call_s']:>8} "
            f"{row['train_slices_per_s']:>9}"
        )
    if args.output:
        args.output.write_text(
            json.dumps({"threads": args.threads, "shape": list(args.shape), "figures": figures}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
