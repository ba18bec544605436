"""The one checkpoint format of napari-chsnet: a safetensors file with JSON metadata.

``<name>.safetensors`` holds the network's state dict (float tensors may be stored as fp16 to
halve the size; they are cast back to float32 on load) and, in the safetensors header's
``__metadata__`` under the key ``"chsnet"``, a JSON document::

    {"format": "napari-chsnet-checkpoint", "format_version": 1,
     "model": "<registry key of the network family>", "config": {...build_model kwargs...},
     "preprocessing": {...}, "training": {...}, "metrics": {...},
     "software": {...}, "created": "<ISO time>"}

safetensors cannot carry code, so loading never unpickles anything: a pickle (or any other
file) fed to :func:`load_checkpoint` is rejected with a :class:`WeightsError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from napari_chsnet.errors import CHSNetError, OutputError, OutputExistsError, WeightsError
from napari_chsnet.io.checksums import file_sha256

CHECKPOINT_FORMAT = "napari-chsnet-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights plus the metadata needed to rebuild and describe the model."""

    model: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None

    def build(self, strict: bool = True) -> torch.nn.Module:
        """Rebuild the network and load the weights (strictly: a mismatch is an error)."""
        from napari_chsnet.models.factory import build_model

        network = build_model(self.model, **self.config)
        try:
            network.load_state_dict(self.state_dict, strict=strict)
        except RuntimeError as exc:
            where = self.path or "checkpoint"
            raise WeightsError(
                f"{where} does not fit a '{self.model}' network built from its own config: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        return network

    def save(self, path: str | os.PathLike, *, half_precision: bool = False, overwrite: bool = False) -> str:
        """Write these weights and metadata as a new checkpoint (fresh ``created``); returns its sha256."""
        metadata = {
            k: v for k, v in self.metadata.items() if k not in ("format", "format_version", "created")
        }
        return save_checkpoint(
            path,
            self.build(),
            self.model,
            metadata=metadata,
            half_precision=half_precision,
            overwrite=overwrite,
        )


def save_checkpoint(
    path: str | os.PathLike,
    network: torch.nn.Module,
    model: str,
    *,
    metadata: dict[str, Any] | None = None,
    half_precision: bool = False,
    overwrite: bool = False,
) -> str:
    """Write ``network`` (built by ``build_model(model, **network.config)``) and return the file's sha256.

    The file is written to a temporary name and renamed, so a crash leaves either the old file
    or the new one, never half of one.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: the file could not be written (disk full, no permission): one line naming
            ``path``; no temporary file is left behind.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or pass overwrite=True")
    config = getattr(network, "config", None)
    if not isinstance(config, dict):
        raise WeightsError(f"{type(network).__name__} has no `config` dict; build it with build_model()")
    tensors = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu().contiguous()
        if half_precision and value.is_floating_point():
            value = value.half()
        tensors[key] = value
    document = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model": model,
        "config": config,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(metadata or {}),
    }
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        save_file(tensors, temporary, metadata={"chsnet": json.dumps(document, default=str)})
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; weights are meant to be shared
        os.replace(temporary, path)
        return file_sha256(path)
    except CHSNetError:
        raise
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as a SafetensorError
        raise OutputError(
            f"could not write {path} ({_reason(error)}); check free disk space and write permission"
        ) from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def _reason(error: BaseException) -> str:
    """The last line of an error's text (an ``OSError``'s strerror), for one-line messages."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata document of a checkpoint, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as reader:
            header = reader.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path} is not a napari-chsnet checkpoint (expected a .safetensors file written by "
            f"`chsnet train`/`chsnet finetune`): {exc}"
        ) from exc
    try:
        document = json.loads(header["chsnet"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} is a safetensors file without napari-chsnet metadata") from exc
    if document.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} has metadata of format {document.get('format')!r}, not {CHECKPOINT_FORMAT}"
        )
    if int(document.get("format_version", 0)) > CHECKPOINT_FORMAT_VERSION:
        raise WeightsError(
            f"{path} was written by a newer napari-chsnet (format {document['format_version']}); upgrade"
        )
    return document


def load_checkpoint(path: str | os.PathLike, expected_model: str | None = None) -> Checkpoint:
    """Load a checkpoint safely (no unpickling); float tensors come back as float32."""
    path = Path(path)
    document = read_checkpoint_metadata(path)
    if expected_model is not None and document["model"] != expected_model:
        raise WeightsError(
            f"{path} holds a '{document['model']}' network, not the '{expected_model}' asked for"
        )
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    meta = {k: v for k, v in document.items() if k not in ("model", "config")}
    return Checkpoint(document["model"], dict(document["config"]), state, meta, file_sha256(path), path)


def average_checkpoints(paths: list[str | os.PathLike]) -> Checkpoint:
    """The uniform average of checkpoints of one network (a "model soup", Wortsman et al. 2022).

    Meant for checkpoints fine-tuned from one parent (e.g. two continuations of the same weights),
    which share a loss basin; averaging unrelated trainings gives a useless network. Float tensors
    (weights and batch-norm running statistics) are averaged in float64; of integer buffers
    (batch-norm step counters, unused at inference) the largest is kept. The metadata (role,
    pipeline, preprocessing, training recipe) are the first checkpoint's, except the validation
    ``metrics``, which describe each ingredient and not the average: they move to ``averaged_from``
    with each ingredient's path and sha256.
    """
    if len(paths) < 2:
        raise WeightsError("averaging needs at least two checkpoints")
    checkpoints = [load_checkpoint(path) for path in paths]
    first = checkpoints[0]
    for other in checkpoints[1:]:
        if (other.model, other.config) != (first.model, first.config):
            raise WeightsError(
                f"{other.path} holds a '{other.model}' network built with {other.config}, "
                f"{first.path} a '{first.model}' built with {first.config}: only the same network can be averaged"
            )
        if other.state_dict.keys() != first.state_dict.keys():
            raise WeightsError(f"{other.path} and {first.path} hold different tensors")
    averaged = {}
    for key, value in first.state_dict.items():
        values = [checkpoint.state_dict[key] for checkpoint in checkpoints]
        if value.is_floating_point():
            averaged[key] = (torch.stack([v.double() for v in values]).mean(dim=0)).to(value.dtype)
        else:
            averaged[key] = torch.stack(values).amax(dim=0)
    metadata = {k: v for k, v in first.metadata.items() if k != "metrics"}
    metadata["averaged_from"] = [
        {
            "path": str(checkpoint.path),
            "sha256": checkpoint.sha256,
            "metrics": checkpoint.metadata.get("metrics"),
        }
        for checkpoint in checkpoints
    ]
    return Checkpoint(first.model, dict(first.config), averaged, metadata)
