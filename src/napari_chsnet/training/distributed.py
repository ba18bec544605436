"""Data-parallel training under ``torchrun``: one process per GPU (or per CPU slot), same code path.

``torchrun --nproc_per_node=N -m napari_chsnet.training.recipes CONFIG`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`init_from_env` joins the process group (NCCL when the training
device is CUDA, gloo when it is the CPU, whatever else the machine has) and :func:`current` tells
:func:`~napari_chsnet.training.loop.fit` to

* wrap the network in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients are
  averaged across processes, so every rank holds the same weights after each step),
* give each rank its own share of every epoch's shuffled order, as ``DistributedSampler`` does
  (same seeded permutation everywhere, padded to a multiple of the world size, rank ``r`` takes
  every ``world_size``-th sample from ``r``), so all ranks run the same number of steps,
* take stop decisions (early stopping, time budget) on rank 0 and broadcast them, so no rank
  waits forever for a peer that already stopped,
* leave logs and checkpoints to rank 0.

Without ``WORLD_SIZE`` (or with 1) nothing here is used and training is the plain loop.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from napari_chsnet.errors import ConfigError
from napari_chsnet.inference.device import auto_device_kind, checked_device_name


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a running process group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0

    def wrap(self, network: nn.Module) -> nn.Module:
        """``network`` (already on its device) inside DistributedDataParallel."""
        device = next(network.parameters()).device
        return nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )

    def shard_size(self, n_samples: int) -> int:
        """Samples each rank sees per epoch (the padded share)."""
        return math.ceil(n_samples / self.world_size)

    def epoch_order(self, n_samples: int, seed: int, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch``: a permutation seeded by (seed, epoch), padded, strided."""
        permutation = torch.randperm(
            n_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
        )
        padded_length = self.shard_size(n_samples) * self.world_size
        padded = permutation.repeat(math.ceil(padded_length / max(1, n_samples)))[:padded_length]
        return padded[self.rank :: self.world_size]

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        value = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.broadcast(value, src=0)
        return bool(value.item())

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks."""
        total = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(total)
        return float(total.item()) / self.world_size

    def sync_buffers(self, network: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts them only at the start of each forward, so after the last step of an
        epoch each rank holds statistics updated by its own batch; syncing makes validation,
        and the saved weights, identical on all ranks.
        """
        for buffer in network.buffers():
            dist.broadcast(buffer.data, src=0)

    def _device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )


def requested_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: str = "auto") -> DistributedContext | None:
    """Join the process group torchrun describes; ``None`` for a single process.

    The backend follows the training ``device`` (:func:`training_device`): NCCL, with this rank's GPU
    made current, when it is CUDA; gloo otherwise, so ``device: cpu`` trains on the CPUs of a GPU
    machine too, with more processes than GPUs if need be.
    """
    if requested_world_size() <= 1 or not dist.is_available():
        return None
    if not dist.is_initialized():
        run_device = training_device(device)
        if run_device.type == "cuda":
            torch.cuda.set_device(run_device)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return current()


def current() -> DistributedContext | None:
    """The context of an initialised process group of more than one rank, else ``None``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return DistributedContext(dist.get_rank(), dist.get_world_size(), _local_rank())


def checked_training_device(requested: str = "auto") -> str:
    """A training ``device`` normalised, or a :class:`ConfigError` (one line) before anything is read
    or written: the rules of ``chsnet finetune --device`` (inference/device.py ``checked_device_name``:
    auto, cpu, cuda, cuda:N or mps, and present on this machine), and under torchrun with several
    processes, one GPU per process: ``auto`` or ``cuda`` (each rank takes GPU ``LOCAL_RANK``) or ``cpu``."""
    key = checked_device_name(requested)
    world_size = requested_world_size()
    if world_size <= 1:
        return key
    if key == "mps" or key.startswith("cuda:"):
        raise ConfigError(
            f"device {key!r} does not suit torchrun's {world_size} processes: use auto or cuda (each "
            "process takes the GPU of its LOCAL_RANK) or cpu"
        )
    if key in ("auto", "cuda") and torch.cuda.is_available():
        count, local_rank = torch.cuda.device_count(), _local_rank()
        if local_rank >= count:
            raise ConfigError(
                f"torchrun process LOCAL_RANK {local_rank} has no GPU of its own: this machine has {count} "
                f"CUDA device(s); start at most {count} processes per machine or set device: cpu"
            )
    return key


def training_device(requested: str = "auto") -> torch.device:
    """The device a training ``device`` setting names (checked by :func:`checked_training_device`).

    ``"auto"`` is inference's choice (CUDA, then MPS, then the CPU), except under torchrun, where it
    is this rank's GPU (``LOCAL_RANK``), else the CPU (no MPS: its process groups are CUDA's or the
    CPU's); ``"cuda"`` under torchrun is this rank's GPU too.
    """
    key = checked_training_device(requested)
    several = requested_world_size() > 1
    if key == "auto":
        key = auto_device_kind(allow_mps=not several)
    if key == "cuda":
        return torch.device("cuda", _local_rank() if several else torch.cuda.current_device())
    return torch.device(key)


def shutdown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
