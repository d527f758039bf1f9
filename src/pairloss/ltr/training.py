"""``train``: a scorer, an optimizer, an objective, a process group and callbacks, put around the fit loop.

:func:`train` optimises a scorer of :mod:`pairloss.ltr.models` with a pairwise loss over batches of whole
sessions, validates after every epoch, stops early when validation stops improving, and writes into
``out_dir``: ``checkpoint.pt`` (every epoch; see :mod:`pairloss.ltr.checkpoint`), ``best.pt``,
``metrics.json`` and ``curves.png``.

**Resuming** (``resume=True``) continues from ``checkpoint.pt`` and gives bit-for-bit the result of an
uninterrupted run: batch order, dropout and pair sampling are drawn from ``(seed, epoch[, rank])`` rather
than from running streams, so no RNG state is carried over.

**Data parallelism**: under ``torchrun`` (or an initialised process group of several ranks) every rank
calls :func:`train` with the same arguments; the model trains under DDP, each rank on its part of every
global batch, and rank 0 alone writes files. See :mod:`pairloss.ltr.trainer` for why the gradients are
exactly those of one process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batching import sessions_with_pairs
from .callbacks import (
    BestCheckpoint,
    CurvesPlot,
    EarlyStopping,
    EpochEndHook,
    LastCheckpoint,
    MetricsJson,
    ProgressBar,
    Validation,
    writers,
)
from .checkpoint import check_resumable, fingerprint, read_checkpoint
from .config import TrainConfig
from .data import RankingDataset
from .distributed import SingleProcess, join_from_env
from .metrics import evaluate
from .models import Scorer, make_model
from .objectives import make_objective
from .trainer import Callback, FitState, fit

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: The scorer with the best epoch's weights, in eval mode.
        best_epoch: Epoch (1-based) whose weights ``model`` holds: the best validation epoch, or the last
            epoch without a validation set.
        best_metric: ``eval_metric`` at ``best_epoch`` (``None`` without a validation set).
        best_valid: All validation metrics at ``best_epoch``.
        epochs_run: Epochs completed, including those before a resumption.
        stopped_early: Whether early stopping ended the run.
        resumed_from_epoch: The checkpoint's epoch if the run resumed, else ``None``.
        history: One record per epoch: ``epoch``, ``train_loss``, ``valid`` (metrics), ``seconds``.
        extras: What reporting callbacks added (e.g. ``{"test": {...}}``).
        out_dir: The output directory; ``checkpoint_path``, ``best_path``, ``metrics_path`` and
            ``curves_path`` are its files.
    """

    model: Scorer
    best_epoch: int
    best_metric: float | None
    best_valid: dict[str, float]
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int | None
    history: list[dict[str, Any]] = field(repr=False)
    extras: dict[str, Any]
    out_dir: Path

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.json"

    @property
    def curves_path(self) -> Path:
        return self.out_dir / "curves.png"


def _check_inputs(config: object, train_data: object, valid_data: object, *hooks: tuple[str, object]) -> None:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    if not isinstance(train_data, RankingDataset):
        raise TypeError(f"train_data must be a RankingDataset; got {type(train_data).__name__}")
    for name, fn in hooks:
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None; got {type(fn).__name__}")
    if valid_data is None:
        return
    if not isinstance(valid_data, RankingDataset):
        raise TypeError(f"valid_data must be a RankingDataset or None; got {type(valid_data).__name__}")
    if valid_data.n_features != train_data.n_features:
        raise ValueError(f"valid_data has {valid_data.n_features} features but train_data has {train_data.n_features}")
    probe = evaluate(valid_data.labels, valid_data.labels, valid_data.lengths, [config.eval_metric],
                     exclude_all_equal=config.exclude_all_equal, gain=config.gain)  # type: ignore[arg-type]
    if math.isnan(probe[config.eval_metric]):
        raise ValueError(f"valid_data has no session on which {config.eval_metric} is defined (every session lacks "
                         "a relevant item or has all-equal labels), so early stopping would have nothing to track")


def _saved_state(group: SingleProcess, path: Path, config: TrainConfig, train_fingerprint: str) -> dict[str, Any]:
    """The checkpoint to resume from, read by rank 0 and given to every rank (a failure fails them all)."""
    outcome: tuple[dict[str, Any] | None, Exception | None] = (None, None)
    if group.is_writer:
        try:
            if not path.is_file():
                raise FileNotFoundError(f"cannot resume: {path.parent} holds no checkpoint.pt (no epoch finished)")
            saved = read_checkpoint(path)
            check_resumable(saved, config, train_fingerprint, path)
            outcome = (saved, None)
        except (OSError, ValueError) as exc:
            outcome = (None, exc)
    saved, problem = group.broadcast_object(outcome)
    if problem is not None:
        raise problem
    return saved  # type: ignore[return-value]


def _initial_state(config: TrainConfig, train_data: RankingDataset, group: SingleProcess,
                   loss_fn: Callable[..., torch.Tensor] | None) -> FitState:
    used = sessions_with_pairs(train_data.lengths, train_data.labels)
    if used.size == 0:
        raise ValueError("train_data has no session with two different labels; a pairwise loss has no pair")
    torch.manual_seed(config.seed)
    model = make_model(config.model, train_data.n_features, **config.model_kwargs())
    model.fit_preprocessing(train_data.features, standardize=config.standardize)
    model.to(group.device)
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=config.lr) if config.optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    )
    return FitState(config, model, model, optimizer, group, train_data.subset(used), make_objective(config, loss_fn))


def _restore(state: FitState, saved: Mapping[str, Any]) -> None:
    state.model.load_state_dict(saved["model_state"])
    state.optimizer.load_state_dict(saved["optimizer_state"])
    state.epoch = state.resumed_from = saved["epoch"]
    state.bad_epochs, state.history = saved["bad_epochs"], saved["history"]
    state.best_epoch, state.best_metric = saved["best_epoch"], saved["best_metric"]
    state.best_state = saved["best_state"]


def train(
    config: TrainConfig,
    train_data: RankingDataset,
    valid_data: RankingDataset | None,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    resume: bool = False,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    callbacks: Sequence[Callback] = (),
    run: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    group: SingleProcess | None = None,
) -> TrainResult:
    """Trains a scorer with a pairwise loss; see the module docstring for what it writes.

    Sessions whose labels are all equal form no pair and are left out of the training batches (the count is
    in ``metrics.json``).

    Args:
        config: Hyper-parameters.
        train_data: Training sessions.
        valid_data: Validation sessions for early stopping and model selection, or ``None`` (then the last
            epoch is kept).
        out_dir: Directory for checkpoints, metrics and plots (created if needed).
        progress: Show a rich progress bar on stderr.
        resume: Continue from ``out_dir/checkpoint.pt``, which must exist; its config must equal ``config``
            except in ``epochs`` and ``patience``, and the training data must be the same. Without it an
            existing run in ``out_dir`` is overwritten.
        loss_fn: Replaces the :mod:`pairloss.nn.functional` function of ``config.loss`` (same signature).
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is written.
        callbacks: Further callbacks, run on the writing rank after early stopping and before the files are
            written (so what they put in ``state.extras`` reaches ``metrics.json``).
        run: What the run was started with (e.g. data paths), stored in the checkpoint for resuming.
        summary: Further entries of ``metrics.json``.
        group: The process group; default: torchrun's if launched by it, else this process alone.

    Returns:
        The :class:`TrainResult` (on every rank).

    Raises:
        ValueError: On inconsistent data, no trainable session, an unusable validation set, an incompatible
            or damaged checkpoint, or an unavailable device.
        FileNotFoundError: ``resume`` without a checkpoint.
        FloatingPointError: If the loss becomes NaN or infinite.
    """
    _check_inputs(config, train_data, valid_data, ("loss_fn", loss_fn), ("on_epoch_end", on_epoch_end))
    group = join_from_env(config.device) if group is None else group
    out = Path(os.fspath(out_dir))
    if group.is_writer:
        out.mkdir(parents=True, exist_ok=True)
    train_fingerprint = fingerprint(train_data)
    saved = _saved_state(group, out / "checkpoint.pt", config, train_fingerprint) if resume else None
    run_spec = dict(saved["run"] if saved is not None and run is None else run or {})
    extras = {**(summary or {}), "train_sessions": {"total": train_data.n_sessions}}
    with torch.random.fork_rng(devices=[group.device.index] if group.device.type == "cuda" else []):
        state = _initial_state(config, train_data, group, loss_fn)
        extras["train_sessions"].update(used=state.train_data.n_sessions,
                                        skipped_without_pairs=train_data.n_sessions - state.train_data.n_sessions)
        if saved is not None:
            _restore(state, saved)
        state.net = group.wrap(state.model)
        hooks = [EpochEndHook(on_epoch_end)] if on_epoch_end is not None else []
        fit(state, [
            *([Validation(valid_data)] if valid_data is not None else []),
            EarlyStopping(has_validation=valid_data is not None),
            *writers([*callbacks, BestCheckpoint(out / "best.pt"),
                      LastCheckpoint(out / "checkpoint.pt", run_spec, train_fingerprint),
                      MetricsJson(out / "metrics.json", extras),
                      CurvesPlot(out / "curves.png", config.metric_names if valid_data is not None else ()),
                      *([ProgressBar()] if progress else [])], group.is_writer),
            *hooks,
        ])
    best_valid = state.history[state.best_epoch - 1]["valid"] if state.best_epoch else {}
    return TrainResult(state.model, state.best_epoch or state.epoch, state.best_metric, dict(best_valid), state.epoch,
                       state.stopped_early, state.resumed_from, state.history, state.extras, out)
