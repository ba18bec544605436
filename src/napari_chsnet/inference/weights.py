"""Weights sets: which checkpoint files a segmentation uses, and the networks built from them.

A weights set is a folder holding any of ``chsnet.safetensors`` (CHS-Net: ``lung_net`` and
``infection_net``), ``eamc.safetensors`` and ``rdunet.safetensors``. Every pipeline's lung stage is
``chsnet.safetensors``' ``lung_net``; the infection stage is the chosen model's file. The bundled set
is ``resources/weights/`` (read-only); fine-tuned sets live elsewhere and are passed as a folder.

Built networks are cached per (file, modification time, device), so a fine-tuned file that is
rewritten in place is picked up by the next run, and an unchanged one is not rebuilt.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_chsnet.errors import WeightsError
from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU
from napari_chsnet.inference.preprocessing import (
    EAMC_PATCH_SIZE,
    EAMC_SLICE_SIZE,
    INFECTION_INPUT_SIZE,
    LUNG_INPUT_SIZE,
)
from napari_chsnet.inference.versions import VERSION_FILE, read_version
from napari_chsnet.models.checkpoints import Checkpoint, load_checkpoint
from napari_chsnet.registry import MODEL_KEYS, MODELS
from napari_chsnet.resources_path import bundled_weights_dir

LUNG_STAGE_MODEL = "chsnet"
WEIGHTS_SUFFIX = ".safetensors"
# Entries kept by each cache: enough for the three models on one device plus a fine-tuned set.
_CACHE_SIZE = 4
_checkpoints: OrderedDict[tuple, Checkpoint] = OrderedDict()
_networks: OrderedDict[tuple, torch.nn.Module] = OrderedDict()


def weights_file_name(model: str) -> str:
    return f"{model}{WEIGHTS_SUFFIX}"


def _check_model(model: str) -> None:
    if model not in MODEL_KEYS:
        raise WeightsError(f"unknown model {model!r}; choose one of {', '.join(MODEL_KEYS)}")


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _remember(cache: OrderedDict, key: tuple, value: object) -> None:
    # A rewritten file gets a new key: drop the stale entries of the same file (and device).
    for old in [k for k in cache if k[0] == key[0] and k[3:] == key[3:] and k != key]:
        del cache[old]
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def load_weights_file(path: Path, model: str) -> Checkpoint:
    """The checkpoint in ``path``, which must hold a ``model`` network (cached while the file is unchanged)."""
    key = _file_key(path)
    cached = _checkpoints.get(key)
    if cached is not None:
        _checkpoints.move_to_end(key)
        return cached
    checkpoint = load_checkpoint(path)
    if checkpoint.model != model:
        raise WeightsError(
            f"{path} holds a '{checkpoint.model}' network, not the '{model}' asked for; pass a "
            f"{weights_file_name(model)} file or a weights folder"
        )
    _remember(_checkpoints, key, checkpoint)
    return checkpoint


def _bundled(model: str, wanted_for: str) -> Checkpoint:
    path = bundled_weights_dir() / weights_file_name(model)
    if not path.is_file():
        raise WeightsError(
            f"no bundled weights for {model} ({path} is missing; needed for {wanted_for}); "
            f"train with `chsnet train` or pass --weights with a folder holding {weights_file_name(model)}"
        )
    return load_weights_file(path, model)


def _from_folder(folder: Path, model: str, wanted_for: str) -> Checkpoint:
    path = folder / weights_file_name(model)
    return load_weights_file(path, model) if path.is_file() else _bundled(model, wanted_for)


def check_weights_folder(folder: Path, model: str) -> None:
    """A WeightsError unless ``folder`` holds ``model``'s file: an empty or mistyped folder, or another
    model's fine-tuned set, would otherwise run the bundled weights without a word. Only the lung
    stage (``chsnet.safetensors``) may be missing; it then comes from the bundled set."""
    tuned_for = _fine_tuned_model(folder)
    if tuned_for not in (None, model):  # every eamc/rdunet set holds a chsnet.safetensors copy too
        raise WeightsError(
            f"weights folder {folder} is a fine-tuned {tuned_for} set ({VERSION_FILE}); segment with --model "
            f"{tuned_for} (napari: Model {MODELS[tuned_for].title}), or choose a {model} set"
        )
    if (folder / weights_file_name(model)).is_file():
        return
    held = [key for key in MODEL_KEYS if (folder / weights_file_name(key)).is_file()]
    holds = f"it holds {', '.join(held)} weights" if held else "it holds no weights"
    raise WeightsError(
        f"weights folder {folder} has no {weights_file_name(model)} ({holds}); choose a weights set "
        "with that file, or a model the folder holds"
    )


def _fine_tuned_model(folder: Path) -> str | None:
    """The model a fine-tuned set's version.json names; None for any other folder (or an unreadable file,
    which the versions list reports)."""
    try:
        model = read_version(folder).info.get("model")  # as written: no default from the folder name
    except (WeightsError, AttributeError):  # no readable version.json, or not a JSON object
        return None
    return model if model in MODEL_KEYS else None


def resolve_weights(model: str, weights: str | Path | None = None) -> dict[str, Checkpoint]:
    """The checkpoints a ``model`` pipeline uses, keyed by network family.

    The result always has ``"chsnet"`` (whose ``lung_net`` is the lung stage) and ``model``.

    Args:
        model: ``"chsnet"``, ``"eamc"`` or ``"rdunet"``.
        weights: ``None`` = the bundled set; a folder = its files: it must hold ``<model>.safetensors``
            (refused otherwise), and its ``chsnet.safetensors`` is the lung stage, the bundled one when
            it has none; a ``.safetensors`` file = the ``model`` network (a CHS-Net file is also the
            lung stage; otherwise the lung stage is the file's sibling ``chsnet.safetensors`` when there
            is one, as in a fine-tuned set, else the bundled one).

    Raises:
        WeightsError: a path that does not exist, a folder without the model's file, a file that is not
            a napari-chsnet checkpoint or holds another network, or weights that are neither given nor
            bundled.
    """
    _check_model(model)
    lung_role = "the lung stage of every model"
    if weights is None:
        found = {LUNG_STAGE_MODEL: _bundled(LUNG_STAGE_MODEL, lung_role)}
        found[model] = found.get(model) or _bundled(model, f"the {model} infection stage")
        return found
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(
            f"weights path {path} does not exist; pass a weights folder or a .safetensors file"
        )
    if path.is_dir():
        check_weights_folder(path, model)
        found = {LUNG_STAGE_MODEL: _from_folder(path, LUNG_STAGE_MODEL, lung_role)}
        found[model] = found.get(model) or load_weights_file(path / weights_file_name(model), model)
        return found
    checkpoint = load_weights_file(path, model)
    if model == LUNG_STAGE_MODEL:
        return {model: checkpoint}
    return {LUNG_STAGE_MODEL: _from_folder(path.parent, LUNG_STAGE_MODEL, lung_role), model: checkpoint}


def network_for(checkpoint: Checkpoint, device: torch.device) -> torch.nn.Module:
    """The checkpoint's network in eval mode on ``device`` (cached per file, modification time, device)."""
    key = None
    if checkpoint.path is not None and Path(checkpoint.path).is_file():
        key = (*_file_key(Path(checkpoint.path)), str(device))
        cached = _networks.get(key)
        if cached is not None:
            _networks.move_to_end(key)
            return cached
    network = checkpoint.build().to(device).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    if device.type == "cpu":
        # oneDNN's convolutions run faster on channels-last weights (the activations follow). On 2
        # cores: EAMC on P001 1525 → 812 s, RD-UNet 290 → 226 ms per 256² slice, CHS-Net unchanged;
        # probabilities equal to 3e-7, every model card figure unchanged (resources/weights/eamc.md)
        network = network.to(memory_format=torch.channels_last)
    if key is not None:
        _remember(_networks, key, network)
    return network


def clear_cache() -> None:
    """Forget every cached checkpoint and network (frees their memory)."""
    _checkpoints.clear()
    _networks.clear()


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint's network expects its input (from its ``"preprocessing"`` metadata).

    ``infection_input_size`` is the side of the lung crop fed to the infection stage; for EAMC it is
    the slice size that is cut into ``patch_size`` patches (512 → 16 patches of 128).
    """

    window_hu: tuple[float, float] = DISPLAY_WINDOW_HU
    lung_input_size: int = LUNG_INPUT_SIZE
    infection_input_size: int = INFECTION_INPUT_SIZE
    patch_size: int = EAMC_PATCH_SIZE


def preprocessing_of(checkpoint: Checkpoint) -> Preprocessing:
    """The checkpoint's preprocessing, with the package defaults for what it does not state."""
    meta = checkpoint.metadata.get("preprocessing") or {}
    default_infection = EAMC_SLICE_SIZE if checkpoint.model == "eamc" else INFECTION_INPUT_SIZE
    try:
        window = meta.get("window_hu", DISPLAY_WINDOW_HU)
        found = Preprocessing(
            window_hu=(float(window[0]), float(window[1])),
            lung_input_size=int(meta.get("lung_input_size", LUNG_INPUT_SIZE)),
            infection_input_size=int(meta.get("infection_input_size", default_infection)),
            patch_size=int(meta.get("patch_size", EAMC_PATCH_SIZE)),
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise WeightsError(f"{checkpoint.path}: unreadable preprocessing metadata {meta!r} ({exc})") from exc
    if not found.window_hu[0] < found.window_hu[1]:
        raise WeightsError(
            f"{checkpoint.path}: window_hu {found.window_hu} must be [low, high] with low < high"
        )
    if checkpoint.model == "eamc" and found.infection_input_size % found.patch_size:
        raise WeightsError(
            f"{checkpoint.path}: EAMC slice size {found.infection_input_size} is not a multiple of its "
            f"patch size {found.patch_size}"
        )
    return found
