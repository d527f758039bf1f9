"""What a run does around the fit loop, one callback per concern.

On every rank (they change the state every rank must agree on): :class:`Validation` and
:class:`EarlyStopping`. Validation runs on every rank rather than on rank 0 and a broadcast: DDP keeps
the parameters identical, so every rank computes the same metrics and takes the same decision.

On rank 0 only (they write files or print; :func:`writers` drops them elsewhere): :class:`TestMetrics`,
:class:`BestCheckpoint`, :class:`LastCheckpoint`, :class:`MetricsJson`, :class:`CurvesPlot`,
:class:`ProgressBar`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import FORMAT, atomic_write, save, write_json
from .data import RankingDataset
from .metrics import evaluate
from .models import score_items
from .trainer import Callback, FitState

__all__ = [
    "BestCheckpoint",
    "CurvesPlot",
    "EarlyStopping",
    "EpochEndHook",
    "LastCheckpoint",
    "MetricsJson",
    "ProgressBar",
    "TestMetrics",
    "Validation",
    "checkpoint_state",
    "writers",
]


def writers(callbacks: Sequence[Callback], is_writer: bool) -> list[Callback]:
    """``callbacks`` on the writing rank, none elsewhere."""
    return list(callbacks) if is_writer else []


def _metrics(state: FitState, data: RankingDataset, names: Sequence[str]) -> dict[str, float]:
    scores = score_items(state.model, data.features)
    return evaluate(scores, data.labels, data.lengths, list(names), gain=state.config.gain,  # type: ignore[arg-type]
                    exclude_all_equal=state.config.exclude_all_equal)


class Validation(Callback):
    """Puts the validation metrics of ``config.metric_names`` into each epoch's record."""

    def __init__(self, data: RankingDataset) -> None:
        self.data = data

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        record["valid"] = _metrics(state, self.data, state.config.metric_names)


class EarlyStopping(Callback):
    """Tracks the best epoch by ``config.eval_metric`` and stops after ``config.patience`` bad epochs.

    Without validation data the last epoch is the best. At the end the model holds the best weights.
    """

    def __init__(self, has_validation: bool) -> None:
        self.has_validation = has_validation

    def _out_of_patience(self, state: FitState) -> bool:
        patience = state.config.patience
        return patience is not None and state.bad_epochs >= patience and 0 < state.epoch < state.config.epochs

    def on_fit_start(self, state: FitState) -> None:
        # A resumed run that had stopped early stays stopped unless the patience was raised.
        state.should_stop = state.stopped_early = self._out_of_patience(state)

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        current = record["valid"].get(state.config.eval_metric)
        best, delta = state.best_metric, state.config.min_delta
        if current is not None and math.isfinite(current) and (best is None or current > best + delta):
            state.best_epoch, state.best_metric, state.bad_epochs = state.epoch, current, 0
            state.best_state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
        elif self.has_validation:
            state.bad_epochs += 1
        state.should_stop = state.stopped_early = self._out_of_patience(state)

    def on_fit_end(self, state: FitState) -> None:
        if state.best_state is None:  # nothing to select on: the final weights are the result
            state.best_epoch, state.best_metric = state.epoch, None
            state.best_state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
        state.model.load_state_dict(state.best_state)
        state.model.eval()


class TestMetrics(Callback):
    """Scores the best model on held-out data at the end; the summary keeps the values under ``key``."""

    def __init__(self, data: RankingDataset, names: Sequence[str], key: str = "test") -> None:
        self.data, self.names, self.key = data, tuple(names), key

    def on_fit_end(self, state: FitState) -> None:
        state.extras[self.key] = _metrics(state, self.data, self.names)


def _best_file(state: FitState) -> dict[str, Any]:
    return {"format": FORMAT, "epoch": state.best_epoch, "metric": state.best_metric,
            "config": state.config.to_dict(), "n_features": state.model.n_features, "model_state": state.best_state}


class BestCheckpoint(Callback):
    """Writes ``best.pt`` whenever the best epoch changes, and at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        if state.best_epoch == state.epoch and state.best_state is not None:
            save(self.path, _best_file(state))

    def on_fit_end(self, state: FitState) -> None:
        save(self.path, _best_file(state))


def checkpoint_state(state: FitState, run: dict[str, Any], train_fingerprint: str) -> dict[str, Any]:
    """The contents of ``checkpoint.pt`` after ``state.epoch`` (see :mod:`pairloss.ltr.checkpoint`)."""
    return {
        "format": FORMAT, "epoch": state.epoch, "config": state.config.to_dict(), "run": run,
        "train_fingerprint": train_fingerprint, "model_state": state.model.state_dict(),
        "optimizer_state": state.optimizer.state_dict(), "best_state": state.best_state,
        "best_epoch": state.best_epoch, "best_metric": state.best_metric, "bad_epochs": state.bad_epochs,
        "history": state.history,
    }


class LastCheckpoint(Callback):
    """Writes ``checkpoint.pt`` after every epoch: what ``--resume`` continues from."""

    def __init__(self, path: Path, run: dict[str, Any], train_fingerprint: str) -> None:
        self.path, self.run, self.fingerprint = path, run, train_fingerprint

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        save(self.path, checkpoint_state(state, self.run, self.fingerprint))


class MetricsJson(Callback):
    """Writes ``metrics.json`` (config, history, best epoch, ``extras``) after every epoch and at the end."""

    def __init__(self, path: Path, extras: dict[str, Any]) -> None:
        self.path, self.extras = path, extras

    def _write(self, state: FitState) -> None:
        best_valid = state.history[state.best_epoch - 1]["valid"] if state.best_epoch else {}
        write_json(self.path, {
            "config": state.config.to_dict(), "eval_metric": state.config.eval_metric,
            "best_epoch": state.best_epoch, "best_metric": state.best_metric, "best_valid": best_valid,
            "epochs_run": state.epoch, "stopped_early": state.stopped_early,
            "resumed_from_epoch": state.resumed_from, "world_size": state.group.world_size,
            **self.extras, **state.extras, "history": state.history,
        })

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        self._write(state)

    def on_fit_end(self, state: FitState) -> None:
        self._write(state)


class CurvesPlot(Callback):
    """Draws ``curves.png`` at the end: training loss, and the validation metrics per epoch."""

    def __init__(self, path: Path, metric_names: Sequence[str]) -> None:
        self.path, self.names = path, tuple(metric_names)

    def on_fit_end(self, state: FitState) -> None:
        # Figure + the Agg canvas directly, not pyplot: no global backend switch, no GUI, thread-safe.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4))
        FigureCanvasAgg(fig)
        ax_loss, ax_metric = fig.subplots(1, 2)
        epochs = [r["epoch"] for r in state.history]
        ax_loss.plot(epochs, [r["train_loss"] for r in state.history], marker="o")
        ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
        for name in self.names:
            values = [r["valid"].get(name, math.nan) for r in state.history]
            if any(math.isfinite(v) for v in values):
                ax_metric.plot(epochs, values, marker="o", label=name)
        if state.history:
            ax_metric.axvline(state.best_epoch, color="grey", linestyle="--", label=f"best (epoch {state.best_epoch})")
        ax_metric.set(xlabel="epoch", ylabel="validation metric", title="Validation")
        ax_metric.legend(loc="lower right")
        fig.tight_layout()
        atomic_write(self.path, lambda f: fig.savefig(f, format="png", dpi=100))


class ProgressBar(Callback):
    """A rich progress bar on stderr: one line per epoch with its loss and validation metric."""

    def on_fit_start(self, state: FitState) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self.bar.start()

    def on_epoch_start(self, state: FitState, n_steps: int) -> None:
        self.task = self.bar.add_task(f"epoch {state.epoch}/{state.config.epochs}", total=n_steps, info="")

    def on_step_end(self, state: FitState) -> None:
        self.bar.advance(self.task)

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        current = record["valid"].get(state.config.eval_metric)
        shown = f"  {state.config.eval_metric} {current:.4f}" if current is not None else ""
        self.bar.update(self.task, info=f"loss {record['train_loss']:.4f}{shown}")

    def teardown(self, state: FitState) -> None:
        if hasattr(self, "bar"):
            self.bar.stop()


class EpochEndHook(Callback):
    """Calls ``hook(epoch, record)`` after each epoch (after the checkpoint is written)."""

    def __init__(self, hook: Callable[[int, dict[str, Any]], None]) -> None:
        self.hook = hook

    def on_epoch_end(self, state: FitState, record: dict[str, Any]) -> None:
        self.hook(state.epoch, record)
