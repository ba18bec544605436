"""Training configurations: YAML files in configs/ loaded into frozen dataclasses, validated once.

Paths may use ``${CHSNET_SHARED_DATA}`` (default: ``../shared/data`` beside the checkout) and
are otherwise relative to the working directory.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from napari_chsnet.errors import ConfigError
from napari_chsnet.models.factory import MODEL_DEFAULTS, build_model
from napari_chsnet.models.losses import (
    BCEDiceLoss,
    BCETverskyLoss,
    CEDiceLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    IoULoss,
    TverskyLoss,
)
from napari_chsnet.training.augment import AugmentSettings
from napari_chsnet.training.datasets import (
    listed_names,
    names_without_mask,
    semiseg_slice_names,
    semiseg_validation_names,
)

STAGES = {"chsnet": ("lungs", "infection"), "rdunet": ("infection",), "eamc": ("infection",)}
LUNG_MAPS = ("labels", "predicted")
# The names a config's ``loss:`` may take, and the loss each builds (training/recipes.py).
LOSSES: dict[str, type[nn.Module]] = {
    "bce_dice": BCEDiceLoss,
    "bce_tversky": BCETverskyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "tversky": TverskyLoss,
    # the rest of EAMC's loss comparison (Eq. 5, 6, 8), for rerunning it from a config
    "ce_dice": CEDiceLoss,
    "iou": IoULoss,
    "focal_tversky": FocalTverskyLoss,
}


@dataclass(frozen=True)
class DataConfig:
    semiseg: str | None = None  # COVID-SemiSeg root (train/ and unlabelled/)
    validation_slices: int = 10  # labelled slices held out (a prefix of one fixed order; 0: train on all)
    unlabelled: int = 0  # pseudo-labelled slices mixed in (0 = none)
    pseudo_teacher: str | None = None  # checkpoint that labels them (None: Inf-Net's shipped labels)
    pseudo_weight: float = 0.5  # their loss weight (expert masks: 1)
    pseudo_union_infnet: bool = False  # teacher's labels OR Inf-Net's (against the teacher's low recall)
    # each expert-labelled training slice appears this many times per epoch, so that beside many
    # pseudo-labelled slices the expert labels are not a small share of the samples
    expert_repeat: int = 1
    hu_volumes: tuple[str, ...] = ()  # HU volumes without lung masks (lung stage; labels from HU)
    volume_folders: tuple[str, ...] = ()  # Zenodo layout folders
    phantoms: int = 0  # synthetic phantoms added (lung stage)
    phantom_shape: tuple[int, int, int] = (48, 256, 256)  # (z, y, x) of each phantom
    phantom_anatomy_variation: float = 0.0  # ± fraction of chest/lung/dome/heart sizes (io.phantom)
    validation_phantoms: int = 0  # phantoms added to the validation (model selection) data
    slice_step: int = 1  # use every n-th slice of volumes
    # the lung map CHS-Net's infection stage reads: "labels" (HU-based lungs + infection) or
    # "predicted" (init_from's lung stage, as at inference; training/lung_maps.py)
    lung_maps: str = "labels"


@dataclass(frozen=True)
class EAMCConfig:
    members: int = 3
    slice_size: int = 512
    lesion_boxes: int = 8
    random_patches: int = 4
    learning_rates: tuple[float, ...] = (1e-3, 5e-4, 2e-3)


@dataclass(frozen=True)
class TrainConfig:
    model: str
    stage: str = "infection"
    network: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    input_size: int = 256
    loss: str = "bce_dice"
    # keyword arguments of the loss class, e.g. {alpha: 0.3, beta: 0.7} for a Tversky loss that
    # weights false positives more than false negatives (models/losses.py)
    loss_options: dict[str, float] = field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_step_epochs: int | None = None
    ema_decay: float | None = None  # moving average of the weights per step (training/loop.py)
    patience: int = 10
    max_minutes: float | None = None
    seed: int = 0
    threads: int = 1
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    eamc: EAMCConfig = field(default_factory=EAMCConfig)
    # checkpoint to continue from (CHS-Net: it carries both stages; EAMC: same member count)
    init_from: str | None = None
    # CHS-Net: train the stage from a fresh network, taking only the other stage from init_from
    fresh_stage: bool = False
    output: str = "runs/train"
    half_precision: bool = True
    # "auto": this rank's GPU under torchrun, else CUDA, then MPS, then the CPU (training/distributed.py)
    device: str = "auto"


def _expand(path: str) -> str:
    default = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    os.environ.setdefault("CHSNET_SHARED_DATA", str(default))
    return os.path.expandvars(path)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{name: _typed(value, hints[name], f"{where}: {name}") for name, value in values.items()})


def _typed(value: Any, hint: Any, label: str) -> Any:
    """``value`` checked against the field's annotation (numbers for floats made float), or a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]  # every optional field has one other type
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or (isinstance(hint, type) and is_dataclass(hint) and isinstance(value, hint)):
        return value
    if hint is float and isinstance(value, str):
        try:  # PyYAML reads 1e-3 (no dot) as text
            number = float(value)
        except ValueError:
            pass
        else:
            return _finite(number, label)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), label)
    if hint in (int, bool, str) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_typed(item, args[0], f"{label}[{i}]") for i, item in enumerate(value))
    if origin is dict and isinstance(value, dict) and args and args[1] is float:  # loss_options
        return {key: _typed(item, float, f"{label}.{key}") for key, item in value.items()}
    if origin is dict and isinstance(value, dict):
        _check_finite_numbers(value, label)
        return value
    raise ConfigError(f"{label} must be {_describe(hint)}; got {value!r}")


def _finite(value: float, label: str) -> float:
    """``value``, or a ConfigError naming the key: NaN or infinity (YAML ``.nan``, ``.inf``, or
    ``1e999``) would train a network into NaN weights or write ``Infinity`` into metrics.json."""
    if not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number; got {value!r}")
    return value


def _check_finite_numbers(value: Any, label: str) -> None:
    """Every float inside a mapping setting (``network``, ``loss_options``) is finite."""
    if isinstance(value, float):
        _finite(value, label)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_finite_numbers(item, f"{label}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite_numbers(item, f"{label}[{i}]")


def _describe(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    return {tuple: "a list", dict: "a mapping"}.get(origin, str(hint))


# (field, smallest allowed value, strict) for the numbers where a wrong value only fails deep in training
_LOWER_BOUNDS = {
    TrainConfig: [
        ("epochs", 1, False),
        ("batch_size", 1, False),
        ("patience", 1, False),
        ("threads", 1, False),
        ("input_size", 16, False),
        ("learning_rate", 0, True),
        ("lr_step_epochs", 1, False),
        ("max_minutes", 0, True),
    ],
    DataConfig: [
        ("unlabelled", 0, False),
        ("phantoms", 0, False),
        ("validation_phantoms", 0, False),
        ("slice_step", 1, False),
        ("phantom_anatomy_variation", 0, False),
    ],
    EAMCConfig: [("members", 1, False), ("lesion_boxes", 0, False), ("random_patches", 0, False)],
    AugmentSettings: [
        (name, 0, False)
        for name in ("rotation_deg", "shift_fraction", "zoom_fraction", "contrast", "brightness", "gamma")
    ],
}
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_ranges(section: Any, where: str) -> None:
    for name, lowest, strict in _LOWER_BOUNDS[type(section)]:
        value = getattr(section, name)
        if value is not None and (value <= lowest if strict else value < lowest):
            bound = f"> {lowest}" if strict else f"≥ {lowest}"
            raise ConfigError(f"{where}: {name} must be {bound}; got {value!r}")


def config_from_dict(raw: dict[str, Any], where: str = "config") -> TrainConfig:
    raw = dict(raw)
    data = dict(raw.pop("data", {}) or {})
    for key in ("semiseg", "pseudo_teacher"):
        if data.get(key):
            data[key] = _expand(data[key])
    for key in ("hu_volumes", "volume_folders"):
        paths = data.get(key, ()) or ()
        if not isinstance(paths, (list, tuple)):
            raise ConfigError(f"{where} data: {key} must be a list of paths; got {paths!r}")
        data[key] = tuple(_expand(str(p)) for p in paths)
    if "phantom_shape" in data:
        shape = data["phantom_shape"]
        if not isinstance(shape, (list, tuple)) or len(shape) != 3:
            raise ConfigError(f"{where} data: phantom_shape must be [z, y, x]; got {shape!r}")
        data["phantom_shape"] = tuple(shape)
    eamc = dict(raw.pop("eamc", {}) or {})
    config = _build(
        TrainConfig,
        {
            **raw,
            "data": _build(DataConfig, data, f"{where} data"),
            "eamc": _build(EAMCConfig, eamc, f"{where} eamc"),
            "augment": _build(AugmentSettings, dict(raw.get("augment", {}) or {}), f"{where} augment"),
        },
        where,
    )
    _check_ranges(config, where)
    _check_ranges(config.data, f"{where} data")
    _check_ranges(config.eamc, f"{where} eamc")
    _check_ranges(config.augment, f"{where} augment")
    if not config.eamc.learning_rates or min(config.eamc.learning_rates) <= 0:
        raise ConfigError(
            f"{where} eamc: learning_rates must be numbers > 0; got {config.eamc.learning_rates!r}"
        )
    if not DEVICE_PATTERN.fullmatch(config.device):
        raise ConfigError(f"{where}: device must be auto, cpu, cuda, cuda:N or mps; got {config.device!r}")
    if config.model not in STAGES:
        raise ConfigError(f"{where}: model must be one of {', '.join(STAGES)}; got {config.model!r}")
    if config.stage not in STAGES[config.model]:
        raise ConfigError(
            f"{where}: {config.model} trains stage(s) {', '.join(STAGES[config.model])}, not {config.stage!r}"
        )
    if config.loss not in LOSSES:
        raise ConfigError(f"{where}: loss must be one of {', '.join(LOSSES)}; got {config.loss!r}")
    _check_loss_options(config, where)
    config = _with_checked_network(config, where)
    if not 0.0 < config.data.pseudo_weight <= 1.0:
        raise ConfigError(
            f"{where} data: pseudo_weight must lie in (0, 1]; got {config.data.pseudo_weight!r}"
        )
    _check_whole_number(config.data, "validation_slices", 0, where)
    _check_whole_number(config.data, "expert_repeat", 1, where)
    if config.data.expert_repeat > 1 and config.model == "eamc":
        # members validate on left-out groups of the training slices: copies would sit on both sides
        raise ConfigError(
            f"{where} data: expert_repeat is not for eamc (its members validate on training slices)"
        )
    if config.data.pseudo_union_infnet and not config.data.pseudo_teacher:
        raise ConfigError(f"{where} data: pseudo_union_infnet needs a pseudo_teacher")
    if config.fresh_stage and (config.model != "chsnet" or not config.init_from):
        raise ConfigError(f"{where}: fresh_stage needs model chsnet and an init_from checkpoint")
    if config.data.lung_maps not in LUNG_MAPS:
        raise ConfigError(
            f"{where} data: lung_maps must be one of {', '.join(LUNG_MAPS)}; got {config.data.lung_maps!r}"
        )
    if config.data.lung_maps == "predicted" and not (
        config.model == "chsnet" and config.stage == "infection" and config.init_from
    ):
        raise ConfigError(
            f"{where} data: lung_maps: predicted is for CHS-Net's infection stage and needs an init_from "
            "checkpoint, whose lung stage makes the maps"
        )
    if config.ema_decay is not None and not 0.0 <= config.ema_decay < 1.0:
        raise ConfigError(f"{where}: ema_decay must lie in [0, 1); got {config.ema_decay!r}")
    if config.input_size % 16:
        raise ConfigError(f"{where}: input_size must be a multiple of 16; got {config.input_size}")
    return config


def _check_whole_number(data: DataConfig, name: str, minimum: int, where: str) -> None:
    value = getattr(data, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} data: {name} must be a whole number ≥ {minimum}; got {value!r}")


def _with_checked_network(config: TrainConfig, where: str) -> TrainConfig:
    """``config`` with its ``network:`` settings checked against the model's own (names, and types as
    its defaults have them; text like 2e-1 made a number), then built once on the meta device (no
    memory, no weights), so a value the network rejects is refused before any data is read."""
    defaults = dict(MODEL_DEFAULTS[config.model])
    if config.model == "eamc":
        defaults.pop("n_members")
        if "n_members" in config.network:
            raise ConfigError(f"{where}: network.n_members is not a network setting; set eamc.members")
    unknown = sorted(set(config.network) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{where}: network: unknown setting(s) {', '.join(unknown)}; "
            f"{config.model} takes {', '.join(defaults)}"
        )
    network = {
        name: _network_value(value, defaults[name], f"{where}: network.{name}")
        for name, value in config.network.items()
    }
    members = {"n_members": 1} if config.model == "eamc" else {}  # the members are alike: one shows it
    try:
        with torch.device("meta"):
            build_model(config.model, **members, **network)
    except ConfigError as error:
        raise ConfigError(f"{where}: network: {error}") from error
    return replace(config, network=network)


def _network_value(value: Any, default: Any, label: str) -> Any:
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label} must be a list; got {value!r}")
        return value
    value = _typed(value, type(default), label)
    if type(default) is int and value < 1:  # channel counts and the SE reduction
        raise ConfigError(f"{label} must be ≥ 1; got {value!r}")
    return value


# Loss options that split a weight of 1 between two terms.
_SHARES = {"bce_dice": ("bce_weight",), "focal": ("alpha",)}
# Loss options that divide, so 0 is refused too: the focal Tversky exponent is 1 / gamma, and every
# region loss's smoothing keeps its ratio defined on an empty target and prediction (0 / 0 otherwise:
# NaN gradients).
_POSITIVE = {"focal_tversky": ("gamma",)}
_POSITIVE_EVERYWHERE = ("smooth",)


def _check_loss_options(config: TrainConfig, where: str) -> None:
    if not isinstance(config.loss_options, dict):
        raise ConfigError(f"{where}: loss_options must be a mapping; got {config.loss_options!r}")
    accepted = list(inspect.signature(LOSSES[config.loss]).parameters)
    unknown = sorted(set(config.loss_options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{where}: loss {config.loss} takes no option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(accepted) or 'none'}"
        )
    for name, value in config.loss_options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}: loss option {name} must be a number ≥ 0; got {value!r}")
        if name in _SHARES.get(config.loss, ()) and value > 1:  # the rest (1 - value) weighs the other term
            raise ConfigError(f"{where}: loss option {name} is a share and must lie in [0, 1]; got {value!r}")
        if (name in _POSITIVE.get(config.loss, ()) or name in _POSITIVE_EVERYWHERE) and value == 0:
            raise ConfigError(f"{where}: loss option {name} must be > 0; got {value!r}")


def check_inputs(config: TrainConfig) -> None:
    """Before any data is read or any output made: the config names training data, every path it names
    exists, and its ``device`` is on this machine (the rules of ``chsnet finetune --device``)."""
    from napari_chsnet.training.distributed import checked_training_device

    checked_training_device(config.device)
    data = config.data
    if not (data.semiseg or data.hu_volumes or data.volume_folders or data.phantoms):
        raise ConfigError(
            "the config names no training data: set data.semiseg, hu_volumes, volume_folders or phantoms"
        )
    if data.semiseg and not (Path(data.semiseg) / "train" / "images").is_dir():
        raise ConfigError(
            f"data.semiseg {data.semiseg} holds no train/images (a COVID-SemiSeg root was expected)"
        )
    if data.semiseg:
        _check_semiseg_files(config)
    files = [("init_from", config.init_from), ("data.pseudo_teacher", data.pseudo_teacher)]
    files += [("data.hu_volumes", path) for path in data.hu_volumes]
    for name, path in files:
        if path and not Path(path).exists():
            raise ConfigError(f"{name}: {path} does not exist")
    for folder in data.volume_folders:
        if not Path(folder).is_dir():
            raise ConfigError(f"data.volume_folders: {folder} is not a folder")


# What a COVID-SemiSeg folder must look like, for the messages that refuse one.
SEMISEG_LAYOUT = "COVID-SemiSeg's slices are images/NAME.jpg with their masks as infection_gt/NAME.png"


def _check_semiseg_files(config: TrainConfig) -> None:
    """The COVID-SemiSeg files the config needs are there (names only, no image is read): slices, their
    masks, a mask for every held-out validation slice, a slice left to train on, and Inf-Net's labels of
    the unlabelled slices when they are asked for."""
    root = Path(config.data.semiseg)
    images = root / "train" / "images"
    names = semiseg_slice_names(images)
    if not names:
        raise ConfigError(
            f"data.semiseg: {images} holds no NAME.jpg slices ({_contents(images)}); {SEMISEG_LAYOUT}"
        )
    training = _semiseg_training_names(config, root, names)
    if not training and not _other_training_data(config):
        raise ConfigError(
            f"data.validation_slices {config.data.validation_slices} holds out every labelled slice of "
            f"{images} ({len(names)}); none is left to train on: lower it or add training data"
        )
    if config.data.unlabelled:
        _check_unlabelled_files(config, root)


def _semiseg_training_names(config: TrainConfig, root: Path, names: list[str]) -> list[str]:
    """The labelled slices left to train on; for an infection stage, refused when no slice or a
    held-out one lacks its mask (the epoch would be chosen on fewer slices, or by the training loss)."""
    images, masks = root / "train" / "images", root / "train" / "infection_gt"
    held_out = set(semiseg_validation_names(root, config.data.validation_slices))
    if config.stage == "lungs":  # lung labels come from HU; an infection mask only adds to them
        return [name for name in names if name not in held_out]
    unmasked = set(names_without_mask(names, masks))
    if len(unmasked) == len(names):
        raise ConfigError(
            f"data.semiseg: {masks} holds no mask of the {len(names)} slices in {images} "
            f"({_contents(masks)}); {SEMISEG_LAYOUT}"
        )
    unmasked_held_out = sorted(held_out & unmasked)
    if unmasked_held_out:
        raise ConfigError(
            f"data.semiseg: held-out validation slice(s) {listed_names(unmasked_held_out)} have no mask "
            f"NAME.png in {masks}; add their masks or move the slices out of {images}"
        )
    return [name for name in names if name not in held_out | unmasked]


def _other_training_data(config: TrainConfig) -> bool:
    """Training data besides the labelled COVID-SemiSeg slices (HU volumes carry no infection labels)."""
    data = config.data
    lung_volumes = bool(data.hu_volumes) and config.stage == "lungs"
    return bool(data.unlabelled or data.volume_folders or data.phantoms or lung_volumes)


def _check_unlabelled_files(config: TrainConfig, root: Path) -> None:
    images = root / "unlabelled" / "images"
    if not semiseg_slice_names(images):
        raise ConfigError(
            f"data.unlabelled {config.data.unlabelled} asks for unlabelled slices, but {images} holds no "
            f"NAME.jpg slices ({_contents(images)})"
        )
    labels = root / "unlabelled" / "infnet_pseudo_gt"
    needs_infnet = not config.data.pseudo_teacher or config.data.pseudo_union_infnet
    if needs_infnet and not labels.is_dir():
        raise ConfigError(
            f"data.unlabelled {config.data.unlabelled} trains on Inf-Net's labels, but {labels} does not "
            "exist; restore it or name a data.pseudo_teacher checkpoint to label the slices"
        )


def _contents(folder: Path) -> str:
    """What ``folder`` holds, for a message about a wrong layout."""
    if not folder.is_dir():
        return "it does not exist"
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "it is empty"
    return f"it holds {len(names)} file(s): {listed_names(names, 3)}"


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if path.is_dir():
        configs = sorted(p.name for p in path.glob("*.y*ml") if p.is_file())
        inside = f" (it holds {listed_names(configs, 3)})" if configs else ""
        raise ConfigError(f"training config {path} is a folder, not a config file; name a .yaml file{inside}")
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_bytes())  # bytes: PyYAML tells UTF-8/16 apart and names a bad byte
    except OSError as exc:
        raise ConfigError(f"cannot read training config {path} ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    return config_from_dict(raw, str(path))


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where (line, column), what, and in which construct."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if not problem or mark is None:
        return " ".join(str(error).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context:
        where = f" at line {context_mark.line + 1}, column {context_mark.column + 1}" if context_mark else ""
        text += f" ({context}{where})"
    return " ".join(text.split())
