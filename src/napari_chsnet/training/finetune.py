"""Fine-tuning a weights set on the radiologist's corrected cases (MONAI Label's "train on what
was corrected", with a replay sample so the network does not forget).

What is tuned: the infection stage of the chosen model (CHS-Net's ``infection_net``, the
RD-UNet, or every EAMC member on Sec. 5.1 patches) and, for CHS-Net with ``tune_lungs``, also
its lung stage. Training data: the corrected slices (only the edited ones, when known and
asked) plus ``replay`` as a fraction of replayed slices from earlier corrections and, when the
shared data is present, the COVID-SemiSeg training slices. Dice is measured on the corrected
slices before and after (stage inputs as in training: the corrected lung crop), pooled over
their pixels (:func:`~napari_chsnet.training.loop.pooled_score`: per-slice Dice scores a slice
whose truth is empty 0 or 1, so an erase-only correction could never rank its epochs); the epoch
scoring best on the corrected slices is kept (of equal ones the later), and when none beats the
starting weights, the starting weights are kept (``FinetuneResult.improved`` is then False). EAMC's
members are each chosen on their own patches, then judged together: when their vote on the
corrected slices does not score higher than the starting members', all are put back.

Where it goes: a NEW complete weights set, by default ``<user data>/weights/<model>/<YYYYmmdd-HHMMSS>/``
(inference/versions.py) with ``<model>.safetensors``, CHS-Net's lung stage copied unchanged for
eamc/rdunet, ``finetune_log.csv`` and ``version.json``. It is written in a hidden temporary
folder, made before any data is read (an output that cannot be written is an ``OutputError`` at
once, not after the training), and renamed at the end, so a cancelled or failed fine-tune (a full
disk included) leaves nothing behind; the base weights (and the bundled ``resources/``) are only read
(``finetune_output``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_chsnet.errors import (
    ConfigError,
    InvalidVolumeError,
)
from napari_chsnet.inference.preprocessing import (
    EAMC_PATCH_SIZE,
    EAMC_SLICE_SIZE,
    INFECTION_INPUT_SIZE,
    LUNG_INPUT_SIZE,
    from_patches,
    to_patches,
)
from napari_chsnet.inference.versions import (
    VERSION_FILE,
)
from napari_chsnet.io.atomic import replace_folder
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.models.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from napari_chsnet.models.eamc import EAMC
from napari_chsnet.models.losses import BCEDiceLoss, DiceLoss, FocalLoss
from napari_chsnet.registry import MODEL_KEYS
from napari_chsnet.training.augment import AugmentSettings
from napari_chsnet.training.corrections import (
    MIN_LUNG_FRACTION,
    CorrectedCase,
    ct_sha256,
    saved_corrections,
)
from napari_chsnet.training.datasets import LabelledSlice, read_semiseg, semiseg_validation_names
from napari_chsnet.training.distributed import training_device
from napari_chsnet.training.finetune_output import (
    LUNG_STAGE_FILE,
    checkpoint_metadata,
    make_staging,
    resolve_base,
    target_folder,
    version_info,
    was_half,
    writing_errors,
)
from napari_chsnet.training.loop import (
    Cancelled,
    EpochRecord,
    FitSettings,
    PooledScore,
    fit,
    pooled_score,
    pooled_score_value,
)
from napari_chsnet.training.stage_data import (
    StageArrays,
    eamc_patches,
    infection_stage_arrays,
    lung_stage_arrays,
)

# Each model's paper loss (training/recipes.py defaults) for fine-tuning. The bundled files' last rounds
# used Tversky losses to shift their own precision/recall balance (their model cards); a user's
# corrections of one scan are exact labels, so fine-tuning goes back to the unweighted losses.
FINETUNE_LOSSES = {"chsnet": BCEDiceLoss, "rdunet": DiceLoss, "eamc": FocalLoss}
# Milder than training: a few slices of one patient, where strong warps would teach shapes the
# patient does not have.
FINETUNE_AUGMENT = AugmentSettings(
    rotation_deg=5.0,
    shift_fraction=0.05,
    zoom_fraction=0.05,
    horizontal_flip=True,
    contrast=0.1,
    brightness=0.03,
    gamma=0.1,
)
NOT_IMPROVED = "no epoch improved on the corrected slices; the new version holds the starting weights"

CaseLike = CorrectedCase | str | Path | tuple
OnStep = Callable[[int, int, float], None]


@dataclass
class FinetuneResult:
    """What a fine-tune wrote and achieved.

    Attributes:
        weights_dir: the new weights set (usable as ``chsnet segment --weights``).
        checkpoint: its fine-tuned ``<model>.safetensors``.
        dice_before, dice_after: infection Dice pooled over the corrected slices (pixel totals) of
            the base weights and of the weights written (1.0 when truth and prediction are empty).
        lung_dice_before, lung_dice_after: the same for CHS-Net's lung stage when it was tuned.
        corrected_slices, replay_slices: training slices from the cases and from replay.
        history: per-epoch records of the infection-stage fit (of the last EAMC member); their
            ``val_dice`` is the score the epoch was chosen by (:attr:`PooledScore.value`).
        info: what version.json holds.
        improved: False when no epoch beat the starting weights on the corrected slices, so the
            infection stage written is the starting one (EAMC: when the members' vote on the corrected
            slices did not score higher, every member is the starting one).
        lung_improved: the same for the lung stage when it was tuned, else None.
        false_positive_before, false_positive_after: when the corrected slices hold no infection at
            all (an erase-only correction), the share of their lung predicted as infection, else None.
        notes: one-line remarks for the user (nothing improved; lungs corrected but not tuned).
    """

    weights_dir: Path
    checkpoint: Path
    dice_before: float
    dice_after: float
    lung_dice_before: float | None = None
    lung_dice_after: float | None = None
    corrected_slices: int = 0
    replay_slices: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    improved: bool = True
    lung_improved: bool | None = None
    false_positive_before: float | None = None
    false_positive_after: float | None = None
    notes: list[str] = field(default_factory=list)


def finetune(
    base_weights: str | Path | None,
    model: str,
    cases: Sequence[CaseLike],
    *,
    epochs: int = 5,
    only_edited_slices: bool = True,
    replay: float = 0.25,
    replay_from: Sequence[str | Path] | None = None,
    tune_lungs: bool = False,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    augment: AugmentSettings = FINETUNE_AUGMENT,
    output: str | Path | None = None,
    overwrite: bool = False,
    device: str = "auto",
    seed: int = 0,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` of a weights set on corrected cases and write a new weights set.

    Args:
        base_weights: a weights set folder, or a ``<model>.safetensors`` file (its folder provides
            the lung stage); ``None`` = the bundled set.
        model: "chsnet", "eamc" or "rdunet".
        cases: :class:`CorrectedCase`, saved correction folders, ``(ct, lungs, infection)`` tuples of
            paths or of a CTVolume and two arrays, or ``(ct, lungs, infection, edited_slices)``.
        epochs: passes over the training slices.
        only_edited_slices: train on the edited slices when a case knows them (else every slice with lung).
        replay: fraction of the training slices drawn from earlier data (0 = none, < 1).
        replay_from: correction folders and/or COVID-SemiSeg roots to replay; ``None`` = the user's saved
            corrections (other than ``cases``) and ``$CHSNET_SHARED_DATA/covid-semiseg`` when present.
        tune_lungs: CHS-Net only: tune the lung stage as well (when the lungs were corrected).
        learning_rate, batch_size, augment, seed: fit settings (Adam; the model's paper loss, FINETUNE_LOSSES).
        output: where to write the set; ``None`` = a new version in the user's weights folder.
        overwrite: replace an existing ``output`` — only a set an earlier fine-tune wrote (it has
            ``version.json``); the base set and the bundled set are never written into or over.
        device: "auto" (GPU when available), "cpu", "cuda", ...
        on_step: ``on_step(step, total_steps, loss)`` after each batch.
        should_stop: polled after each batch and again just before the new set is put in place; True
            cancels (raises ``Cancelled``, nothing is written).
        log: receives one-line progress messages.

    Raises:
        ConfigError, WeightsError, InvalidVolumeError, OutputExistsError; OutputError when the
        output cannot be written (checked before any data is read) or a write fails (a full disk;
        nothing is left behind); ``Cancelled`` on cancel.
    """
    say = log or (lambda _message: None)
    _check_arguments(model, epochs, replay, tune_lungs, batch_size)
    base_file, lung_file = resolve_base(base_weights, model)
    target = target_folder(model, output, overwrite, base_file)
    staging = make_staging(target, output is None)  # before any data is read or trained on
    network = None
    try:
        corrected = [_as_case(case, index) for index, case in enumerate(cases)]
        if not corrected:
            raise ConfigError("fine-tuning needs at least one corrected case")
        checkpoint = load_checkpoint(base_file, expected_model=model)
        sizes = _input_sizes(model, checkpoint)
        trained = [(case, case.labelled_slices(only_edited_slices)) for case in corrected]
        new_slices = [s for _case, slices in trained for s in slices]
        if not new_slices:
            raise InvalidVolumeError(_no_slice_message(corrected, only_edited_slices))
        # the cases' own saved corrections (under any name) are not replayed into their fine-tune
        exclude_ct = [ct_sha256(c.ct.hu) for c in corrected] if replay > 0 and replay_from is None else []
        replay_slices = _replay_slices(
            replay,
            len(new_slices),
            replay_from,
            [c.name for c in corrected],
            seed,
            say,
            exclude_ct=exclude_ct,
        )
        say(f"fine-tuning {model} on {len(new_slices)} corrected and {len(replay_slices)} replayed slices")
        notes = _lung_notes(corrected, model, tune_lungs)  # the caller shows them (result.notes)

        network = checkpoint.build()
        run_device = training_device(device)
        network.to(run_device)
        settings = FitSettings(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            patience=epochs + 1,
            seed=seed,
            augment=augment,
        )
        with writing_errors(target):
            tuned = _tune(
                model,
                network,
                new_slices,
                replay_slices,
                sizes,
                settings,
                tune_lungs,
                staging,
                on_step,
                should_stop,
            )
        network.cpu()
        _stop_if_asked(should_stop)  # Cancel pressed during the last step or the final evaluation
        notes[:0] = _improvement_notes(tuned)
        with writing_errors(target):
            metadata = checkpoint_metadata(checkpoint, tuned, corrected, len(new_slices), len(replay_slices))
            checkpoint_path = staging / f"{model}.safetensors"
            save_checkpoint(
                checkpoint_path, network, model, metadata=metadata, half_precision=was_half(base_file)
            )
            if model != "chsnet":
                shutil.copy2(lung_file, staging / LUNG_STAGE_FILE)
            info = version_info(
                model,
                target.name,
                trained,
                base_file,
                tuned,
                len(new_slices),
                len(replay_slices),
                epochs,
                only_edited_slices,
                replay,
                tune_lungs,
                staging,
            )
            (staging / VERSION_FILE).write_text(json.dumps(info, indent=2))
            _stop_if_asked(should_stop)  # the last moment a Cancel can still leave nothing behind
            replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        del network
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    say(f"wrote {target}: {_score_change(tuned)}")  # the notes are the caller's to show, once
    return FinetuneResult(
        target,
        target / f"{model}.safetensors",
        tuned["dice_before"],
        tuned["dice_after"],
        tuned.get("lung_dice_before"),
        tuned.get("lung_dice_after"),
        len(new_slices),
        len(replay_slices),
        tuned["history"],
        info,
        improved=tuned["improved"],
        lung_improved=tuned.get("lung_improved"),
        false_positive_before=tuned.get("false_positive_before"),
        false_positive_after=tuned.get("false_positive_after"),
        notes=notes,
    )


def _improvement_notes(tuned: dict[str, Any]) -> list[str]:
    """Say which stage no epoch improved (its starting weights are what was written)."""
    lungs = tuned.get("lung_improved")  # None: the lung stage was not tuned
    if not tuned["improved"] and not lungs:
        return [NOT_IMPROVED]
    if not tuned["improved"]:
        return [
            "no epoch improved the infection stage on the corrected slices; the new version holds its "
            "starting weights (the lung stage improved)"
        ]
    if lungs is False:
        return ["no epoch improved the lung stage on the corrected slices; it keeps its starting weights"]
    return []


def _score_change(tuned: dict[str, Any]) -> str:
    """``Dice 0.412 -> 0.530`` or, for an erase-only correction, the infection left on its lung."""
    if tuned.get("false_positive_before") is not None:
        return (
            "the corrected slices hold no infection; infection predicted on "
            f"{100 * tuned['false_positive_before']:.2f} % -> {100 * tuned['false_positive_after']:.2f} % of their lung"
        )
    return f"Dice {tuned['dice_before']:.3f} -> {tuned['dice_after']:.3f}"


def _no_slice_message(cases: list[CorrectedCase], only_edited: bool) -> str:
    """Why no case gave a training slice, with advice that applies to it (``--all-slices`` only helps
    a case that was narrowed to its edited slices; a case without them already uses every slice)."""
    narrowed = [c for c in cases if only_edited and c.edited_slices]
    whole = [c for c in cases if not (only_edited and c.edited_slices)]
    parts = []
    if narrowed:
        shown = "; ".join(
            f"{c.name}: slices {', '.join(map(str, c.edited_slices[:8]))}{', …' if len(c.edited_slices) > 8 else ''}"
            for c in narrowed
        )
        parts.append(
            f"none of the edited slices ({shown}) has lung in the lungs mask; correct the lungs there or "
            "train on every slice with lung (--all-slices; in napari untick 'Only edited slices')"
        )
    if whole:
        parts.append(
            f"no slice of the lungs mask of {', '.join(c.name for c in whole)} has enough lung to train on "
            f"(at least {MIN_LUNG_FRACTION:.1%} of a slice); is it the lung mask of that CT?"
        )
    return "the corrected cases hold no slice to train on: " + "; and ".join(parts)


def _lung_notes(cases: list[CorrectedCase], model: str, tune_lungs: bool) -> list[str]:
    """Say so when corrected lung labels are not learnt (the lung stage is not tuned)."""
    lung_cases = [c for c in cases if c.lungs_edited]
    if tune_lungs or not lung_cases:
        return []
    how = (
        "pass --tune-lungs (in napari tick 'Tune the lung stage too')"
        if model == "chsnet"
        else f"{model} sets keep their own copy of CHS-Net's lung stage, which is not tuned: to learn them, "
        "fine-tune chsnet with --tune-lungs; its learnt lungs are used when segmenting with chsnet"
    )
    if all(c.infection_edited is False for c in cases):
        return [
            f"only the lung labels were corrected and the lung stage is not tuned, so they are not learnt; {how}"
        ]
    names = ", ".join(c.name for c in lung_cases)
    return [
        f"the lung labels of {names} were corrected but the lung stage is not tuned, so they are not learnt; {how}"
    ]


def _stop_if_asked(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("fine-tuning cancelled")


def _check_arguments(model: str, epochs: int, replay: float, tune_lungs: bool, batch_size: int) -> None:
    if model not in MODEL_KEYS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODEL_KEYS)}")
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1; got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1; got {batch_size}")
    if not 0.0 <= replay < 1.0:
        raise ConfigError(f"replay is the fraction of replayed slices and must lie in [0, 1); got {replay}")
    if tune_lungs and model != "chsnet":
        raise ConfigError(
            f"only CHS-Net's lung stage can be tuned; a {model} set keeps its own copy of it (to learn "
            "corrected lungs, fine-tune chsnet with --tune-lungs and segment with chsnet)"
        )


def _as_case(case: CaseLike, index: int) -> CorrectedCase:
    if isinstance(case, CorrectedCase):
        return case
    if isinstance(case, (str, Path)):
        return CorrectedCase.from_folder(case)
    if isinstance(case, tuple) and len(case) in (3, 4):
        ct, lungs, infection = case[:3]
        edited = case[3] if len(case) == 4 else None
        if isinstance(ct, CTVolume):
            loaded = CorrectedCase(ct, np.asarray(lungs), np.asarray(infection), f"case{index + 1}")
        else:
            loaded = CorrectedCase.from_files(ct, lungs, infection)
        if edited is not None:
            loaded = CorrectedCase(loaded.ct, loaded.lungs, loaded.infection, loaded.name, tuple(edited))
        return loaded
    raise ConfigError(
        f"case {index + 1}: expected a CorrectedCase, a saved correction folder or a (ct, lungs, infection) tuple; "
        f"got {type(case).__name__}"
    )


def _input_sizes(model: str, checkpoint: Checkpoint) -> dict[str, int]:
    preprocessing = checkpoint.metadata.get("preprocessing", {}) or {}
    default_infection = EAMC_SLICE_SIZE if model == "eamc" else INFECTION_INPUT_SIZE
    return {
        "lungs": int(preprocessing.get("lung_input_size", LUNG_INPUT_SIZE)),
        "infection": int(preprocessing.get("infection_input_size", default_infection)),
        "patch": int(preprocessing.get("patch_size", EAMC_PATCH_SIZE)),
    }


def default_semiseg_root() -> Path | None:
    """``$CHSNET_SHARED_DATA/covid-semiseg`` (default ``../shared/data`` beside the checkout) if present."""
    shared = os.environ.get("CHSNET_SHARED_DATA")
    root = Path(shared) if shared else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    semiseg = root / "covid-semiseg"
    return semiseg if (semiseg / "train" / "images").is_dir() else None


def _replay_slices(
    replay: float,
    n_new: int,
    replay_from: Sequence[str | Path] | None,
    case_names: list[str],
    seed: int,
    say: Callable[[str], None],
    exclude_ct: Sequence[str] = (),
) -> list[LabelledSlice]:
    """``replay / (1 - replay) * n_new`` slices drawn evenly from earlier corrections and COVID-SemiSeg.

    By default (``replay_from`` None) the user's saved corrections are drawn from, except those of the
    cases being tuned: by name and by CT fingerprint (``exclude_ct``), so a CT saved under another
    name is not replayed into its own fine-tune."""
    wanted = int(round(replay / (1.0 - replay) * n_new))
    if wanted == 0:
        return []
    if replay_from is None:
        semiseg = default_semiseg_root()
        sources = [
            *saved_corrections(exclude=case_names, exclude_ct=exclude_ct),
            *([semiseg] if semiseg else []),
        ]
    else:
        sources = [Path(p) for p in replay_from]
    pool: list[LabelledSlice | tuple[Path, str]] = []
    for source in sources:
        if (source / "train" / "images").is_dir():  # never the slices the model cards validate on
            held_out = set(semiseg_validation_names(source))
            images = sorted((source / "train" / "images").glob("*.jpg"))
            pool += [(source, p.stem) for p in images if p.stem not in held_out]
        else:
            pool += CorrectedCase.from_folder(source).labelled_slices(only_edited=True)
    if not pool:
        say("no earlier corrections or training data to replay; fine-tuning on the corrected slices only")
        return []
    rng = np.random.default_rng(seed)
    picks = [pool[i] for i in rng.choice(len(pool), size=min(wanted, len(pool)), replace=False)]
    chosen = [p for p in picks if isinstance(p, LabelledSlice)]
    by_root: dict[Path, list[str]] = {}
    for pick in picks:
        if isinstance(pick, tuple):
            by_root.setdefault(pick[0], []).append(pick[1])
    for root, names in by_root.items():
        chosen += read_semiseg(root, "train", names=names)
    return chosen


class _SliceVote(nn.Module):
    """EAMC on whole (N, 1, S, S) slices: patches, members' majority vote, mask back as ±1 logits
    (so the sigmoid >= 0.5 of :func:`pooled_score` reads the vote)."""

    def __init__(self, ensemble: EAMC, patch: int):
        super().__init__()
        self.ensemble, self.patch = ensemble, patch

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        mask, _ = EAMC.vote(self.ensemble(to_patches(slices, self.patch)))
        return from_patches(mask.float() * 2 - 1, slices.shape[0], slices.shape[-1])


def _stage_prepare(network: nn.Module, model: str):
    if model == "chsnet":
        return lambda images, masks: (network.infection_input(images, masks[:, 1:2]), masks[:, :1])
    return lambda images, masks: (images, masks[:, :1])


def _fit_keeping_better(
    stage: nn.Module,
    train: StageArrays,
    corrected: StageArrays,
    loss: nn.Module,
    settings: FitSettings,
    prepare,
    before: float,
    log_path: Path,
    on_step,
    should_stop,
) -> tuple[Any, bool]:
    """Fit ``stage``, choosing the epoch by the pooled score on ``corrected`` (ties: the later
    epoch), and load that epoch's weights when it beats ``before`` (the starting weights' pooled
    score, :func:`pooled_score_value`), else put the starting weights back (``fit`` trains ``stage``
    in place). Returns the fit's result and whether an epoch was kept."""
    start = _weights_copy(stage)
    result = fit(
        stage,
        train,
        corrected,
        loss,
        settings,
        prepare,
        log_path,
        on_step,
        should_stop,
        score=pooled_score_value,
        ties_to_later=True,
    )
    improved = bool(result.best_val_dice > before)
    stage.load_state_dict(result.best_state if improved else start)
    return result, improved


def _weights_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s weights to put back when tuning did not improve it (fit trains in place)."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _record(out: dict[str, Any], when: str, score: PooledScore) -> None:
    """Dice (and, for an erase-only correction, the false-positive share) ``before``/``after``."""
    out[f"dice_{when}"] = score.dice
    out[f"false_positive_{when}"] = None if score.truth_pixels else score.false_positive_fraction


def _tune(
    model, network, new_slices, replay_slices, sizes, settings, tune_lungs, staging, on_step, should_stop
):
    """Fine-tune the stages in place; returns Dice before/after, whether an epoch was kept, the history."""
    loss = FINETUNE_LOSSES[model]()
    corrected = infection_stage_arrays(new_slices, sizes["infection"])
    train = StageArrays.concat(
        [corrected, *([infection_stage_arrays(replay_slices, sizes["infection"])] if replay_slices else [])]
    )
    out: dict[str, Any] = {}
    steps = _Steps(on_step)
    batch = settings.batch_size
    if model == "eamc":
        result = _tune_ensemble(
            network, train, corrected, sizes["patch"], loss, settings, staging, steps, should_stop, out
        )
    else:
        stage = network.infection_net if model == "chsnet" else network
        prepare = _stage_prepare(network, model)
        before = pooled_score(stage, corrected, prepare, batch)
        _record(out, "before", before)
        steps.stage(2 if tune_lungs else 1)
        result, out["improved"] = _fit_keeping_better(
            stage,
            train,
            corrected,
            loss,
            settings,
            prepare,
            before.value,
            staging / "finetune_log.csv",
            steps,
            should_stop,
        )
        _record(out, "after", pooled_score(stage, corrected, prepare, batch))
    out["history"] = result.history
    if tune_lungs:
        lungs_corrected = lung_stage_arrays(new_slices, sizes["lungs"])
        lungs_train = StageArrays.concat(
            [lungs_corrected, *([lung_stage_arrays(replay_slices, sizes["lungs"])] if replay_slices else [])]
        )
        lung_prepare = lambda images, masks: (images, masks[:, :1])  # noqa: E731
        lungs_before = pooled_score(network.lung_net, lungs_corrected, lung_prepare, batch)
        out["lung_dice_before"] = lungs_before.dice
        steps.stage(1)
        _, out["lung_improved"] = _fit_keeping_better(
            network.lung_net,
            lungs_train,
            lungs_corrected,
            BCEDiceLoss(),
            settings,
            lung_prepare,
            lungs_before.value,
            staging / "finetune_lungs_log.csv",
            steps,
            should_stop,
        )
        out["lung_dice_after"] = pooled_score(network.lung_net, lungs_corrected, lung_prepare, batch).dice
    return out


def _tune_ensemble(network, train, corrected, patch, loss, settings, staging, steps, should_stop, out):
    """Tune each EAMC member on patches (kept when it beats its own patch check), then judge the
    ensemble as it segments: its vote on the corrected slices, by the pooled score the other models
    use. Members that each improved can still vote worse together; then all are put back."""
    batch = settings.batch_size
    vote = _SliceVote(network, patch)
    before = pooled_score(vote, corrected, batch_size=batch)
    _record(out, "before", before)
    start = _weights_copy(network)
    generator = torch.Generator().manual_seed(settings.seed)
    kept = []
    for k, member in enumerate(network.members):
        patches = eamc_patches(train, 8, 4, generator, patch)
        checks = eamc_patches(corrected, 4, 2, generator, patch)
        prepare = _stage_prepare(member, "eamc")
        member_before = pooled_score_value(member, checks, prepare, batch)
        steps.stage(len(network.members) - k)
        result, improved = _fit_keeping_better(
            member,
            patches,
            checks,
            loss,
            settings,
            prepare,
            member_before,
            staging / f"finetune_log_member{k}.csv",
            steps,
            should_stop,
        )
        kept.append(improved)
    after = pooled_score(vote, corrected, batch_size=batch) if any(kept) else before
    out["improved"] = bool(after.value > before.value)
    if not out["improved"]:
        network.load_state_dict(start)
        after = before
    _record(out, "after", after)
    return result


class _Steps:
    """One progress count over several fits (EAMC members, CHS-Net's two stages)."""

    def __init__(self, on_step: OnStep | None):
        self.on_step, self.done, self.remaining_fits, self.last_total = on_step, 0, 1, 0

    def stage(self, remaining_fits: int) -> None:
        self.done += self.last_total
        self.remaining_fits, self.last_total = remaining_fits, 0

    def __call__(self, step: int, total: int, loss: float) -> None:
        self.last_total = total
        if self.on_step is not None:
            self.on_step(self.done + step, self.done + total * self.remaining_fits, loss)
