"""``chsnet train --config configs/<model>.yaml``: train a model with the paper's recipe.

Runs unchanged under ``torchrun`` (data-parallel, rank 0 writes), see docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from napari_chsnet.cli._common import run_reporting_errors
from napari_chsnet.cli.options import DefaultsHelpFormatter

HELP = "train CHS-Net, EAMC or RD-UNet from a configuration (configs/*.yaml)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help=HELP,
        description=HELP,
        epilog="Writes OUTPUT/<model>.safetensors, <model>_metrics.json and <model>_log.csv. Ctrl-C or SIGTERM "
        "keep the best state so far as OUTPUT/<model>.interrupted.safetensors (exit 130 / 143); continue from it "
        "with init_from (docs/training.md).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="training configuration (YAML), e.g. configs/rdunet.yaml"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="output folder (default: the config's `output`)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a checkpoint already in the output folder"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_reporting_errors("train", lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from napari_chsnet.training.config import load_config
    from napari_chsnet.training.recipes import run_training

    config = load_config(args.config)
    if args.output is not None:
        config = dataclasses.replace(config, output=str(args.output))
    _refuse_bundled_output(Path(config.output))
    path = run_training(
        config,
        on_step=_progress(),
        log=lambda message: print(message, flush=True),
        overwrite=args.overwrite,  # run_training refuses an existing checkpoint, under torchrun too
    )
    print(f"checkpoint: {path}")
    return 0


def _refuse_bundled_output(output: Path) -> None:
    """The shipped weights are only read: an output at, inside or above their folder is refused, even
    with --overwrite (the check ``chsnet finetune`` makes)."""
    from napari_chsnet.inference.versions import refuse_protected_target
    from napari_chsnet.resources_path import bundled_weights_dir

    refuse_protected_target(output, [bundled_weights_dir()])


def _progress():
    """A tqdm bar over all training steps (stderr), fed by fit's on_step."""
    from tqdm import tqdm

    bar = None

    def on_step(step: int, total: int, loss: float) -> None:
        nonlocal bar
        if bar is None or bar.total != total or step == 1:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, unit="step", leave=False)
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.refresh()

    return on_step
