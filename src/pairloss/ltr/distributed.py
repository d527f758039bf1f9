"""Data-parallel training with ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

Run the same training as ``pairloss train`` on several processes::

    torchrun --nproc-per-node 2 -m pairloss.ltr.distributed --epochs 3
    torchrun --nproc-per-node 2 -m pairloss.ltr.distributed --data rank.train --test rank.test
    torchrun --nproc-per-node 2 $(which pairloss) train --distributed ...   # the same thing

Every option of ``pairloss train`` is accepted. Without torchrun's environment (``WORLD_SIZE`` etc.)
the entry point simply trains in one process.

Design (implemented in :func:`pairloss.ltr.train.train`, which switches to it whenever a process
group with more than one rank is initialised):

* **Same global batches as one process.** Every rank draws the same shuffled batch plan over all
  training sessions from the ``(seed, epoch)`` generator; the sessions of a global batch are split
  between ranks by ownership (session ``s`` belongs to rank ``s % world_size``, i.e. each rank trains
  on ``RankingDataset.shard(rank, world_size)``), so a rank may get fewer sessions than another, or
  none, in a step.
* **Exact gradient averaging.** Each rank backpropagates its sessions' mean loss scaled by its share
  of the global batch (``n_local / n_global``, the counts all-reduced first), then the flattened
  gradients are summed with one ``all_reduce``. The sum is the gradient of the global batch mean,
  so an ``N``-process run follows the 1-process run up to floating-point summation order, whatever
  the batch size (ranks without sessions contribute zeros, so nobody skips a collective). The L1/L2
  penalty is added after the reduction, once. ``margin_ranking`` samples pairs per rank, so its
  runs match a 1-process run statistically rather than numerically.
* **Rank 0 is the writer.** It validates, decides on early stopping, writes ``checkpoint.pt`` /
  ``best.pt`` / ``metrics.json`` / ``curves.png`` and broadcasts what the other ranks need
  (validation metrics, the checkpoint on ``--resume``, the best weights at the end), so no rank
  reads a file another rank writes and a shared file system is not required. Parameters are
  broadcast from rank 0 after initialisation, so all ranks start identical, and after every epoch
  the ranks verify that they still hold bit-identical parameters (else ``RuntimeError``).
* Dropout streams are seeded per ``(seed, epoch, rank)``; a checkpoint carries no RNG state, so a
  run can resume with a different number of processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DistContext", "current_context", "init_from_env", "main"]

# Environment variables torchrun (and torch.distributed.launch) set for every worker.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in an initialised process group of more than one rank.

    Attributes:
        rank: This process's rank.
        world_size: Number of processes.
        device: Device of the tensors exchanged in collectives (the training device).
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the rank that writes files and prints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sums ``tensor`` over ranks, in place; returns it."""
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects, e.g. dicts of CPU tensors)."""
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copies rank 0's parameters and buffers into ``module`` on every rank."""
        for tensor in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sums the gradients of ``params`` over ranks with one collective (missing grads count as 0).

        Afterwards every parameter has a gradient on every rank, so optimizers that skip parameters
        without one (Adam) take the same step everywhere.
        """
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ])
        self.all_reduce_sum(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def check_in_sync(self, module: torch.nn.Module, what: str) -> None:
        """Raises ``RuntimeError`` on every rank unless all ranks hold bit-identical parameters/buffers.

        Costs one broadcast of the model (as much as one gradient reduction), so it runs once per
        epoch: a checkpoint written by rank 0 then provably describes every rank.
        """
        tensors = [t.detach().reshape(-1).to(torch.float64) for t in module.state_dict().values()]
        mine = torch.cat(tensors) if tensors else torch.zeros(0, dtype=torch.float64, device=self.device)
        reference = mine.clone()
        torch.distributed.broadcast(reference, src=0)
        differs = torch.tensor([float(not torch.equal(mine, reference))], dtype=torch.float64, device=mine.device)
        self.all_reduce_sum(differs)
        if differs.item():
            raise RuntimeError(
                f"distributed training diverged {what}: {int(differs.item())} of {self.world_size} ranks "
                "hold parameters that differ from rank 0's"
            )

    def barrier(self) -> None:
        """Waits for every rank."""
        if self.device.type == "cuda":
            torch.distributed.barrier(device_ids=[self.device.index or 0])
        else:
            torch.distributed.barrier()

    def _object_device(self) -> torch.device | None:
        # NCCL moves pickled objects through device memory; gloo through CPU tensors.
        return self.device if torch.distributed.get_backend() == "nccl" else None


def current_context(device: torch.device | str = "cpu") -> DistContext | None:
    """The :class:`DistContext` of an initialised process group with >= 2 ranks, else ``None``."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world_size = torch.distributed.get_world_size()
    if world_size < 2:
        return None
    return DistContext(torch.distributed.get_rank(), world_size, torch.device(device))


def launched_by_torchrun() -> bool:
    """Whether torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ...) are all set."""
    return all(name in os.environ for name in _TORCHRUN_ENV)


def init_from_env(device: str = "cpu", timeout_s: float = 600.0) -> bool:
    """Initialises the default process group from torchrun's environment.

    Uses gloo for CPU training and NCCL for CUDA (binding this process to GPU ``LOCAL_RANK``).

    Args:
        device: The training device (``config.device``).
        timeout_s: Collective timeout; a rank that dies makes the others fail after this long
            instead of hanging forever.

    Returns:
        ``True`` if this call created the group (the caller should destroy it), ``False`` if one
        was already initialised.

    Raises:
        RuntimeError: Outside torchrun's environment, or without ``torch.distributed``.
    """
    import datetime

    if not torch.distributed.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    if torch.distributed.is_initialized():
        return False
    if not launched_by_torchrun():
        missing = [name for name in _TORCHRUN_ENV if name not in os.environ]
        raise RuntimeError(
            f"distributed training needs torchrun's environment; {', '.join(missing)} not set "
            "(launch with: torchrun --nproc-per-node N -m pairloss.ltr.distributed ...)"
        )
    use_cuda = torch.device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(
        backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
    )
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pairloss.ltr.distributed [pairloss train options]``: ``pairloss train --distributed``."""
    from pairloss.cli import app

    args = list(sys.argv[1:] if argv is None else argv)
    app(["train", "--distributed", *args], prog_name="pairloss")


if __name__ == "__main__":
    main()
