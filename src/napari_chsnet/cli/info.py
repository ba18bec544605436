"""``chsnet info``: versions, devices, and where weights are looked up (answers without loading a model)."""

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
    from napari_chsnet.inference.device import available_devices, describe_device, resolve_device
    from napari_chsnet.registry import MODEL_KEYS
    from napari_chsnet.report.manifest import software_versions
    from napari_chsnet.resources_path import bundled_weights_dir
    from napari_chsnet.training.checkpoints import file_sha256
    from napari_chsnet.training.versions import active_choice, list_versions, user_weights_dir

    for name, version in software_versions().items():
        print(f"{name:<14}{version}")
    devices = available_devices()
    print(f"{'devices':<14}{', '.join(devices)} (auto = {describe_device(resolve_device('auto'))})")
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
            print(f"  {model}: {len(versions)} fine-tuned version(s), active: {active_choice(model)}")
    return 0
