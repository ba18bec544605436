"""The training loop: loss goes down on the phantom; the same loop runs data-parallel on 2 processes."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from napari_chsnet.models.factory import build_model
from napari_chsnet.models.losses import BCEDiceLoss
from napari_chsnet.training import distributed
from napari_chsnet.training.augment import AugmentSettings
from napari_chsnet.training.config import DataConfig, EAMCConfig, load_config
from napari_chsnet.training.datasets import slices_of_volume
from napari_chsnet.training.loop import Cancelled, FitSettings, fit
from napari_chsnet.training.stage_data import StageArrays, lung_stage_arrays

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny_test.yaml"


def _lung_arrays(phantom):
    return lung_stage_arrays(slices_of_volume(phantom.ct, phantom.lungs, phantom.infection, "phantom"), 64)


def test_training_loss_decreases_on_the_phantom(phantom):
    torch.manual_seed(0)
    network = build_model("raiunet", base_channels=4)
    data = _lung_arrays(phantom)
    settings = FitSettings(
        epochs=4, batch_size=4, learning_rate=1e-2, augment=AugmentSettings.none(), patience=10
    )
    result = fit(network, data, data, BCEDiceLoss(), settings)
    losses = [record.train_loss for record in result.history]
    assert losses[-1] < 0.8 * losses[0], f"loss per epoch {losses}"


class _ScaledLoss(torch.nn.Module):
    """BCE + Dice times 10: a training loss well above 1."""

    def __init__(self):
        super().__init__()
        self.inner = BCEDiceLoss()

    def forward(self, *args, **kwargs):
        return 10 * self.inner(*args, **kwargs)


def test_without_validation_the_epoch_with_the_lowest_training_loss_is_kept(phantom):
    torch.manual_seed(0)
    network = build_model("raiunet", base_channels=4)
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    data = _lung_arrays(phantom)
    settings = FitSettings(epochs=3, batch_size=4, learning_rate=1e-2, augment=AugmentSettings.none())
    result = fit(network, data, StageArrays.empty(1, 64), _ScaledLoss(), settings)
    losses = [record.train_loss for record in result.history]
    assert min(losses) > 1  # the case a -1 start value would never beat
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.best_val_dice == -min(losses)
    assert any(not torch.equal(initial[k], v) for k, v in result.best_state.items())


def test_should_stop_cancels_after_the_current_step(phantom):
    data = _lung_arrays(phantom)
    steps = []
    with pytest.raises(Cancelled):
        fit(
            build_model("raiunet", base_channels=4),
            data,
            data,
            BCEDiceLoss(),
            FitSettings(epochs=3, batch_size=4),
            on_step=lambda step, total, loss: steps.append(step),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]


def test_ema_returns_the_warmed_up_moving_average_of_the_weights_after_each_step(phantom):
    torch.manual_seed(0)
    network = build_model("raiunet", base_channels=4)
    data = _lung_arrays(phantom)  # 8 slices: 2 steps of 4
    decay, after_each_step = 0.8, []
    result = fit(
        network,
        data,
        data.subset(range(2)),
        BCEDiceLoss(),
        FitSettings(epochs=1, batch_size=4, learning_rate=1e-2, ema_decay=decay),
        on_step=lambda step, total, loss: after_each_step.append(
            {k: v.clone() for k, v in network.state_dict().items()}
        ),
    )
    assert len(after_each_step) == 2
    for name, value in result.best_state.items():
        if not value.is_floating_point():
            continue
        expected = after_each_step[0][name]  # the average starts at the first step's weights
        for updates, state in enumerate(after_each_step[1:], start=1):
            weight = min(decay, (1 + updates) / (10 + updates))  # warm-up: 2/11 after one update
            expected = weight * expected + (1 - weight) * state[name]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=name)
    first = next(iter(result.best_state))
    assert not torch.equal(result.best_state[first], network.state_dict()[first])


def test_epoch_order_shards_like_distributed_sampler():
    ranks = [distributed.DistributedContext(rank, 2, rank) for rank in (0, 1)]
    orders = [context.epoch_order(5, seed=0, epoch=1) for context in ranks]
    assert [len(o) for o in orders] == [3, 3]  # 5 samples padded to 6
    assert set(torch.cat(orders).tolist()) == set(range(5))
    assert torch.equal(orders[0], ranks[0].epoch_order(5, seed=0, epoch=1))  # seeded
    assert not torch.equal(orders[0], ranks[0].epoch_order(5, seed=0, epoch=2))  # reshuffled per epoch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, folder: str, ema_decay: float | None = None) -> None:
    """One torchrun-like rank: gloo group (``device: cpu``, also on a GPU machine), the unchanged fit(),
    its final weights and the state fit returns (with ``ema_decay``: the averaged network's) saved."""
    import os

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    context = distributed.init_from_env("cpu")
    assert context is not None and context.world_size == world_size
    assert dist.get_backend() == "gloo"
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 32, 32, generator=generator)
    masks = (images > 0.6).float()
    from napari_chsnet.training.stage_data import StageArrays

    data = StageArrays(images, masks, torch.ones(6))
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts them from rank 0)
    network = build_model("raiunet", base_channels=4)
    settings = FitSettings(  # default augmentation
        epochs=2, batch_size=2, learning_rate=1e-2, patience=5, ema_decay=ema_decay
    )
    steps = []
    result = fit(
        network,
        data,
        data.subset([0, 1]),
        BCEDiceLoss(),
        settings,
        log_path=Path(folder) / f"log{rank}.csv",
        on_step=lambda step, total, loss: steps.append(total),
    )
    save_file(
        {k: v.contiguous() for k, v in network.state_dict().items()},
        str(Path(folder) / f"rank{rank}.safetensors"),
    )
    save_file(
        {k: v.contiguous() for k, v in result.best_state.items()},
        str(Path(folder) / f"best{rank}.safetensors"),
    )
    (Path(folder) / f"steps{rank}.txt").write_text(f"{len(steps)} {steps[-1]}")
    distributed.shutdown()


@pytest.mark.slow
def test_two_process_gloo_training_ends_with_identical_weights(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], msg=f"ranks differ in {key}")
    untrained = build_model("raiunet", base_channels=4).state_dict()
    assert any(not torch.equal(weights[0][k], untrained[k]) for k in untrained if k.endswith("weight"))
    # 6 samples, 2 ranks, batch 2: 2 steps per epoch on each rank (not 3), 2 epochs
    assert [(tmp_path / f"steps{r}.txt").read_text() for r in (0, 1)] == ["4 4", "4 4"]
    assert (tmp_path / "log0.csv").exists() and not (tmp_path / "log1.csv").exists(), (
        "only rank 0 writes logs"
    )
    assert not dist.is_initialized()


@pytest.mark.slow
def test_two_process_gloo_training_with_ema_returns_the_same_averaged_network_on_both_ranks(tmp_path):
    """The averaged network's BatchNorm buffers follow each rank's own batches: without syncing them
    from rank 0 the ranks validated (and returned) different averaged networks."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), 0.5), nprocs=2, join=True)
    best = [load_file(str(tmp_path / f"best{r}.safetensors")) for r in (0, 1)]
    assert best[0].keys() == best[1].keys()
    assert any("running_mean" in key for key in best[0])
    differing = [key for key in best[0] if not torch.equal(best[0][key], best[1][key])]
    assert differing == [], f"ranks differ in {len(differing)} tensors, e.g. {differing[:3]}"
    network = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    first = next(key for key in network[0] if key.endswith("weight"))
    assert not torch.equal(best[0][first], network[0][first]), "the averaged network, not the raw one"
    assert not dist.is_initialized()


def test_the_log_records_the_learning_rate_each_epoch_trained_with(phantom, tmp_path):
    """The rate was read after the scheduler's step: each row showed the next epoch's."""
    network = build_model("raiunet", base_channels=4)
    data = _lung_arrays(phantom)
    settings = FitSettings(epochs=3, batch_size=8, learning_rate=1e-2, lr_step_epochs=1, patience=10)
    used: list[float] = []
    optimizer_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return optimizer_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", step)
        result = fit(network, data, data, BCEDiceLoss(), settings, log_path=tmp_path / "log.csv")
    per_epoch = used[:: len(used) // 3]
    assert [record.learning_rate for record in result.history] == pytest.approx(per_epoch)
    assert per_epoch == pytest.approx([1e-2, 1e-3, 1e-4])
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert [float(row.split(",")[3]) for row in rows] == pytest.approx([1e-2, 1e-3, 1e-4])


def test_tiny_config_trains_and_writes_a_checkpoint(tmp_path):
    from napari_chsnet.models.checkpoints import load_checkpoint
    from napari_chsnet.training.recipes import run_training

    config = dataclasses.replace(load_config(TINY_CONFIG), output=str(tmp_path / "run"))
    path = run_training(config, log=lambda message: None)
    checkpoint = load_checkpoint(path, expected_model="chsnet")
    assert (
        checkpoint.metadata["role"] == "lungs"
        and checkpoint.metadata["preprocessing"]["lung_input_size"] == 64
    )
    log_rows = (tmp_path / "run" / "chsnet_log.csv").read_text().splitlines()
    assert len(log_rows) == 1 + config.epochs
    # no validation data: no Dice is claimed; the epoch was chosen by its training loss
    assert all(row.split(",")[2] == "" for row in log_rows[1:])
    metrics = checkpoint.metadata["metrics"]
    assert metrics["val_dice_mean"] is None and metrics["train_loss"] > 0
    assert metrics["train_loss"] == min(float(row.split(",")[1]) for row in log_rows[1:])


def test_the_same_config_starts_from_the_same_initial_weights(tmp_path):
    import torch

    from napari_chsnet.models.checkpoints import load_checkpoint
    from napari_chsnet.training.recipes import run_training

    written = []
    for run, unrelated_seed in enumerate((123, 456)):  # whatever drew from torch's generator before
        torch.manual_seed(unrelated_seed)
        config = dataclasses.replace(
            load_config(TINY_CONFIG),
            output=str(tmp_path / f"run{run}"),
            epochs=1,
            learning_rate=0.0,  # what is written is the initial network
            half_precision=False,
        )
        written.append(load_checkpoint(run_training(config, log=lambda message: None)).state_dict)
    assert all(torch.equal(written[0][name], written[1][name]) for name in written[0])


def _lung_round_from_the_tiny_set(tmp_path, tiny_set, **changes):
    """(checkpoint started from, config, checkpoint written) of the tiny lung config continued from
    the tiny set's CHS-Net with ``changes``."""
    from napari_chsnet.models.checkpoints import load_checkpoint
    from napari_chsnet.training.recipes import run_training

    start = load_checkpoint(tiny_set / "chsnet.safetensors", expected_model="chsnet")
    config = dataclasses.replace(
        load_config(TINY_CONFIG),
        output=str(tmp_path / "run"),
        init_from=str(tiny_set / "chsnet.safetensors"),
        **changes,
    )
    written = load_checkpoint(run_training(config, log=lambda message: None), expected_model="chsnet")
    return start, config, written


def test_continuing_the_lung_stage_keeps_the_infection_stage_and_its_input_size(tmp_path, tiny_set):
    """A lung-only round started from a full cascade must not touch (or relabel) the infection stage."""
    start, _, continued = _lung_round_from_the_tiny_set(tmp_path, tiny_set, input_size=48)
    sizes = continued.metadata["preprocessing"]
    assert sizes["lung_input_size"] == 48, "the trained stage's size comes from the config"
    assert sizes["infection_input_size"] == start.metadata["preprocessing"]["infection_input_size"] == 64
    before, after = start.build(), continued.build()
    for name, value in before.infection_net.state_dict().items():
        torch.testing.assert_close(after.infection_net.state_dict()[name], value)
    changed = [
        not torch.equal(after.lung_net.state_dict()[n], v)
        for n, v in before.lung_net.state_dict().items()
        if v.is_floating_point()
    ]
    assert any(changed), "the lung stage trained"


def test_a_fresh_stage_starts_from_a_seeded_new_network_and_keeps_the_other_stage(tmp_path, tiny_set):
    from napari_chsnet.models.factory import build_model

    start, config, written = _lung_round_from_the_tiny_set(
        tmp_path,
        tiny_set,
        fresh_stage=True,
        epochs=1,
        learning_rate=1e-12,  # Adam moves each weight by about the learning rate: ~ the fresh network
    )
    trained = written.build()
    torch.manual_seed(config.seed)
    fresh = build_model("chsnet", **start.config)
    before = start.build()
    for name, value in fresh.lung_net.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            torch.testing.assert_close(trained.lung_net.state_dict()[name], value, atol=2e-3, rtol=2e-3)
    assert any(
        not torch.allclose(trained.lung_net.state_dict()[n], v, atol=1e-2)
        for n, v in before.lung_net.state_dict().items()
        if v.is_floating_point()
    ), "the lung stage was not the checkpoint's"
    for name, value in before.infection_net.state_dict().items():
        torch.testing.assert_close(trained.infection_net.state_dict()[name], value)


def test_continuing_an_ensemble_needs_the_same_member_count(tmp_path, tiny_set):
    from napari_chsnet.errors import ConfigError
    from napari_chsnet.training.recipes import run_training

    config = dataclasses.replace(
        load_config(TINY_CONFIG),
        model="eamc",
        stage="infection",
        output=str(tmp_path / "run"),
        init_from=str(tiny_set / "eamc.safetensors"),
        eamc=EAMCConfig(members=3, slice_size=64),
        data=DataConfig(phantoms=1, phantom_shape=(8, 64, 64)),
    )
    with pytest.raises(ConfigError, match="has 2 EAMC members; the config asks for 3"):
        run_training(config, log=lambda message: None)


def test_rdunet_continues_from_its_checkpoint_not_from_a_fresh_network(tmp_path, tiny_set):
    from napari_chsnet.models.checkpoints import load_checkpoint
    from napari_chsnet.training.recipes import run_training

    start = load_checkpoint(tiny_set / "rdunet.safetensors", expected_model="rdunet")
    config = dataclasses.replace(
        load_config(TINY_CONFIG),
        model="rdunet",
        stage="infection",
        network={},
        epochs=1,
        output=str(tmp_path / "run"),
        init_from=str(tiny_set / "rdunet.safetensors"),
    )
    continued = load_checkpoint(run_training(config, log=lambda message: None), expected_model="rdunet")
    shapes = {n: tuple(v.shape) for n, v in continued.build().state_dict().items()}
    assert shapes == {n: tuple(v.shape) for n, v in start.build().state_dict().items()}, (
        "the tiny width is kept"
    )


def test_training_and_validation_phantoms_never_share_a_seed_with_the_tests(tmp_path):
    from napari_chsnet.training.recipes import gather_slices

    config = dataclasses.replace(
        load_config(TINY_CONFIG),
        data=DataConfig(phantoms=2, validation_phantoms=1, phantom_shape=(8, 64, 64)),
    )
    train, validation = gather_slices(config, tmp_path / "cache")
    train_cases, validation_cases = {s.case_id for s in train}, {s.case_id for s in validation}
    assert train_cases == {"phantom1000", "phantom1001"} and validation_cases == {"phantom2000"}
    assert len(validation) == 2, "every 4th slice of an 8-slice validation phantom"


def _fit_a_1x1_conv_on_one_blank_slice(score, **settings):
    """fit() a 1x1 Conv2d with BCE + Dice on one blank 16 x 16 slice (train = validation), scored by score."""
    one = StageArrays(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), torch.ones(1))
    return fit(
        torch.nn.Conv2d(1, 1, 1),
        one,
        one,
        BCEDiceLoss(),
        FitSettings(batch_size=1, augment=AugmentSettings.none(), **settings),
        score=score,
    )


def test_early_stopping_stops_after_exactly_patience_epochs_without_improvement():
    """Scores 0.5, 0.7, then no better: with patience 2 the run ends after epoch 4 (epochs 3 and 4 did
    not improve on epoch 2) and keeps epoch 2, never trying epoch 5."""
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.9, 0.9])
    result = _fit_a_1x1_conv_on_one_blank_slice(
        lambda network, data, prepare, batch_size: next(scores), epochs=6, patience=2
    )
    assert [record.epoch for record in result.history] == [1, 2, 3, 4]
    assert result.stopped == "early_stopping" and result.best_epoch == 2 and result.best_val_dice == 0.7


def test_mean_dice_is_twice_the_overlap_over_the_total_and_one_for_an_empty_pair():
    """Dice = 2|P∩T| / (|P| + |T|) per image, averaged; an image with empty truth and empty prediction
    scores 1 (nothing to find, nothing invented)."""
    from napari_chsnet.training.loop import mean_dice

    probabilities = torch.zeros(3, 1, 4, 4)
    targets = torch.zeros(3, 1, 4, 4)
    probabilities[0, 0, 0, :4] = 0.9  # 4 pixels predicted
    targets[0, 0, 0, :2] = 1  # 2 true pixels, both predicted: 2·2 / (4 + 2)
    probabilities[2, 0, 1, :2] = 0.9  # empty truth, 2 pixels invented: 0
    assert mean_dice(probabilities[:1], targets[:1]) == pytest.approx(2 / 3)
    assert mean_dice(probabilities[1:2], targets[1:2]) == 1.0
    assert mean_dice(probabilities[2:], targets[2:]) == 0.0
    assert mean_dice(probabilities, targets) == pytest.approx((2 / 3 + 1 + 0) / 3)


class _TargetMeanLoss(torch.nn.Module):
    """A known loss per sample: the mean of its target (1 for an all-ones mask, 0 for an empty one); the
    logits enter at weight 0 only so that backward() has a graph."""

    def forward(self, logits, targets):
        return targets.mean() + 0 * logits.sum()


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (
            (1.0, 0.5),
            1 / 1.5,
        ),  # an expert slice (loss 1) beside a pseudo-labelled one (loss 0) at half weight
        ((0.5, 0.5), 0.5),  # pseudo-labelled only: the plain mean, the weight is relative, not a scale
    ],
)
def test_the_batch_loss_is_the_weighted_mean_of_the_per_sample_losses(weights, expected):
    """docs/training.md: pseudo-labelled slices train at loss weight 0.5 "against 1 for an expert mask",
    so a batch's loss is sum(w·loss) / sum(w), not sum(w·loss) / n."""
    masks = torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8)])
    data = StageArrays(torch.zeros(2, 1, 8, 8), masks, torch.tensor(weights))
    losses = []
    result = fit(
        torch.nn.Conv2d(1, 1, 1),
        data,
        StageArrays.empty(1, 8),
        _TargetMeanLoss(),
        FitSettings(epochs=1, batch_size=2, augment=AugmentSettings.none()),
        on_step=lambda step, total, loss: losses.append(loss),
    )
    assert losses == pytest.approx([expected])
    assert result.history[0].train_loss == pytest.approx(expected)


@pytest.mark.parametrize(("seconds_per_epoch", "epochs_run"), [(61, 1), (59, 2)])
def test_max_minutes_is_a_budget_in_minutes(monkeypatch, seconds_per_epoch, epochs_run):
    """max_minutes 1: an epoch that ends 61 s after the start stops the run there; after 59 s the next
    epoch still runs (and ends past the minute). A clock that advances only when an epoch is scored."""
    from types import SimpleNamespace

    from napari_chsnet.training import loop

    now = [0.0]
    monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=lambda: now[0]))

    def score(network, data, prepare, batch_size):
        now[0] += seconds_per_epoch
        return now[0]  # always better: early stopping never ends the run

    result = _fit_a_1x1_conv_on_one_blank_slice(score, epochs=5, max_minutes=1)
    assert len(result.history) == epochs_run
    assert result.stopped == "time_budget"
