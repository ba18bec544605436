"""The papers' training recipes, driven by a TrainConfig (what `chsnet train --config` runs).

* CHS-Net (Sec. 4): 0.5·BCE + 0.5·Dice, Adam, early stopping; lung stage on whole slices,
  infection stage on lung contour maps of lung-cropped slices.
* RD-UNet (Sec. 3): Dice loss, Adam 1e-3 divided by 10 every 20 epochs, flips and zoom.
* EAMC (Sec. 5.1): 128x128 patches (lesion boxes + boundary patches of infected slices,
  random patches of others), focal loss α = 0.8 γ = 2, members trained on leave-one-group-out
  splits with different seeds and learning rates, each validated on its left-out group.

Semi-supervision: ``data.unlabelled`` pseudo-labelled slices join the labelled ones with loss weight
``data.pseudo_weight`` (labels are noisy): Inf-Net's shipped labels, or with ``data.pseudo_teacher`` the labels a trained
model of ours gives them (self-training, training/pseudo_labels.py). The held-out validation slices
carry expert masks only; EAMC members choose their epoch on their left-out group of the training
samples instead, pseudo-labelled ones included (its model card).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_chsnet.errors import ConfigError, OutputError, OutputExistsError
from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU
from napari_chsnet.inference.preprocessing import EAMC_PATCH_SIZE, LUNG_INPUT_SIZE
from napari_chsnet.inference.versions import refuse_protected_target
from napari_chsnet.io.atomic import atomic_write
from napari_chsnet.models.checkpoints import load_checkpoint, save_checkpoint
from napari_chsnet.models.factory import build_model
from napari_chsnet.resources_path import bundled_weights_dir
from napari_chsnet.training import distributed
from napari_chsnet.training.config import LOSSES, TrainConfig, check_inputs
from napari_chsnet.training.datasets import (
    SEMISEG_ROTATION,
    LabelledSlice,
    listed_names,
    read_semiseg,
    read_volume_folder,
    semiseg_validation_names,
    slices_of_volume,
)
from napari_chsnet.training.loop import FitResult, FitSettings, fit
from napari_chsnet.training.lung_maps import with_predicted_lung_maps
from napari_chsnet.training.pseudo_labels import label_with_teacher, union_with_shipped_labels
from napari_chsnet.training.stage_data import (
    StageArrays,
    eamc_patches,
    infection_stage_arrays,
    lung_stage_arrays,
)

OnStep = Callable[[int, int, float], None]


def _loss(config: TrainConfig) -> torch.nn.Module:
    return LOSSES[config.loss](**config.loss_options)


def _cached_volume_slices(path: str, step: int, cache_dir: Path) -> list[LabelledSlice]:
    """A HU volume with HU-made lung labels (cached: the labelling takes a minute per volume)."""
    from napari_chsnet.io.readers import read_ct
    from napari_chsnet.training.lung_labels import lung_labels_from_hu

    volume = read_ct(path)
    key = hashlib.sha256(f"{Path(path).resolve()}:{Path(path).stat().st_mtime}".encode()).hexdigest()[:16]
    cached = cache_dir / f"lunglabels_{key}.npy"
    if cached.exists():
        lungs = np.load(cached)
    else:
        lungs = lung_labels_from_hu(volume.hu, volume.geometry.spacing_mm)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # whole or not at all, under a name of its own: torchrun's ranks all label and write it at once
        atomic_write(cached, lambda path: _save_array(path, lungs))
    return slices_of_volume(
        volume, lungs, None, Path(path).name.split(".")[0], range(0, volume.shape[0], step)
    )


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would add ".npy" to a name without it
        np.save(handle, array)


# Training phantoms use seeds from here on, validation phantoms from VALIDATION_PHANTOM_SEED_OFFSET:
# the phantoms the tests segment (seeds < 100) are never seen in training or model selection.
PHANTOM_SEED_OFFSET = 1000
VALIDATION_PHANTOM_SEED_OFFSET = 2000


def _phantom_slices(
    count: int,
    first_seed: int,
    shape: tuple[int, int, int] = (48, 256, 256),
    anatomy_variation: float = 0.0,
    slice_step: int = 2,
) -> list[LabelledSlice]:
    """Every ``slice_step``-th slice of ``count`` phantoms (seeds from ``first_seed``) with
    subpleural consolidation labelled as lung.

    Involvement varies from light to severe (5-70 % per lung), every other phantom has lungs
    meeting at the anterior junction line, and chest, lung, dome and heart sizes vary by
    ``anatomy_variation``, so the lung stage sees dense border lesions in many places and
    shapes and learns that consolidation is lung (lung-first cascades tend to drop it).
    """
    from napari_chsnet.io.phantom import make_phantom

    out = []
    for index in range(count):
        phantom_seed = first_seed + index
        rng = np.random.default_rng(phantom_seed)
        involvement = (float(rng.uniform(5, 70)), float(rng.uniform(5, 70)))
        phantom = make_phantom(
            shape,
            seed=phantom_seed,
            involvement_pct=involvement,
            subpleural_consolidation=True,
            lungs_touch_anteriorly=bool(index % 2),
            anatomy_variation=anatomy_variation,
        )
        out += slices_of_volume(
            phantom.ct,
            phantom.lungs,
            phantom.infection,
            f"phantom{phantom_seed}",
            range(0, phantom.ct.shape[0], slice_step),
        )
    return out


def gather_slices(
    config: TrainConfig, cache_dir: Path, log: Callable[[str], None] = print
) -> tuple[list[LabelledSlice], list[LabelledSlice]]:
    """(training, validation) slices for ``config``; validation = held-out expert-labelled slices."""
    data = config.data
    train: list[LabelledSlice] = []
    validation: list[LabelledSlice] = []
    if data.semiseg:
        root = Path(data.semiseg)
        held_out = set(semiseg_validation_names(root, data.validation_slices))
        labelled = read_semiseg(root, "train")
        if config.stage == "infection":
            _warn_of_slices_without_mask(labelled, root / "train" / "infection_gt", log)
        expert = [s for s in labelled if s.source and Path(s.source).stem not in held_out]
        train += expert * data.expert_repeat
        validation += [s for s in labelled if Path(s.source).stem in held_out]
        if data.unlabelled:
            stems = sorted(p.stem for p in (root / "unlabelled" / "images").glob("*.jpg"))
            pick = np.random.default_rng(config.seed).choice(
                len(stems), size=min(data.unlabelled, len(stems)), replace=False
            )
            names = [stems[i] for i in pick]
            labels = None
            if data.pseudo_teacher:
                images = [root / "unlabelled" / "images" / f"{name}.jpg" for name in names]
                labels = label_with_teacher(
                    data.pseudo_teacher, images, cache_dir, SEMISEG_ROTATION, config.device, log
                )
                if data.pseudo_union_infnet:
                    shipped = root / "unlabelled" / "infnet_pseudo_gt"
                    labels = union_with_shipped_labels(labels, shipped, names)
            unlabelled = read_semiseg(
                root, "unlabelled", names=names, mask_folder=labels, pseudo_weight=data.pseudo_weight
            )
            if config.stage == "infection":
                _warn_of_slices_without_mask(
                    unlabelled, labels or root / "unlabelled" / "infnet_pseudo_gt", log
                )
            train += unlabelled
    for folder in data.volume_folders:
        train += read_volume_folder(folder)
    for path in data.hu_volumes:
        train += _cached_volume_slices(path, data.slice_step, cache_dir)
    variation = data.phantom_anatomy_variation
    if data.phantoms:
        train += _phantom_slices(
            data.phantoms, PHANTOM_SEED_OFFSET + config.seed, data.phantom_shape, variation
        )
    if data.validation_phantoms:
        # every 4th slice: a phantom weighs about as much as the real validation slices
        seed = VALIDATION_PHANTOM_SEED_OFFSET + config.seed
        validation += _phantom_slices(
            data.validation_phantoms, seed, data.phantom_shape, variation, slice_step=4
        )
    return train, validation


def _warn_of_slices_without_mask(
    slices: list[LabelledSlice], masks: Path, log: Callable[[str], None]
) -> None:
    """An infection stage cannot train on a slice without its mask: say how many and which are left out."""
    missing = [Path(s.source).name for s in slices if s.infection is None]
    if missing:
        log(
            f"warning: {len(missing)} of {len(slices)} slices have no NAME.png mask in {masks} and are left "
            f"out: {listed_names(missing)}"
        )


def _arrays(config: TrainConfig, slices: list[LabelledSlice]) -> StageArrays:
    if config.stage == "lungs":
        return lung_stage_arrays(slices, config.input_size)
    size = config.eamc.slice_size if config.model == "eamc" else config.input_size
    return infection_stage_arrays(slices, size)


def _fit_settings(config: TrainConfig, **overrides: Any) -> FitSettings:
    values = dict(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_step_epochs=config.lr_step_epochs,
        ema_decay=config.ema_decay,
        patience=config.patience,
        max_minutes=config.max_minutes,
        seed=config.seed,
        augment=config.augment,
    )
    values.update(overrides)
    return FitSettings(**values)


def _preprocessing(config: TrainConfig, inherited: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's preprocessing metadata: the trained stage's from ``config``, the other
    stage's from the checkpoint it started from (``inherited``, empty for a fresh network)."""
    trained_size = config.eamc.slice_size if config.model == "eamc" else config.input_size
    sizes = {
        "lung_input_size": inherited.get("lung_input_size", LUNG_INPUT_SIZE),
        "infection_input_size": inherited.get("infection_input_size", trained_size),
    }
    sizes["lung_input_size" if config.stage == "lungs" else "infection_input_size"] = trained_size
    return {
        "window_hu": list(DISPLAY_WINDOW_HU),
        **sizes,
        "crop": "lungs",
        **({"patch_size": EAMC_PATCH_SIZE} if config.model == "eamc" else {}),
    }


def _summary(slices: list[LabelledSlice]) -> dict[str, Any]:
    cases = sorted({s.case_id for s in slices})
    return {
        "slices": len(slices),
        "cases": len(cases),
        "sources": sorted({Path(s.source.split("#")[0]).parent.name for s in slices}),
    }


def run_training(
    config: TrainConfig,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> Path:
    """Train what ``config`` describes and write ``<output>/<model>.safetensors``; returns its path.

    Refused before any data is read or anything is written: an existing checkpoint without
    ``overwrite``, a bad config or data folder; data that gives no training sample is refused before
    the output folder is made. Ctrl-C or SIGTERM keeps the best state so far as
    ``<model>.interrupted.safetensors`` and propagates. The run's logs and metrics carry the model's
    name, so models trained into one folder (a weights set) keep theirs. Under ``torchrun`` every rank
    trains its share (training/distributed.py) and rank 0 writes.
    """
    output = Path(config.output)
    path = output / f"{config.model}.safetensors"
    refuse_protected_target(output, [bundled_weights_dir()])  # torchrun skips the CLI's check
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another --output or pass --overwrite")
    check_inputs(config)
    torch.set_num_threads(max(1, config.threads))
    group = distributed.init_from_env(config.device)
    device = distributed.training_device(config.device)
    writes = group is None or group.is_main  # rank 0 writes the (identical) weights and the logs
    started = time.monotonic()
    if writes:
        _check_writable_output(output)
    train_slices, val_slices = gather_slices(config, output.parent / "cache", log)
    if config.data.lung_maps == "predicted":  # train (and choose the epoch) on the maps inference gives
        mapped = with_predicted_lung_maps([*train_slices, *val_slices], config.init_from, config.device, log)
        train_slices, val_slices = mapped[: len(train_slices)], mapped[len(train_slices) :]
    train, validation = _arrays(config, train_slices), _arrays(config, val_slices)
    log(f"{config.model}/{config.stage}: {len(train)} training and {len(validation)} validation samples")
    _refuse_no_training_samples(config, train)
    if writes:
        _make_output(output)

    def describe(metrics: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
        return _metadata(config, metrics, inherited, train_slices, val_slices, started)

    def keep_interrupted(network: torch.nn.Module | None, metrics: dict[str, Any], inherited: dict[str, Any]):
        if not writes:
            return
        if network is None:
            log(
                "interrupted before the first EAMC member finished: no state to keep"
                if config.model == "eamc"
                else "interrupted before the first epoch ended: no state to keep"
            )
            return
        _save_interrupted(config, network, describe(metrics, inherited), log)

    logs = RunLogs(output, config.model)
    try:
        if config.model == "eamc":
            network, metrics = _train_eamc(
                config, train, validation, logs, on_step, should_stop, log, device, keep_interrupted
            )
            inherited: dict[str, Any] = {}
        else:
            network, metrics, inherited = _train_unet_stage(
                config, train, validation, logs, on_step, should_stop, device, keep_interrupted
            )
    except KeyboardInterrupt:  # the stage trainers kept the best state so far
        logs.settle(INTERRUPTED)
        raise
    if not writes:
        return path
    sha = save_checkpoint(
        path,
        network,
        config.model,
        metadata=describe(metrics, inherited),
        half_precision=config.half_precision,
        overwrite=True,  # refused above unless asked
    )
    logs.settle()  # only now: an interrupted --overwrite run leaves the earlier run's logs whole
    _write_metrics(output / f"{config.model}_metrics.json", {**metrics, "sha256": sha})
    log(f"wrote {path} ({metrics})")
    return path


# The suffix of what an interrupted run keeps: ``<model>.interrupted.safetensors``, ``<model>_log.interrupted.csv``.
INTERRUPTED = "interrupted"


class RunLogs:
    """A run's CSV logs (``<model>_log.csv``, EAMC ``eamc_log_member<k>.csv``), written as
    ``….partial.csv`` and renamed when the run ends: an interrupted or failed run never truncates the
    logs of the run whose checkpoint is in the folder."""

    def __init__(self, output: Path, model: str) -> None:
        self.output, self.model, self.written = output, model, []

    def partial(self, member: int | None = None) -> Path:
        """Where a fit writes its log while it runs."""
        name = f"{self.model}_log" + ("" if member is None else f"_member{member}")
        self.written.append(name)
        return self.output / f"{name}.partial.csv"

    def settle(self, suffix: str = "") -> None:
        """Rename the logs to their final names (``suffix`` "interrupted": ``NAME.interrupted.csv``)."""
        for name in self.written:
            partial = self.output / f"{name}.partial.csv"
            if partial.exists():  # under torchrun only rank 0 wrote it
                partial.replace(self.output / (f"{name}.{suffix}.csv" if suffix else f"{name}.csv"))


def _metadata(config, metrics, inherited, train_slices, val_slices, started) -> dict[str, Any]:
    from napari_chsnet.inference.run_info import software_versions

    return {
        "role": config.stage,
        "pipeline": config.model,
        "preprocessing": _preprocessing(config, inherited),
        "training": {
            "config": json.loads(json.dumps(config, default=lambda o: getattr(o, "__dict__", str(o)))),
            "train_data": _summary(train_slices),
            "validation_data": _summary(val_slices),
            "minutes": round((time.monotonic() - started) / 60, 1),
        },
        "metrics": metrics,
        "software": software_versions(),
    }


def _write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    summary = json.dumps(metrics, indent=2)
    try:
        atomic_write(path, lambda temporary: temporary.write_text(summary))
    except OSError as error:
        raise OutputError(f"could not write {path} ({error.strerror or error})") from error


def _save_interrupted(
    config: TrainConfig, network: torch.nn.Module, metadata: dict[str, Any], log: Callable[[str], None]
) -> None:
    """Keep what an interrupted run learnt beside (never over) the finished checkpoint's name, and say so."""
    path = Path(config.output) / f"{config.model}.{INTERRUPTED}.safetensors"
    save_checkpoint(
        path, network, config.model, metadata=metadata, half_precision=config.half_precision, overwrite=True
    )
    metrics = metadata["metrics"]
    kept = (
        f"the {metrics['members_finished']} finished member(s) of {metrics['members_planned']}"
        if config.model == "eamc"
        else f"the best state so far (epoch {metrics['best_epoch']} of {metrics['epochs_run']} finished)"
    )
    log(f"interrupted: kept {kept} as {path}; continue with init_from (docs/training.md, Continuing a run)")


def _refuse_no_training_samples(config: TrainConfig, train: StageArrays) -> None:
    if len(train):
        return
    needs = "a lung mask" if config.stage == "lungs" else "an infection mask"
    raise ConfigError(
        f"the config's data gives no {config.stage} training sample (each needs {needs}); "
        "check data.semiseg's masks, data.validation_slices and the other data sources"
    )


def _check_writable_output(output: Path) -> None:
    """Prove ``output`` writable before any data is read (a read-only place or a full disk is one line
    then, not a traceback after the training), and take back the folders made for it: a run refused
    later (its data) leaves nothing."""
    made = [folder for folder in (output, *output.parents) if not folder.exists()]
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-check-"):
            pass
    except OSError as error:
        raise _unwritable(output, error) from error
    finally:
        for folder in made:  # deepest first
            if folder.exists():
                try:
                    folder.rmdir()
                except OSError:  # no longer empty: another process writes there now
                    break


def _make_output(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(output, error) from error


def _unwritable(output: Path, error: OSError) -> OutputError:
    return OutputError(
        f"cannot write the training output {output} ({error.strerror or error}); choose another --output"
    )


def _train_unet_stage(
    config, train, validation, logs, on_step, should_stop, device=None, keep_interrupted=None
):
    torch.manual_seed(config.seed)  # the fresh networks' initial weights: same config, same weights
    inherited: dict[str, Any] = {}
    if config.model == "chsnet":
        if config.init_from:
            checkpoint = load_checkpoint(config.init_from, expected_model="chsnet")
            network = checkpoint.build()
            inherited = checkpoint.metadata.get("preprocessing", {})
            if config.fresh_stage:  # a new network for this stage; only the other one is inherited
                torch.manual_seed(config.seed)
                fresh = build_model("chsnet", **checkpoint.config)
                stage_name = "lung_net" if config.stage == "lungs" else "infection_net"
                setattr(network, stage_name, getattr(fresh, stage_name))
        else:
            network = build_model("chsnet", **config.network)
        trained = network.lung_net if config.stage == "lungs" else network.infection_net
        prepare = (
            (lambda images, masks: (images, masks[:, :1]))
            if config.stage == "lungs"
            else (lambda images, masks: (network.infection_input(images, masks[:, 1:2]), masks[:, :1]))
        )
    else:
        network = (
            load_checkpoint(config.init_from, expected_model=config.model).build()
            if config.init_from
            else build_model(config.model, **config.network)
        )
        trained, prepare = network, (lambda images, masks: (images, masks[:, :1]))
    if device is not None:
        network.to(device)

    def keep_best_so_far(partial: FitResult) -> None:
        if keep_interrupted is None:
            return
        if not partial.best_epoch:  # no epoch ended: nothing learnt worth keeping
            keep_interrupted(None, {}, inherited)
            return
        trained.load_state_dict(partial.best_state)
        keep_interrupted(network, _fit_metrics(partial, validated=len(validation) > 0), inherited)

    result = fit(
        trained,
        train,
        validation,
        _loss(config),
        _fit_settings(config),
        prepare,
        logs.partial(),
        on_step,
        should_stop,
        on_interrupt=keep_best_so_far,
    )
    trained.load_state_dict(result.best_state)
    return network, _fit_metrics(result, validated=len(validation) > 0), inherited


def _fit_metrics(result: FitResult, validated: bool = True) -> dict[str, Any]:
    # without validation the loop chose the epoch by its training loss (training/loop.py)
    score = (
        {"val_dice_mean": round(result.best_val_dice, 4)}
        if validated
        else {"val_dice_mean": None, "train_loss": round(-result.best_val_dice, 5)}
    )
    return {
        **score,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
    }


def eamc_member_groups(n_samples: int, members: int, seed: int) -> np.ndarray:
    """Each training sample's group: member k validates on group k and never trains on it
    (leave-one-group-out; scripts/calibrate_eamc_threshold.py redraws the same groups)."""
    return np.random.default_rng(seed).permutation(n_samples) % members


def _train_eamc(
    config, train, validation, logs, on_step, should_stop, log, device=None, keep_interrupted=None
):
    settings = config.eamc
    network, member_metrics = _starting_ensemble(config, len(train), log)
    if device is not None:
        network.to(device)
    groups = eamc_member_groups(len(train), settings.members, config.seed)

    def keep_finished_members(_partial: FitResult) -> None:  # the member in training is not kept
        if keep_interrupted is not None:
            finished = len(member_metrics)
            ensemble = _first_members(network, finished) if finished else None
            metrics = _eamc_metrics(member_metrics, settings.members, len(train), INTERRUPTED)
            keep_interrupted(ensemble, metrics, {})

    for k, member in enumerate(network.members):
        if k < len(member_metrics):  # finished before the run this one finishes was interrupted
            continue
        generator = torch.Generator().manual_seed(config.seed + k)
        member_train = eamc_patches(
            train.subset(np.nonzero(groups != k)[0]),
            settings.lesion_boxes,
            settings.random_patches,
            generator,
        )
        member_val = eamc_patches(
            train.subset(np.nonzero(groups == k)[0]), settings.lesion_boxes // 2, 2, generator
        )
        lr = settings.learning_rates[k % len(settings.learning_rates)]
        log(f"EAMC member {k + 1}/{settings.members}: {len(member_train)} patches, lr {lr}")
        result = fit(
            member,
            member_train,
            member_val,
            _loss(config),
            _fit_settings(config, seed=config.seed + k, learning_rate=lr),
            log_path=logs.partial(member=k),
            on_step=on_step,
            should_stop=should_stop,
            on_interrupt=keep_finished_members,
        )
        member.load_state_dict(result.best_state)
        member_metrics.append({"member": k, "learning_rate": lr, **_fit_metrics(result)})
    return network, _eamc_metrics(member_metrics, settings.members, len(train))


def _starting_ensemble(
    config: TrainConfig, n_train: int, log: Callable[[str], None]
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """The ensemble a run starts from, and the metrics of its members that need no training.

    Fresh members; or ``init_from``'s ensemble of the config's size, every member trained further; or
    an interrupted run's finished members kept as they are, the others trained as that run would have
    trained them: their initial weights, patches and validation groups come from the same seed, so an
    interrupted run finished this way gives the weights of one never interrupted.
    """
    settings = config.eamc
    torch.manual_seed(config.seed)  # the fresh members' initial weights: same config, same weights
    if not config.init_from:
        return build_model("eamc", n_members=settings.members, **config.network), []
    checkpoint = load_checkpoint(config.init_from, expected_model="eamc")
    held = int(checkpoint.config.get("n_members", 0))
    if held == settings.members:
        return checkpoint.build(), []
    metrics = checkpoint.metadata.get("metrics") or {}
    if metrics.get("stopped") != INTERRUPTED or metrics.get("members_planned") != settings.members:
        raise ConfigError(
            f"init_from {config.init_from} has {held} EAMC members; the config asks for {settings.members}"
            + (
                f" (it is an interrupted run of {metrics['members_planned']} members: set eamc.members to that)"
                if metrics.get("stopped") == INTERRUPTED
                else ""
            )
        )
    _refuse_another_run(config, checkpoint.metadata, n_train)
    # Built before anything else draws from the seed: the members the first run had not finished get
    # the initial weights they had there.
    network = build_model("eamc", **{**checkpoint.config, "n_members": settings.members})
    for kept, finished in zip(network.members, checkpoint.build().members, strict=False):
        kept.load_state_dict(finished.state_dict())
    log(
        f"EAMC: members 1-{held} of {settings.members} kept from {config.init_from} (finished before it was "
        "interrupted); training the others"
    )
    return network, [{**m, "kept_from": str(config.init_from)} for m in metrics["members"]]


def _refuse_another_run(config: TrainConfig, interrupted: dict[str, Any], n_train: int) -> None:
    """The remaining members of an interrupted ensemble must see the groups its finished members saw:
    each member validates on the group the others train on (leave-one-group-out)."""
    seed = ((interrupted.get("training") or {}).get("config") or {}).get("seed")
    samples = (interrupted.get("metrics") or {}).get("train_samples")
    if seed != config.seed or samples != n_train:
        raise ConfigError(
            f"init_from {config.init_from} is an interrupted run of seed {seed} on {samples} training "
            f"samples; this config has seed {config.seed} and {n_train}: its other members would train on "
            "the finished members' validation groups. Finish it with the same seed and data, or rerun it"
        )


def _eamc_metrics(
    member_metrics: list[dict[str, Any]], planned: int, train_samples: int, stopped: str | None = None
) -> dict[str, Any]:
    dice = [m["val_dice_mean"] for m in member_metrics]
    metrics = {
        "members": member_metrics,
        "val_dice_mean": round(float(np.mean(dice)), 4) if dice else None,
        "train_samples": train_samples,  # with the seed, the members' groups (eamc_member_groups)
    }
    if stopped:  # an interrupted ensemble: how many of its members it holds
        metrics.update(members_finished=len(member_metrics), members_planned=planned, stopped=stopped)
    return metrics


def _first_members(network: torch.nn.Module, count: int) -> torch.nn.Module:
    """An EAMC of ``network``'s first ``count`` members (the trained ones of an interrupted run): it
    loads and votes as a ``count``-member ensemble."""
    partial = build_model("eamc", **{**network.config, "n_members": count})
    for kept, trained in zip(partial.members, network.members, strict=False):
        kept.load_state_dict(trained.state_dict())
    return partial


def main(argv: list[str] | None = None) -> None:
    """``python -m napari_chsnet.training.recipes CONFIG`` (what `chsnet train --config` runs), the entry
    point for ``torchrun``; a bad config ends it with exit code 2 and one line on stderr, Ctrl-C with
    130 and SIGTERM (SLURM's time limit) with 143, after the best state so far is kept."""
    import argparse
    import dataclasses

    from napari_chsnet.errors import CHSNetError
    from napari_chsnet.interrupts import INTERRUPTED_EXIT, TERMINATED_EXIT, Terminated, sigterm_raises
    from napari_chsnet.training.config import load_config

    parser = argparse.ArgumentParser(
        prog="python -m napari_chsnet.training.recipes",
        description="Train a model from a YAML config (chsnet train --config without the CLI; torchrun runs this).",
    )
    parser.add_argument("config", help="a training config, e.g. configs/rdunet.yaml")
    parser.add_argument("--output", default=None, help="output folder (default: the config's `output`)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a checkpoint already in the output folder"
    )
    args = parser.parse_args(argv)
    try:
        with sigterm_raises():
            config = load_config(args.config)
            if args.output is not None:
                config = dataclasses.replace(config, output=args.output)
            run_training(config, log=lambda m: print(m, flush=True), overwrite=args.overwrite)
    except CHSNetError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except Terminated:
        parser.exit(TERMINATED_EXIT, f"{parser.prog}: terminated (SIGTERM)\n")
    except KeyboardInterrupt:
        parser.exit(INTERRUPTED_EXIT, f"{parser.prog}: interrupted\n")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
