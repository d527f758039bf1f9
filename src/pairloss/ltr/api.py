"""What the ``pairloss`` commands call: one function per command, and the life of a run directory.

* :func:`run_training` (``pairloss train``): load the data, train, score the test split;
* :func:`resume_training` (``pairloss train --resume``): continue a run with the configuration and data
  paths stored in its checkpoint; only the epoch budget and the patience may change;
* :func:`evaluate_model`, :func:`predict_file`, :func:`export_model` (``evaluate`` / ``predict`` /
  ``export``): they take a checkpoint or a run directory, also of an interrupted run.

Errors about something the user gave are :class:`InputError`, which says which input (``"data"``,
``"out"``, ``"model"``, ...) and names the file; the command line turns the input into its flag.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pairloss.onnx import export_scorer

from .callbacks import TestMetrics
from .checkpoint import load_model, read_checkpoint, read_epoch, stored_config
from .config import TrainConfig
from .data import RankingDataset, fold_files, load
from .distributed import SingleProcess, join_from_env
from .metrics import evaluate
from .models import Scorer, score_items
from .toy_data import make_toy_dataset
from .training import TrainResult, train

__all__ = [
    "KEEP",
    "REPORT_METRICS",
    "TOY_SOURCE",
    "EvalReport",
    "InputError",
    "Splits",
    "TrainReport",
    "TrainingInterrupted",
    "default_out_dir",
    "evaluate_model",
    "export_model",
    "latest_run",
    "load_splits",
    "predict_file",
    "resolve_model_path",
    "resume_training",
    "run_training",
]

#: Metrics of the final table of ``pairloss train``.
REPORT_METRICS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "map", "mrr")
TOY_SOURCE = "built-in synthetic data (make_toy_dataset)"
PathLike = str | os.PathLike[str]


class InputError(ValueError):
    """A bad input of a command: ``source`` says which (``"data"``, ``"valid"``, ``"test"``, ``"out"``, ``"model"``)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(message)
        self.source = source


class TrainingInterrupted(Exception):
    """Training was interrupted (Ctrl-C); ``last_epoch`` is the last epoch saved in ``out_dir`` (or ``None``)."""

    def __init__(self, out_dir: Path, last_epoch: int | None) -> None:
        self.out_dir, self.last_epoch = out_dir, last_epoch
        if last_epoch is None:
            text = f"interrupted before the first epoch finished: {out_dir} holds no checkpoint, nothing to resume"
        else:
            text = (f"interrupted: {out_dir} holds the run up to epoch {last_epoch}; "
                    f"continue it with: pairloss train --resume --out {out_dir}")
        super().__init__(text)


@contextmanager
def _about(source: str) -> Iterator[None]:
    """Errors inside become :class:`InputError` of ``source`` (their message already names the file)."""
    try:
        yield
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(source, str(exc)) from exc


@dataclass
class Splits:
    """Train / validation / test data and where each came from (for messages and metrics.json)."""

    train: RankingDataset
    valid: RankingDataset | None
    test: RankingDataset | None
    sources: dict[str, str] = field(default_factory=dict)


def _load_file(source: str, path: PathLike, n_features: int | None, width_of: str) -> RankingDataset:
    with _about(source):
        part = load(path)
        if isinstance(part, dict):
            name = "vali" if source == "valid" else "test"
            if name not in part:
                raise ValueError(f"{path} is a LETOR fold without {name}.txt; pass a data file")
            part = part[name]
        if n_features is not None and part.n_features != n_features:
            raise ValueError(f"{path} has {part.n_features} feature columns but {width_of} {n_features}")
    return part


def load_splits(data: PathLike | None = None, valid: PathLike | None = None, test: PathLike | None = None, *,
                valid_fraction: float = 0.1, split_seed: int = 0) -> Splits:
    """Loads training, validation and test data the way ``pairloss train`` does.

    ``data`` is an SVMlight/LETOR file, a LightGBM file with ``<file>.query`` beside it, or a fold directory
    (a LETOR ``Fold``, or a LightGBM example directory with ``<name>.train`` / ``<name>.test``; see
    :func:`pairloss.ltr.data.fold_files`; its vali / test files are used unless ``valid`` / ``test`` are
    given); ``None``: the built-in synthetic data (:func:`pairloss.ltr.make_toy_dataset`). Without validation data,
    ``valid_fraction`` of the training sessions are held out (seeded by ``split_seed``); 0 holds out none.
    Validation and test files must have the training data's feature count.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise InputError("valid_fraction", f"valid_fraction must be in [0, 1); got {valid_fraction}")
    parts: dict[str, RankingDataset | None] = {"valid": None, "test": None}
    if data is None:
        train_data, parts["valid"], parts["test"] = make_toy_dataset()
        sources = dict.fromkeys(("train", "valid", "test"), TOY_SOURCE)
    else:
        with _about("data"):
            loaded = load(data)
        fold = loaded if isinstance(loaded, dict) else {"train": loaded}
        files = fold_files(data) if isinstance(loaded, dict) else {"train": Path(data)}
        train_data = fold["train"]
        sources = {"train": str(files["train"])}
        for role, name in (("valid", "vali"), ("test", "test")):
            if name in fold:
                parts[role], sources[role] = fold[name], str(files[name])
    width = f"the training data ({sources['train']}) has"
    for role, path in (("valid", valid), ("test", test)):
        if path is not None:
            parts[role], sources[role] = _load_file(role, path, train_data.n_features, width), str(path)
    if parts["valid"] is None and valid_fraction > 0:
        if train_data.n_sessions < 2:
            raise InputError("data", f"{sources['train']}: cannot hold out validation sessions from a single "
                             "session; pass --valid or --valid-fraction 0")
        train_data, parts["valid"] = train_data.split(valid_fraction, seed=split_seed)
        sources["valid"] = f"{valid_fraction:g} of the training sessions (seed {split_seed})"
    return Splits(train_data, parts["valid"], parts["test"], sources)


def default_out_dir(root: PathLike = "runs") -> Path:
    """A new ``root/<YYYYmmdd-HHMMSS>`` directory name (suffixed ``-2``, ``-3``, ... if taken)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def latest_run(root: PathLike = "runs") -> Path:
    """The most recently modified run directory under ``root`` that holds a ``checkpoint.pt``."""
    runs = [p.parent for p in Path(root).glob("*/checkpoint.pt")]
    if not runs:
        raise InputError("out", f"nothing to resume: no {Path(root) / '*' / 'checkpoint.pt'}; pass --out RUN_DIR")
    return max(runs, key=lambda p: (p / "checkpoint.pt").stat().st_mtime)


@dataclass
class TrainReport:
    """Outcome of :func:`run_training` / :func:`resume_training`.

    Attributes:
        result: The :class:`pairloss.ltr.TrainResult` (on every rank).
        config: The training configuration.
        splits: The data used.
        out_dir: Run directory.
        eval_split: ``"test"`` (or ``"valid"`` without test data, ``None`` without either).
        eval_metrics: :data:`REPORT_METRICS` of the best model on ``eval_split`` (rank 0 only).
        is_main: Whether this process is rank 0 (always true without distribution).
        world_size: Number of training processes.
    """

    result: TrainResult
    config: TrainConfig
    splits: Splits
    out_dir: Path
    eval_split: str | None
    eval_metrics: dict[str, float]
    is_main: bool = True
    world_size: int = 1


def _fit_run(config: TrainConfig, splits: Splits, out: Path, run: dict[str, Any], group: SingleProcess, *,
             resume: bool, progress: bool, **train_kwargs: Any) -> TrainReport:
    eval_split = "test" if splits.test is not None else ("valid" if splits.valid is not None else None)
    part = splits.test if eval_split == "test" else splits.valid
    reporting = [TestMetrics(part, REPORT_METRICS, "test" if eval_split == "test" else "valid_report")] if part else []
    try:
        result = train(config, splits.train, splits.valid, out, progress=progress, resume=resume, callbacks=reporting,
                       run=run, summary={"data": splits.sources}, group=group, **train_kwargs)
    except KeyboardInterrupt:
        raise TrainingInterrupted(out, read_epoch(out / "checkpoint.pt")) from None
    metrics = result.extras.get("test" if eval_split == "test" else "valid_report", {})
    group.barrier()  # every rank returns once rank 0's files are complete
    return TrainReport(result, config, splits, out, eval_split, metrics, group.is_writer, group.world_size)


def run_training(config: TrainConfig, data: PathLike | None = None, valid: PathLike | None = None,
                 test: PathLike | None = None, *, out_dir: PathLike | None = None, valid_fraction: float = 0.1,
                 progress: bool = True, loss_fn: Callable[..., Any] | None = None,
                 on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainReport:
    """Loads data, trains a new run, and scores the best model on the test split: ``pairloss train``.

    Args:
        config: The training configuration.
        data: Training data (see :func:`load_splits`); ``None``: the built-in synthetic data.
        valid: Validation data.
        test: Test data, scored at the end (:data:`REPORT_METRICS`, in ``metrics.json`` under ``"test"``).
        out_dir: Run directory; default a new ``runs/<timestamp>``. An existing run there is replaced.
        valid_fraction: Hold-out fraction without validation data, seeded with ``config.seed``.
        progress: Show a progress bar (rank 0 only).
        loss_fn: Passed to :func:`pairloss.ltr.train`.
        on_epoch_end: Passed to :func:`pairloss.ltr.train`.

    Under ``torchrun`` every process calls this with the same arguments and trains data-parallel.

    Raises:
        InputError: A file or value the user gave is unusable (the message names it).
        TrainingInterrupted: On Ctrl-C; it names the run directory and the last saved epoch.
    """
    group = join_from_env(config.device)
    try:
        splits = load_splits(data, valid, test, valid_fraction=valid_fraction, split_seed=config.seed)
        # One decision for every rank: their clocks (hence default names) may differ.
        out = Path(group.broadcast_object(Path(out_dir) if out_dir is not None else default_out_dir()))
        run = {"data": _absolute(data), "valid": _absolute(valid), "test": _absolute(test),
               "valid_fraction": valid_fraction}
        return _fit_run(config, splits, out, run, group, resume=False, progress=progress, loss_fn=loss_fn,
                        on_epoch_end=on_epoch_end)
    finally:
        group.close()


def _absolute(path: PathLike | None) -> str | None:
    return None if path is None else os.path.abspath(path)


#: Marks a :func:`resume_training` argument that was not given (``None`` is a value for ``patience``).
KEEP: Any = object()


def resume_training(out_dir: PathLike | None = None, *, epochs: int | None = None, patience: int | None = KEEP,
                    progress: bool = True) -> TrainReport:
    """Continues the run in ``out_dir`` with the config and data stored in its checkpoint: ``train --resume``.

    Args:
        out_dir: The run directory; default: the latest run under ``runs/``.
        epochs: New epoch budget (default: the stored one).
        patience: New early-stopping patience, ``None`` for none (default: the stored one).
        progress: Show a progress bar (rank 0 only).

    Raises:
        InputError: ``out_dir`` holds no readable checkpoint, or the stored data can no longer be read.
        TrainingInterrupted: On Ctrl-C.
    """
    out = latest_run() if out_dir is None else Path(out_dir)
    path = out / "checkpoint.pt"
    with _about("out"):
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: {out} holds no checkpoint.pt (no run there, or no epoch finished)")
        saved = read_checkpoint(path)
        config = stored_config(saved, path)
        changes = {"epochs": epochs} if epochs is not None else {}
        config = replace(config, **changes, **({"patience": patience} if patience is not KEEP else {}))
    run = saved["run"]
    group = join_from_env(config.device)
    try:
        try:
            splits = load_splits(run.get("data"), run.get("valid"), run.get("test"),
                                 valid_fraction=run.get("valid_fraction", 0.1), split_seed=config.seed)
        except InputError as exc:  # the user typed --out, not the stored path that fails now
            what = {"data": "training data", "valid": "validation data", "test": "test data"}.get(exc.source, "data")
            raise InputError("out", f"{path} is a run whose {what} cannot be read now: {exc}") from exc
        return _fit_run(config, splits, out, run, group, resume=True, progress=progress)
    finally:
        group.close()


def resolve_model_path(model: PathLike) -> Path:
    """A checkpoint file, or a run directory: its ``best.pt``, else (an interrupted run) its ``checkpoint.pt``."""
    path = Path(model)
    if path.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name
        raise InputError("model", f"{path} holds no best.pt or checkpoint.pt (no epoch of a run there finished)")
    if not path.is_file():
        raise InputError("model", f"no such file: {path}")
    return path


def _load_scorer(model: PathLike) -> tuple[Path, Scorer]:
    path = resolve_model_path(model)
    with _about("model"):
        return path, load_model(path)


@dataclass
class EvalReport:
    """Outcome of :func:`evaluate_model`: ``metrics`` plus what they were computed on."""

    metrics: dict[str, float]
    model_path: Path
    data_path: Path
    n_sessions: int
    n_items: int
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (NaN metrics become ``None``)."""
        metrics = {k: (v if v == v else None) for k, v in self.metrics.items()}
        return {"model": str(self.model_path), "data": str(self.data_path), "n_sessions": self.n_sessions,
                "n_items": self.n_items, "options": self.options, "metrics": metrics}


def evaluate_model(model: PathLike, data: PathLike, metrics: Sequence[str] = ("ndcg@10", "map", "mrr"), *,
                   gain: str = "exp2", exclude_all_equal: bool = True, no_relevant: str = "skip",
                   ties: str = "pessimistic", relevance_threshold: float = 1.0,
                   json_path: PathLike | None = None) -> EvalReport:
    """Scores ``data`` with a trained model and computes ranking metrics: ``pairloss evaluate``.

    Args:
        model: ``best.pt`` / ``checkpoint.pt``, or a run directory (see :func:`resolve_model_path`).
        data: Data file (SVMlight/LETOR, or LightGBM with ``.query``), or a fold (its ``test.txt``); it must
            have the model's feature count.
        metrics: Metric names, e.g. ``"ndcg@10"``, ``"map"``, ``"mrr@5"``, ``"pairwise_accuracy"``.
        gain: NDCG gain, ``"exp2"`` or ``"linear"``.
        exclude_all_equal: Leave sessions whose labels are all equal out of the means.
        no_relevant: Rule for sessions without a relevant item (see :mod:`pairloss.ltr.metrics`).
        ties: Tie-breaking rule for equal scores.
        relevance_threshold: Smallest relevant label for MAP and MRR.
        json_path: Also write the report there as JSON.
    """
    model_path, scorer = _load_scorer(model)
    dataset = _load_file("data", data, scorer.n_features, "the model takes")
    options = {"gain": gain, "exclude_all_equal": exclude_all_equal, "no_relevant": no_relevant, "ties": ties,
               "relevance_threshold": relevance_threshold}
    with _about("data"):
        values = evaluate(score_items(scorer, dataset.features), dataset.labels, dataset.lengths, list(metrics),
                          **options)  # type: ignore[arg-type]
    report = EvalReport(values, model_path, Path(data), dataset.n_sessions, dataset.n_items, options)
    if json_path is not None:
        with _about("json"):
            Path(json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def predict_file(model: PathLike, data: PathLike, out: PathLike | None = None) -> np.ndarray:
    """Scores every item of ``data`` (in file order) with a trained model: ``pairloss predict``.

    Args:
        model: Checkpoint file or run directory (see :func:`resolve_model_path`).
        data: Data file in any supported format, with the model's feature count (labels are not used).
        out: If given, write one score per line there.

    Returns:
        ``(N,)`` float64 scores.
    """
    _, scorer = _load_scorer(model)
    dataset = _load_file("data", data, scorer.n_features, "the model takes")
    scores = score_items(scorer, dataset.features)
    if out is not None:
        with _about("out"), open(out, "w") as f:
            f.writelines(f"{s:.9g}\n" for s in scores.tolist())
    return scores


def export_model(model: PathLike, out: PathLike, *, opset: int | None = None, verify: bool = True) -> Scorer:
    """Exports a trained scorer to ONNX (see :func:`pairloss.onnx.export_scorer`): ``pairloss export``.

    Returns:
        The scorer that was exported.
    """
    _, scorer = _load_scorer(model)
    export_scorer(scorer, out, opset_version=opset, verify=verify)
    return scorer
