"""``chsnet info``: versions, devices, and where weights are looked up (answers without loading a model).

A fine-tuned version chosen in napari ("active") is what napari segments with; ``chsnet segment``
takes the bundled weights unless ``--weights`` names a set, so info prints the path to pass.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info", help="show versions, devices and weights locations",
        description="Print software versions, the devices this machine offers and where weights are looked up.",
    )  # fmt: skip
    parser.set_defaults(run=run, parser=parser)
    return parser


def _weights_files(folder) -> list:
    from napari_chsnet.inference.weights import weights_file_name
    from napari_chsnet.registry import MODEL_KEYS

    paths = (folder / weights_file_name(model) for model in MODEL_KEYS)
    return [path for path in paths if path.is_file()]


def run(args: argparse.Namespace) -> int:
    from napari_chsnet.inference.device import (
        CPU_BF16_VARIABLE,
        available_devices,
        describe_device,
        precision_name,
        resolve_device,
    )
    from napari_chsnet.inference.run_info import software_versions
    from napari_chsnet.inference.versions import list_versions, user_weights_dir
    from napari_chsnet.models.checkpoints import file_sha256
    from napari_chsnet.registry import MODEL_KEYS
    from napari_chsnet.resources_path import bundled_weights_dir

    for name, version in software_versions().items():
        print(f"{name:<14}{version}")
    devices = available_devices()
    print(f"{'devices':<14}{', '.join(devices)} (auto = {describe_device(resolve_device('auto'))})")
    # bfloat16 where the CPU has AMX; the variable is how to get the cards' float32 figures exactly
    print(f"{'cpu precision':<14}{precision_name(resolve_device('cpu'))} ({CPU_BF16_VARIABLE}=0: float32)")
    bundled = bundled_weights_dir()
    files = _weights_files(bundled)
    print(f"{'bundled':<14}{bundled}  [{', '.join(f.name for f in files) or 'none'}]")
    for path in files:  # the hashes the model cards quote, to tell which weights a result came from
        print(f"  {path.name:<20}sha256 {file_sha256(path)}")
    user = user_weights_dir()
    print(f"{'user weights':<14}{user}  (set CHSNET_HOME to move it; fine-tuned sets live here)")
    for model in MODEL_KEYS:
        versions = list_versions(model)
        if versions:
            print(f"  {model}: {len(versions)} fine-tuned version(s); {_active_line(model)}")
    return 0


def _active_line(model: str) -> str:
    """Which set napari segments ``model`` with, and that ``chsnet segment`` only takes it when told."""
    from napari_chsnet.errors import WeightsError
    from napari_chsnet.inference.versions import BUNDLED, active_choice, weights_set_dir

    choice = active_choice(model)
    if choice == BUNDLED:
        return "none active: napari and chsnet segment use the bundled weights"
    try:
        folder = weights_set_dir(model, choice)
    except WeightsError:
        return f"active in napari: {choice}, which is missing, so napari uses the bundled weights"
    from napari_chsnet.cli.finetune import segment_command

    return (
        f"active in napari: {choice}; chsnet segment uses it only when given: "
        f"{segment_command(model, folder)} (without --weights: the bundled weights)"
    )
