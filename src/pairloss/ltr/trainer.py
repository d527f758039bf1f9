"""The fit loop: epochs of steps over batches of whole sessions, with callbacks around them.

:func:`fit` is the whole loop; :func:`run_epoch` and :func:`train_step` do one epoch and one step. None of
them asks whether it runs in one process or several: the :class:`~pairloss.ltr.distributed.SingleProcess`
or :class:`~pairloss.ltr.distributed.ProcessGroup` in :attr:`FitState.group` makes the collectives the
identity or real, and ``FitState.net`` is the model itself or the model under DDP. Everything else a run
does (validation, early stopping, checkpoints, the progress bar, metrics.json, ...) is a :class:`Callback`
(see :mod:`pairloss.ltr.callbacks`).

**Exact global-mean gradients.** Each rank trains on its part of the global batch
(:func:`pairloss.ltr.batching.rank_part`, possibly empty) and backpropagates its mean loss times
``world_size * n_local / n_global``; DDP averages gradients over ranks, so every rank ends the step with
the gradient of the global batch mean, whatever the split. A rank without sessions backpropagates a zero
that depends on every parameter, so it joins DDP's all-reduce. The L1/L2 penalty is the same on every rank
and is added unscaled, so DDP's average counts it once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .batching import epoch_plan, rank_part
from .config import TrainConfig
from .data import RankingDataset
from .distributed import SingleProcess
from .models import Scorer
from .objectives import Batch, Objective, penalty

__all__ = ["Callback", "FitState", "fit", "run_epoch", "train_step"]


@dataclass
class FitState:
    """Everything a run knows; callbacks read and update it.

    Attributes:
        config: The hyper-parameters.
        model: The scorer (what is saved and validated).
        net: What trains: ``model``, or ``model`` under DDP.
        optimizer: The optimizer of ``model``'s parameters.
        group: This process's group (see :mod:`pairloss.ltr.distributed`).
        train_data: The training sessions that have a pair.
        objective: The loss (see :mod:`pairloss.ltr.objectives`).
        epoch: The last finished epoch (0 before the first).
        history: One record per finished epoch: ``epoch``, ``train_loss``, ``valid``, ``seconds``.
        best_epoch: The epoch whose weights ``best_state`` holds.
        best_metric: The validation metric at ``best_epoch`` (``None`` without validation).
        best_state: A CPU copy of the best epoch's ``model.state_dict()``.
        bad_epochs: Epochs since the last improvement.
        should_stop: Set by a callback to end the run after this epoch.
        stopped_early: Whether early stopping ended the run.
        resumed_from: The checkpoint's epoch if the run resumed.
        extras: What callbacks add for the summary (e.g. test metrics).
    """

    config: TrainConfig
    model: Scorer
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    group: SingleProcess
    train_data: RankingDataset
    objective: Objective
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    should_stop: bool = False
    stopped_early: bool = False
    resumed_from: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Hooks around :func:`fit`; each does nothing unless overridden."""

    def on_fit_start(self, state: FitState) -> None:
        """Before the first epoch (also of a resumed run)."""

    def on_epoch_start(self, state: FitState, n_steps: int) -> None:
        """Before the steps of epoch ``state.epoch``."""

    def on_step_end(self, state: FitState) -> None:
        """After each optimizer step."""

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        """After epoch ``state.epoch``, whose ``record`` is already in ``state.history``."""

    def on_fit_end(self, state: FitState) -> None:
        """After the last epoch."""

    def teardown(self, state: FitState) -> None:
        """Always, last, also when the run failed or was interrupted."""


def fit(state: FitState, callbacks: list[Callback]) -> FitState:
    """Runs epochs ``state.epoch + 1 ..`` until ``config.epochs`` or until a callback stops the run."""
    try:
        for cb in callbacks:
            cb.on_fit_start(state)
        while state.epoch < state.config.epochs and not state.should_stop:
            state.epoch += 1
            record = run_epoch(state, callbacks)
            state.history.append(record)
            for cb in callbacks:
                cb.on_epoch_end(state, record)
        for cb in callbacks:
            cb.on_fit_end(state)
    finally:
        for cb in callbacks:
            cb.teardown(state)
    return state


def run_epoch(state: FitState, callbacks: list[Callback]) -> dict[str, Any]:
    """Trains epoch ``state.epoch`` on its global batch plan; returns the epoch's record."""
    started = time.perf_counter()
    config, group = state.config, state.group
    plan = epoch_plan(state.train_data.lengths, config, state.epoch)
    # Dropout and pair sampling: a fresh stream per (seed, epoch, rank), so resuming needs no RNG state
    # and ranks draw independent masks.
    stream = np.random.SeedSequence([config.seed, state.epoch, group.rank])
    torch.manual_seed(int(stream.generate_state(1)[0]))
    pair_rng = np.random.default_rng(stream)
    for cb in callbacks:
        cb.on_epoch_start(state, len(plan))
    state.net.train()
    totals = torch.zeros(2, dtype=torch.float64)  # sum of session-weighted losses, sessions
    for step, global_batch in enumerate(plan):
        totals += torch.tensor(train_step(state, rank_part(global_batch, group.rank, group.world_size), pair_rng, step))
        for cb in callbacks:
            cb.on_step_end(state)
    loss_sum, sessions = group.all_reduce_sum(totals.to(group.device)).tolist()
    return {"epoch": state.epoch, "train_loss": loss_sum / sessions, "valid": {},
            "seconds": time.perf_counter() - started}


def train_step(state: FitState, sessions: np.ndarray, pair_rng: np.random.Generator, step: int) -> tuple[float, int]:
    """One optimizer step on this rank's ``sessions`` of a global batch.

    Returns:
        ``(mean loss * n_sessions, n_sessions)`` of this rank's part, for the epoch's mean loss.
    """
    config, group = state.config, state.group
    batch = Batch.of(state.train_data.subset(sessions), group.device)
    loss, n_terms = state.objective(state.net(batch.features), batch, pair_rng)
    extra = penalty(state.model, config.l1, config.l2)
    finite = bool(torch.isfinite(loss)) and (extra is None or bool(torch.isfinite(extra)))
    counts = torch.tensor([float(n_terms), float(not finite)], dtype=torch.float64, device=group.device)
    all_terms, n_bad = group.all_reduce_sum(counts).tolist()
    if n_bad:
        value = loss if extra is None else loss + extra
        shown = float(value.detach()) if not finite else "non-finite on another rank"
        raise FloatingPointError(f"the training loss became {shown} at epoch {state.epoch}, batch {step}; "
                                 f"try a smaller learning rate (lr={config.lr})")
    objective = loss * (group.world_size * n_terms / all_terms)
    state.optimizer.zero_grad(set_to_none=True)
    (objective if extra is None else objective + extra).backward()
    state.optimizer.step()
    n_sessions = batch.sessions.n_sessions
    return (float(loss.detach()) * n_sessions if n_sessions else 0.0), n_sessions

