"""The training loop shared by `chsnet train`, `chsnet finetune` and the napari fine-tune panel.

Plain torch: seeded, time-bounded, early stopping on the validation Dice (mean over images, as
the papers report; fine-tuning passes its own ``score``, Dice pooled over the corrected slices'
pixels, :func:`pooled_score`), a CSV log per epoch, progress and cancel through callbacks (no Qt). Under
``torchrun`` the same loop runs data-parallel (training/distributed.py); batches go to the
network's device, so moving the network to a GPU before ``fit`` trains there.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_chsnet.training import distributed
from napari_chsnet.training.augment import AugmentSettings, augment_batch
from napari_chsnet.training.stage_data import StageArrays

# prepare(images, masks) -> (network inputs, targets): how a stage turns augmented tensors into
# what its network reads (e.g. CHS-Net's lung contour map) and what it must predict.
Prepare = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_step_epochs: int | None = None  # RD-UNet: divide by 10 every 20 epochs
    lr_gamma: float = 0.1
    patience: int = 10
    max_minutes: float | None = None
    seed: int = 0
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    # Exponential moving average of the weights (decay per step; None = off). The averaged network is
    # the one validated and returned: its validation Dice swings less between epochs than the raw one.
    # The decay warms up as min(ema_decay, (1 + n) / (10 + n)) after n updates, so the average of a
    # fresh network follows it early on instead of mixing in its first, useless weights.
    ema_decay: float | None = None


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_dice: float
    learning_rate: float
    seconds: float


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_val_dice: float
    best_epoch: int
    history: list[EpochRecord]
    # "epochs", "early_stopping", "time_budget", "cancelled", "stopped_by_rank_0" or "interrupted"
    stopped: str


class Cancelled(Exception):
    """Raised inside :func:`fit` when ``should_stop`` says so; the caller keeps its old weights."""


def default_prepare(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images, masks[:, :1]


def mean_dice(probabilities: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean over images of Dice; an image with empty truth and empty prediction scores 1."""
    pred = (probabilities >= threshold).flatten(1).float()
    true = targets.flatten(1).float()
    inter = (pred * true).sum(1)
    total = pred.sum(1) + true.sum(1)
    dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return float(dice.mean())


@torch.inference_mode()
def predict_probabilities(
    network: nn.Module, data: StageArrays, prepare: Prepare, batch_size: int
) -> torch.Tensor:
    was_training = network.training
    network.eval()
    outputs = []
    device = _device_of(network)
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device)
        inputs, _ = prepare(images, data.masks[start : start + batch_size].to(device))
        outputs.append(torch.sigmoid(network(inputs)).cpu())
    network.train(was_training)
    return torch.cat(outputs)


def _device_of(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def evaluate_dice(
    network: nn.Module, data: StageArrays, prepare: Prepare = default_prepare, batch_size: int = 8
) -> float:
    if len(data) == 0:
        return float("nan")
    probabilities = predict_probabilities(network, data, prepare, batch_size)
    return mean_dice(probabilities, data.masks[:, :1])  # channel 0 is every stage's target


@dataclass(frozen=True)
class PooledScore:
    """Agreement with the truth pooled over all images (pixel totals), for fine-tuning.

    A mean of per-image Dice scores a slice whose truth is empty 1 or 0 (no partial credit), so a
    correction that only erases infection gives every epoch the same 0 and no epoch can win; pooled,
    every pixel counts. When the truth holds no positive pixel at all (an erase-only correction),
    Dice says nothing (0 with any prediction), and :attr:`value` is ``1 - false_positive_fraction``:
    the share of the lung (channel 1 of the masks when present, else of the images) predicted as
    positive, lower is better.
    """

    dice: float  # 2|P∩T| / (|P| + |T|); 1.0 when both are empty
    truth_pixels: int
    false_positive_fraction: float  # predicted share of the lung (of the images without a lung channel)

    @property
    def value(self) -> float:
        """The one number to maximise: pooled Dice, or ``1 - false_positive_fraction`` without truth."""
        return self.dice if self.truth_pixels else 1.0 - self.false_positive_fraction


def pooled_score(
    network: nn.Module, data: StageArrays, prepare: Prepare = default_prepare, batch_size: int = 8
) -> PooledScore:
    """:class:`PooledScore` of ``network`` on ``data`` (prediction = sigmoid >= 0.5)."""
    if len(data) == 0:
        return PooledScore(float("nan"), 0, float("nan"))
    predicted = predict_probabilities(network, data, prepare, batch_size) >= 0.5
    truth = data.masks[:, :1] > 0.5
    n_predicted, n_truth = int(predicted.sum()), int(truth.sum())
    total = n_predicted + n_truth
    dice = 2 * int((predicted & truth).sum()) / total if total else 1.0
    if data.masks.shape[1] > 1:  # infection stages: channel 1 is the lung, where infection is reported
        lung = data.masks[:, 1:2] > 0.5
        area = int(lung.sum())
        false_positive = int((predicted & ~truth & lung).sum())
    else:
        area, false_positive = predicted.numel(), int((predicted & ~truth).sum())
    return PooledScore(dice, n_truth, false_positive / area if area else 0.0)


def pooled_score_value(
    network: nn.Module, data: StageArrays, prepare: Prepare = default_prepare, batch_size: int = 8
) -> float:
    """:attr:`PooledScore.value`, as :func:`fit`'s ``score`` (fine-tuning chooses its epoch by it)."""
    if len(data) == 0:
        return float("nan")
    return pooled_score(network, data, prepare, batch_size).value


Score = Callable[[nn.Module, StageArrays, Prepare, int], float]


def _ema_with_warmup(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        weight = min(decay, (1 + int(updates)) / (10 + int(updates)))
        return averaged + (current - averaged) * (1 - weight)

    return average


def fit(
    network: nn.Module,
    train: StageArrays,
    validation: StageArrays,
    loss_fn: nn.Module,
    settings: FitSettings,
    prepare: Prepare = default_prepare,
    log_path: str | Path | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    score: Score | None = None,
    ties_to_later: bool = False,
    on_interrupt: Callable[[FitResult], None] | None = None,
) -> FitResult:
    """Train ``network`` in place and return the best validation state (not loaded into it; with
    ``settings.ema_decay`` the best state of the weights' moving average).

    The best epoch is the one with the highest ``score(network, validation, prepare, batch_size)``
    (default: :func:`evaluate_dice`, the mean Dice over images that ``chsnet train`` and the model
    cards use); of equal scores the first is kept, or the last with ``ties_to_later`` (fine-tuning:
    more training on the corrections, at no loss on them).

    ``on_step(step, total_steps, loss)`` is called after every batch; ``should_stop()`` is
    polled there too and raises :class:`Cancelled`. Batches are moved to the network's device.
    Inside a process group of several ranks (torchrun), each rank trains on its share of every
    epoch through DistributedDataParallel and only rank 0 writes ``log_path``.

    Ctrl-C or SIGTERM (a ``KeyboardInterrupt``) first hands ``on_interrupt`` the best state so far
    (``stopped`` "interrupted"; ``best_epoch`` 0 when no epoch ended), then propagates.
    """
    group = distributed.current()
    torch.manual_seed(settings.seed)
    # Each rank augments its own samples differently; the epoch order comes from `group`.
    generator = torch.Generator().manual_seed(settings.seed + (group.rank if group else 0))
    device = _device_of(network)
    model = group.wrap(network) if group else network
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_step_epochs, settings.lr_gamma)
        if settings.lr_step_epochs
        else None
    )
    samples_per_epoch = group.shard_size(len(train)) if group else len(train)
    steps_per_epoch = max(1, int(np.ceil(samples_per_epoch / settings.batch_size)))
    total_steps = steps_per_epoch * settings.epochs
    averaged = (
        torch.optim.swa_utils.AveragedModel(
            network, avg_fn=_ema_with_warmup(settings.ema_decay), use_buffers=True
        )
        if settings.ema_decay is not None
        else None
    )
    evaluated = averaged.module if averaged is not None else network
    best_dice, best_epoch, best_state = -math.inf, 0, copy.deepcopy(network.state_dict())
    history: list[EpochRecord] = []
    started = time.monotonic()
    stopped = "epochs"
    writer = None
    if log_path is not None and (group is None or group.is_main):
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "w", newline="")  # noqa: SIM115 - closed in finally
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_dice", "learning_rate", "seconds"])
    try:
        for epoch in range(1, settings.epochs + 1):
            epoch_start = time.monotonic()
            epoch_rate = optimizer.param_groups[0]["lr"]  # the scheduler steps before the row is written
            model.train()
            if group:
                order = group.epoch_order(len(train), settings.seed, epoch)
            else:
                order = torch.randperm(len(train), generator=generator)
            losses = []
            for step in range(steps_per_epoch):
                batch = train.subset(order[step * settings.batch_size : (step + 1) * settings.batch_size])
                images, masks = augment_batch(batch.images, batch.masks, settings.augment, generator)
                inputs, targets = prepare(images.to(device), masks.to(device))
                logits = model(inputs)
                per_sample = torch.stack(
                    [loss_fn(logits[i : i + 1], targets[i : i + 1]) for i in range(len(batch))]
                )
                weights = batch.weights.to(device)
                loss = (per_sample * weights).sum() / weights.sum().clamp(min=1e-6)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if averaged is not None:
                    averaged.update_parameters(network)
                losses.append(loss.item())
                if on_step is not None:
                    on_step((epoch - 1) * steps_per_epoch + step + 1, total_steps, losses[-1])
                if should_stop is not None and should_stop():
                    raise Cancelled("training cancelled")
            if scheduler is not None:
                scheduler.step()
            epoch_loss = float(np.mean(losses))
            if group:
                group.sync_buffers(network)
                if averaged is not None:
                    # its buffers (BatchNorm statistics, averaged from each rank's own) differ per rank too
                    group.sync_buffers(averaged)
                epoch_loss = group.mean(epoch_loss)
            # without validation samples the epoch with the lowest training loss is kept (a loss
            # can exceed 1, hence best_dice starts at -inf)
            measure = score if score is not None else evaluate_dice
            val_dice = (
                measure(evaluated, validation, prepare, settings.batch_size)
                if len(validation)
                else -epoch_loss
            )
            record = EpochRecord(epoch, epoch_loss, val_dice, epoch_rate, time.monotonic() - epoch_start)
            history.append(record)
            if writer is not None:
                writer.writerow(
                    [
                        record.epoch,
                        f"{record.train_loss:.5f}",
                        f"{record.val_dice:.5f}" if len(validation) else "",  # none measured
                        f"{record.learning_rate:.6g}",
                        f"{record.seconds:.1f}",
                    ]
                )
                handle.flush()
            if val_dice > best_dice or (ties_to_later and val_dice == best_dice):
                best_dice, best_epoch, best_state = val_dice, epoch, copy.deepcopy(evaluated.state_dict())
            if epoch - best_epoch >= settings.patience:
                stopped = "early_stopping"
            elif (
                settings.max_minutes is not None and (time.monotonic() - started) / 60 >= settings.max_minutes
            ):
                stopped = "time_budget"
            stop = stopped != "epochs"
            if group:  # ranks stop together, on rank 0's decision (its clock decides the time budget)
                stop = group.agree(stop)
            if stop:
                stopped = "stopped_by_rank_0" if stopped == "epochs" else stopped
                break
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt(FitResult(best_state, best_dice, best_epoch, history, "interrupted"))
        raise
    finally:
        if writer is not None:
            handle.close()
    return FitResult(best_state, best_dice, best_epoch, history, stopped)
