"""Where a fine-tune's weights go: the base set it starts from, the new set's folder (written in a
hidden staging folder beside it and renamed at the end, so a cancelled or failed run leaves nothing),
the new checkpoint's metadata and the set's ``version.json``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from napari_chsnet.errors import CHSNetError, OutputError, OutputExistsError, WeightsError
from napari_chsnet.inference.versions import (
    VERSION_FILE,
    refuse_protected_target,
    user_data_dir,
    user_weights_dir,
)
from napari_chsnet.models.checkpoints import Checkpoint, file_sha256
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training.corrections import CorrectedCase

LUNG_STAGE_FILE = "chsnet.safetensors"  # every pipeline's lung stage is CHS-Net's lung_net


def make_staging(target: Path, default_place: bool) -> Path:
    """The hidden folder the new set is written in, beside ``target``: an ``OutputError`` (one line)
    when that place cannot be written (read-only, no permission, a file in the way)."""
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.", suffix=".tmp"))
        # mkdtemp makes it owner-only: give it the access its parent (made under the user's umask) has.
        staging.chmod(root.stat().st_mode & 0o777)
    except OSError as error:
        where = (
            f"the user data folder {user_data_dir()} (set CHSNET_HOME to a writable folder)"
            if default_place
            else f"{root} (choose a writable output folder)"
        )
        raise OutputError(
            f"cannot write the new weights set {target} in {where}: {_reason(error)}"
        ) from error
    return staging


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


@contextmanager
def writing_errors(target: Path) -> Iterator[None]:
    """Turns an ``OSError`` while writing into the staging folder (a full disk, the folder removed)
    into a one-line ``OutputError``; the caller removes the staging folder, so nothing is left."""
    try:
        yield
    except CHSNetError:
        raise
    except OSError as error:
        raise OutputError(
            f"could not write the new weights set {target} ({_reason(error)}); nothing was written: "
            "check free disk space and write permission"
        ) from error


def resolve_base(base_weights: str | Path | None, model: str) -> tuple[Path, Path]:
    """(the model's checkpoint, the CHS-Net checkpoint providing the lung stage)."""
    if base_weights is None:
        folder, file = bundled_weights_dir(), bundled_weights_dir() / f"{model}.safetensors"
    else:
        base = Path(base_weights)
        if not base.exists():
            raise WeightsError(
                f"the base weights {base} do not exist; pass --weights with a weights set (folder) or a "
                f"{model}.safetensors file"
            )
        folder, file = (base, base / f"{model}.safetensors") if base.is_dir() else (base.parent, base)
    if not file.is_file():
        raise WeightsError(
            f"{file} does not exist: the base weights set {folder} has no {model} checkpoint; "
            "pass --weights with a set (folder) or a .safetensors file of that model"
        )
    lung = folder / LUNG_STAGE_FILE
    if model != "chsnet" and not lung.is_file():
        lung = bundled_weights_dir() / LUNG_STAGE_FILE
        if not lung.is_file():
            raise WeightsError(
                f"{folder} has no {LUNG_STAGE_FILE} (CHS-Net's lung stage, which every pipeline uses) and neither "
                "has the bundled set; pass a complete weights set"
            )
    return file, lung


def target_folder(model: str, output: str | Path | None, overwrite: bool, base_file: Path) -> Path:
    if output is not None:
        target = Path(output)
        refuse_protected_target(target, [base_file.parent, bundled_weights_dir()])
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} exists; choose another output folder or pass --overwrite")
        if target.exists() and not (target / VERSION_FILE).is_file():
            # --overwrite replaces the whole folder: only ever a weights set an earlier fine-tune wrote
            raise OutputExistsError(
                f"{target} exists and is not a fine-tuned weights set (no {VERSION_FILE}), so --overwrite "
                "will not delete it; choose a new output folder"
            )
        return target
    versions = user_weights_dir() / model
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, suffix = versions / stamp, 2
    while target.exists():  # two fine-tunes within one second
        target, suffix = versions / f"{stamp}-{suffix}", suffix + 1
    return target


def was_half(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        return any(reader.get_slice(key).get_dtype() == "F16" for key in reader.keys())  # noqa: SIM118 - not a dict


def _rounded(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def checkpoint_metadata(
    checkpoint: Checkpoint, tuned: dict[str, Any], cases: list[CorrectedCase], n_new: int, n_replay: int
) -> dict[str, Any]:
    from napari_chsnet.inference.run_info import software_versions

    keep = {
        k: v
        for k, v in checkpoint.metadata.items()
        if k in ("role", "pipeline", "preprocessing", "training", "metrics")
    }
    return {
        **keep,
        "finetune": {
            "base_sha256": checkpoint.sha256,
            "cases": [c.name for c in cases],
            "corrected_slices": n_new,
            "replay_slices": n_replay,
            "dice_before": _rounded(tuned["dice_before"]),
            "dice_after": _rounded(tuned["dice_after"]),
            "improved": tuned["improved"],
        },
        "software": software_versions(),
    }


def version_info(
    model, name, trained, base_file, tuned, n_new, n_replay, epochs, only_edited, replay, tune_lungs, staging
):
    """version.json. ``settings.only_edited_slices`` is what happened, not what was asked: a case
    without known edited slices (``--image``) is trained on every slice with lung, which
    ``slices_trained`` lists per case."""
    cases = [case for case, _slices in trained]
    return {
        "model": model,
        "name": name,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cases": [c.name for c in cases],
        "corrected_slices": n_new,
        "replay_slices": n_replay,
        "slices_trained": [
            {
                "case": case.name,
                "only_edited": bool(only_edited and case.edited_slices),
                "slices": case.training_slice_indices(only_edited),
            }
            for case in cases
        ],
        "dice_before": _rounded(tuned["dice_before"]),
        "dice_after": _rounded(tuned["dice_after"]),
        "improved": tuned["improved"],
        "false_positive_before": _rounded(tuned.get("false_positive_before")),
        "false_positive_after": _rounded(tuned.get("false_positive_after")),
        "lung_dice_before": _rounded(tuned.get("lung_dice_before")),
        "lung_dice_after": _rounded(tuned.get("lung_dice_after")),
        "lung_improved": tuned.get("lung_improved"),
        "settings": {
            "epochs": epochs,
            "only_edited_slices": bool(only_edited and all(c.edited_slices for c in cases)),
            "replay": replay,
            "tune_lungs": tune_lungs,
        },
        "base": str(base_file),
        "base_sha256": file_sha256(base_file),
        "files": {p.name: file_sha256(p) for p in sorted(staging.glob("*.safetensors"))},
    }
