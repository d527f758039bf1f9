"""Process-group set-up and data parallelism with ``torch.nn.parallel.DistributedDataParallel``.

``torchrun --nproc-per-node 2 -m pairloss train ...`` starts two processes with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ...); :func:`join_from_env` joins its process group (gloo on CPU, NCCL on
CUDA) and returns a :class:`ProcessGroup`. A plain run gets a :class:`SingleProcess`. Both have the same
methods, so the training loop calls them unconditionally and never asks which one it has:

* :meth:`wrap` puts a model under DDP, which starts every rank from rank 0's parameters and averages
  gradients during ``backward``;
* :meth:`all_reduce_sum` sums a tensor over ranks (counts of sessions and pairs, loss totals);
* :meth:`broadcast_object` gives every rank rank 0's object (a checkpoint read by rank 0);
* :attr:`is_writer` is true on rank 0 only, the one process that writes files.

This module imports nothing from pairloss.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

__all__ = ["ProcessGroup", "SingleProcess", "join_from_env", "launched_by_torchrun"]

# Environment variables torchrun sets for every worker.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class SingleProcess:
    """The group of one process: every collective is the identity."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run's files (always, here)."""
        return True

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train: ``model`` itself."""
        return model

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``."""
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """``obj``."""
        return obj

    def barrier(self) -> None:
        """Nothing to wait for."""

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class ProcessGroup(SingleProcess):
    """This process's place in an initialised ``torch.distributed`` group of ``world_size`` ranks."""

    created: bool = False  # whether join_from_env initialised it (then close() destroys it)

    @property
    def is_writer(self) -> bool:
        """Whether this is rank 0, the only rank that writes files and prints."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` under DDP. Buffers (the feature standardiser) are fitted identically on every rank
        from the full training data, so they are not re-broadcast at every forward pass."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sums ``tensor`` over ranks, in place; returns it."""
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects, e.g. dicts of CPU tensors)."""
        box = [obj if self.rank == 0 else None]
        # NCCL moves pickled objects through device memory; gloo through CPU tensors.
        device = self.device if torch.distributed.get_backend() == "nccl" else None
        torch.distributed.broadcast_object_list(box, src=0, device=device)
        return box[0]

    def barrier(self) -> None:
        """Waits for every rank."""
        torch.distributed.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self) -> None:
        """Destroys the group if :func:`join_from_env` created it (no barrier: a failed rank must not hang it)."""
        if self.created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launched_by_torchrun() -> bool:
    """Whether torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ...) are all set."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def join_from_env(device: str = "cpu", timeout_s: float = 600.0) -> SingleProcess:
    """The process group this process belongs to: torchrun's (joined here), an initialised one, or none.

    Args:
        device: The training device, ``"cpu"`` (gloo) or ``"cuda"`` (NCCL, on GPU ``LOCAL_RANK``).
        timeout_s: Collective timeout: a rank that dies makes the others fail after this long instead of
            hanging forever.

    Returns:
        A :class:`ProcessGroup` when there are two ranks or more, else a :class:`SingleProcess`.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {device!r} but CUDA is not available")
    created = False
    if launched_by_torchrun() and not torch.distributed.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
        created = True
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return SingleProcess(dev)
    world_size = torch.distributed.get_world_size()
    if world_size < 2:
        if created:
            torch.distributed.destroy_process_group()
        return SingleProcess(dev)
    return ProcessGroup(dev, torch.distributed.get_rank(), world_size, created)
