"""Fine-tuned weights versions in the user's data folder, beside (never over) the bundled weights.

Layout under :func:`user_data_dir` (``$CHSNET_HOME``, else ``~/.local/share/napari-chsnet``)::

    weights/<model>/<YYYYmmdd-HHMMSS>/   a complete weights set (chsnet.safetensors, and
                                         <model>.safetensors for eamc/rdunet) + version.json
    weights/active.json                  {"<model>": "bundled" | "<version name>"}
    corrections/<case>/                  saved corrected cases (training/corrections.py)

Reverting is choosing ``"bundled"``: no version is deleted. Imports no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_chsnet.errors import OutputExistsError, WeightsError
from napari_chsnet.registry import MODEL_KEYS
from napari_chsnet.resources_path import bundled_weights_dir

BUNDLED = "bundled"
VERSION_FILE = "version.json"
_ACTIVE_FILE = "active.json"


def user_data_dir() -> Path:
    """``$CHSNET_HOME`` or ``~/.local/share/napari-chsnet`` (not created here)."""
    home = os.environ.get("CHSNET_HOME")
    return Path(home).expanduser() if home else Path.home() / ".local" / "share" / "napari-chsnet"


def user_weights_dir() -> Path:
    return user_data_dir() / "weights"


def corrections_dir() -> Path:
    return user_data_dir() / "corrections"


@dataclass(frozen=True)
class WeightsVersion:
    """One fine-tuned weights set, as described by its version.json."""

    model: str
    name: str  # the folder name, YYYYmmdd-HHMMSS
    path: Path
    created: str
    cases: tuple[str, ...]
    dice_before: float | None
    dice_after: float | None
    base_sha256: str
    info: dict[str, Any]

    def label(self) -> str:
        """One line for lists: date, cases, Dice before → after."""

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        cases = ", ".join(self.cases) if len(self.cases) <= 3 else f"{len(self.cases)} cases"
        return f"{self.name}  {cases}  Dice {fmt(self.dice_before)} → {fmt(self.dice_after)}"


def _check_model(model: str) -> None:
    if model not in MODEL_KEYS:
        raise WeightsError(f"unknown model {model!r}; choose one of {', '.join(MODEL_KEYS)}")


def read_version(folder: Path) -> WeightsVersion:
    """The version described by ``folder/version.json``."""
    try:
        info = json.loads((folder / VERSION_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"{folder} is not a fine-tuned weights version (unreadable {VERSION_FILE}: {exc})"
        ) from exc
    return WeightsVersion(
        model=str(info.get("model", folder.parent.name)),
        name=folder.name,
        path=folder,
        created=str(info.get("created", "")),
        cases=tuple(info.get("cases", ())),
        dice_before=info.get("dice_before"),
        dice_after=info.get("dice_after"),
        base_sha256=str(info.get("base_sha256", "")),
        info=info,
    )


def missing_files(version: WeightsVersion) -> list[str]:
    """The weights files its version.json lists (``files``) that its folder no longer holds (a
    folder emptied or deleted by hand while listed)."""
    listed = version.info.get("files") or {}
    return sorted(name for name in listed if not (version.path / name).is_file())


def list_versions(model: str | None = None) -> list[WeightsVersion]:
    """Fine-tuned versions (of ``model``, or of all models), newest first, read from the folder on
    every call: unreadable folders and those missing a weights file they list are skipped, so a
    version deleted by hand (whole, or its weights) drops out of every list built from this."""
    models = [model] if model else list(MODEL_KEYS)
    found = []
    for key in models:
        _check_model(key)
        folder = user_weights_dir() / key
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_dir() and not child.name.startswith(".") and (child / VERSION_FILE).is_file():
                try:
                    version = read_version(child)
                except WeightsError:
                    continue
                if not missing_files(version):
                    found.append(version)
    return sorted(found, key=lambda v: (v.name, v.model), reverse=True)


def _active_path() -> Path:
    return user_weights_dir() / _ACTIVE_FILE


def active_choice(model: str) -> str:
    """``"bundled"`` or the name of the version chosen for ``model``."""
    _check_model(model)
    try:
        return str(json.loads(_active_path().read_text()).get(model, BUNDLED))
    except (OSError, json.JSONDecodeError):
        return BUNDLED


def set_active(model: str, choice: str) -> Path:
    """Choose ``"bundled"`` (revert) or a version name for ``model``; returns that weights set's folder."""
    _check_model(model)
    target = weights_set_dir(model, choice)
    path = _active_path()
    try:
        chosen = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        chosen = {}
    chosen[model] = choice
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(chosen, indent=2))
    os.replace(temporary, path)
    return target


def weights_set_dir(model: str, choice: str = BUNDLED) -> Path:
    """The folder of the weights set ``choice`` (``"bundled"`` or a version name of ``model``)."""
    _check_model(model)
    if choice == BUNDLED:
        return bundled_weights_dir()
    folder = user_weights_dir() / model / choice
    if not (folder / VERSION_FILE).is_file():
        raise WeightsError(
            f"no fine-tuned {model} version {choice!r} in {folder.parent} (deleted?); versions: {_names(model)}"
        )
    missing = missing_files(read_version(folder))
    if missing:
        raise WeightsError(
            f"the fine-tuned {model} version {choice!r} lost {', '.join(missing)} (deleted by hand?); "
            f"versions: {_names(model)}"
        )
    return folder


def _names(model: str) -> str:
    return ", ".join(v.name for v in list_versions(model)) or "none"


def active_weights_dir(model: str) -> Path:
    """The weights set to segment ``model`` with: the chosen version, else the bundled set."""
    try:
        return weights_set_dir(model, active_choice(model))
    except WeightsError:
        return bundled_weights_dir()  # the chosen version was removed by hand


def refuse_protected_target(target: Path, protected: list[Path]) -> None:
    """The base weights and the bundled set are only read: never write into, over or around them
    (``chsnet finetune`` and ``chsnet train`` check their output with it, even with --overwrite)."""
    resolved = target.resolve()
    for folder in protected:
        folder = folder.resolve()
        if resolved == folder or folder in resolved.parents or resolved in folder.parents:
            raise OutputExistsError(
                f"{target} is at, inside or above the weights set {folder}, which is only read, never "
                "written (even with --overwrite); choose an output folder outside it"
            )
