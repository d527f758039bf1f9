"""High-level entry points behind the ``pairloss train`` / ``evaluate`` / ``predict`` commands.

Each command of :mod:`pairloss.cli` parses its options and calls exactly one function here:

* :func:`run_training`: load the data (:func:`load_splits`), train (:func:`pairloss.ltr.train.train`),
  score the test split; optionally data-parallel under ``torchrun``;
* :func:`evaluate_model`: metrics of a trained model on a data file;
* :func:`predict_file`: one score per item of a data file.

They return plain result objects and raise ``ValueError`` / ``FileNotFoundError`` with messages
that name the offending file (and line), which the CLI prints as one line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._toy_data import make_toy_dataset
from .data import RankingDataset, load, load_fold
from .metrics import evaluate

__all__ = [
    "LOSS_ALIASES",
    "REPORT_METRICS",
    "EvalReport",
    "Splits",
    "TrainReport",
    "default_out_dir",
    "evaluate_model",
    "latest_run",
    "load_splits",
    "predict_file",
    "resolve_model_path",
    "run_training",
]

#: Metrics of the final table of ``pairloss train``.
REPORT_METRICS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "map", "mrr")
#: Short loss names of the command line and the :data:`pairloss.ltr.train.LOSSES` key of each.
LOSS_ALIASES = {
    "pairwise": "pairwise_logistic",
    "logistic": "pairwise_logistic",
    "pairwise_logistic": "pairwise_logistic",
    "hinge": "pairwise_hinge",
    "pairwise_hinge": "pairwise_hinge",
    "margin": "margin_ranking",
    "margin_ranking": "margin_ranking",
}
TOY_SOURCE = "built-in synthetic data (make_toy_dataset)"
PathLike = str | os.PathLike[str]


@dataclass
class Splits:
    """Train / validation / test data and where each came from (for messages and metrics.json)."""

    train: RankingDataset
    valid: RankingDataset | None
    test: RankingDataset | None
    sources: dict[str, str] = field(default_factory=dict)


def _load_part(path: PathLike, n_features: int, role: str) -> RankingDataset:
    part = load(path, n_features)
    if isinstance(part, dict):
        name = "test" if role == "test" else "vali"
        if name not in part:
            raise ValueError(f"{path} is a LETOR fold without {name}.txt; pass a file as the {role} data")
        return part[name]
    return part


def load_splits(
    data: PathLike | None = None,
    valid: PathLike | None = None,
    test: PathLike | None = None,
    *,
    valid_fraction: float = 0.1,
    split_seed: int = 0,
) -> Splits:
    """Loads training, validation and test data the way ``pairloss train`` does.

    Args:
        data: Training data: an SVMlight/LETOR file (``qid:`` on every line), a LightGBM file with
            a ``<file>.query`` group file beside it, or a LETOR ``Fold`` directory (``train.txt``,
            and ``vali.txt`` / ``test.txt`` if present). ``None``: the built-in synthetic data set
            (:func:`pairloss.ltr.make_toy_dataset`, which has all three splits).
        valid: Validation file; overrides a fold's ``vali.txt`` or the toy validation split.
        test: Test file; overrides a fold's ``test.txt`` or the toy test split.
        valid_fraction: Without any validation data, hold out this fraction of the training
            sessions (by session, seeded by ``split_seed``); ``0`` trains on everything.
        split_seed: Seed of that hold-out split.

    Returns:
        The :class:`Splits`. Validation and test data are read with the training set's feature
        count: a file with fewer feature columns is zero-padded, one with more is an error.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: If a file is empty or malformed (the message names file and line), or has
            more feature columns than the training data.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1); got {valid_fraction}")
    sources: dict[str, str] = {}
    valid_data: RankingDataset | None = None
    test_data: RankingDataset | None = None
    if data is None:
        train_data, valid_data, test_data = make_toy_dataset()
        sources = {"train": TOY_SOURCE, "valid": TOY_SOURCE, "test": TOY_SOURCE}
    elif Path(data).is_dir():
        fold = load_fold(data)
        train_data = fold["train"]
        sources["train"] = str(Path(data) / "train.txt")
        if "vali" in fold:
            valid_data, sources["valid"] = fold["vali"], str(Path(data) / "vali.txt")
        if "test" in fold:
            test_data, sources["test"] = fold["test"], str(Path(data) / "test.txt")
    else:
        loaded = load(data)
        assert isinstance(loaded, RankingDataset)
        train_data, sources["train"] = loaded, str(data)
    if valid is not None:
        valid_data, sources["valid"] = _load_part(valid, train_data.n_features, "valid"), str(valid)
    if test is not None:
        test_data, sources["test"] = _load_part(test, train_data.n_features, "test"), str(test)
    if valid_data is None and valid_fraction > 0:
        if train_data.n_sessions < 2:
            raise ValueError(
                f"{sources['train']}: cannot hold out validation sessions from a single session; "
                "pass --valid or --valid-fraction 0"
            )
        train_data, valid_data = train_data.split(valid_fraction, seed=split_seed)
        sources["valid"] = f"{valid_fraction:g} of the training sessions (seed {split_seed})"
    return Splits(train_data, valid_data, test_data, sources)


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
        raise FileNotFoundError(f"nothing to resume: no {Path(root) / '*' / 'checkpoint.pt'}; pass --out RUN_DIR")
    return max(runs, key=lambda p: (p / "checkpoint.pt").stat().st_mtime)


@dataclass
class TrainReport:
    """Outcome of :func:`run_training`.

    Attributes:
        result: The :class:`pairloss.ltr.train.TrainResult` (on every rank).
        config: The training configuration.
        splits: The data used.
        out_dir: Run directory.
        eval_split: ``"test"`` (or ``"valid"`` without test data, ``None`` without either).
        eval_metrics: :data:`REPORT_METRICS` of the best model on ``eval_split`` (rank 0 only;
            empty elsewhere).
        is_main: Whether this process is rank 0 (always true without distribution).
        world_size: Number of training processes.
    """

    result: Any
    config: Any
    splits: Splits
    out_dir: Path
    eval_split: str | None
    eval_metrics: dict[str, float]
    is_main: bool = True
    world_size: int = 1


def _score(model: Any, features: np.ndarray) -> np.ndarray:
    from .train import _predict

    device = model.standardizer.mean.device  # every scorer has the standardiser's buffers
    return _predict(model, features, device)


def run_training(
    config: Any,
    data: PathLike | None = None,
    valid: PathLike | None = None,
    test: PathLike | None = None,
    *,
    out_dir: PathLike | None = None,
    valid_fraction: float = 0.1,
    resume: bool = False,
    progress: bool = True,
    distributed: bool = False,
    report_metrics: Sequence[str] = REPORT_METRICS,
    loss_fn: Callable[..., Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainReport:
    """Loads data, trains, and scores the best model on the test split: ``pairloss train``.

    Args:
        config: The :class:`pairloss.ltr.train.TrainConfig`.
        data: Training data (see :func:`load_splits`); ``None``: the built-in synthetic data.
        valid: Validation data (see :func:`load_splits`).
        test: Test data (see :func:`load_splits`).
        out_dir: Run directory; default a new ``runs/<timestamp>`` (with ``resume``: the latest
            run under ``runs/`` that has a checkpoint).
        valid_fraction: Hold-out fraction without validation data (see :func:`load_splits`);
            the split is seeded with ``config.seed``.
        resume: Continue the run in ``out_dir`` from its ``checkpoint.pt``.
        progress: Show a progress bar (rank 0 only).
        distributed: Train data-parallel over the processes started by ``torchrun`` (see
            :mod:`pairloss.ltr.distributed`); outside torchrun this trains in one process.
        report_metrics: Metrics computed on the test split (with ``config.gain`` and
            ``config.exclude_all_equal``); they are added to ``metrics.json`` under ``"test"``.
        loss_fn: Passed to :func:`pairloss.ltr.train.train`.
        on_epoch_end: Passed to :func:`pairloss.ltr.train.train`.

    Returns:
        The :class:`TrainReport`.
    """
    import torch

    from .distributed import current_context, init_from_env, launched_by_torchrun
    from .train import _atomic_write, _json_safe, train

    created_group = False
    if distributed and launched_by_torchrun():
        created_group = init_from_env(config.device)
    try:
        dist = current_context(config.device)
        is_main = dist is None or dist.is_main
        splits = load_splits(data, valid, test, valid_fraction=valid_fraction, split_seed=config.seed)
        out: Path | None = None
        problem: str | None = None
        if is_main:
            try:
                out = Path(out_dir) if out_dir is not None else (latest_run() if resume else default_out_dir())
            except FileNotFoundError as exc:
                problem = str(exc)
        if dist is not None:  # one decision (timestamps differ between processes)
            out, problem = dist.broadcast_object((out, problem))
        if problem is not None:
            raise FileNotFoundError(problem)
        assert out is not None
        result = train(
            config,
            splits.train,
            splits.valid,
            out,
            progress=progress,
            resume=resume,
            loss_fn=loss_fn,
            on_epoch_end=on_epoch_end,
        )
        eval_split = "test" if splits.test is not None else ("valid" if splits.valid is not None else None)
        eval_metrics: dict[str, float] = {}
        if is_main and eval_split is not None:
            part = splits.test if eval_split == "test" else splits.valid
            assert part is not None
            with torch.no_grad():
                scores = _score(result.model, part.features)
            eval_metrics = evaluate(
                scores,
                part.labels,
                part.lengths,
                list(report_metrics),
                gain=config.gain,
                exclude_all_equal=config.exclude_all_equal,
            )
            summary = json.loads(result.metrics_path.read_text())
            summary["data"] = splits.sources
            summary[eval_split if eval_split == "test" else "valid_report"] = eval_metrics
            text = json.dumps(_json_safe(summary), indent=2)
            _atomic_write(result.metrics_path, lambda f: f.write(text.encode()))
        return TrainReport(
            result=result,
            config=config,
            splits=splits,
            out_dir=out,
            eval_split=eval_split,
            eval_metrics=eval_metrics,
            is_main=is_main,
            world_size=1 if dist is None else dist.world_size,
        )
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def resolve_model_path(model: PathLike) -> Path:
    """A checkpoint file, or a run directory (then its ``best.pt``)."""
    path = Path(model)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"model: no such file: {path}")
    return path


def _load_eval_data(data: PathLike, n_features: int) -> RankingDataset:
    part = load(data, n_features)
    if isinstance(part, dict):
        if "test" not in part:
            raise ValueError(f"{data} is a LETOR fold without test.txt; pass a data file")
        return part["test"]
    return part


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
        from .train import _json_safe

        return _json_safe(
            {
                "model": str(self.model_path),
                "data": str(self.data_path),
                "n_sessions": self.n_sessions,
                "n_items": self.n_items,
                "options": self.options,
                "metrics": self.metrics,
            }
        )


def evaluate_model(
    model: PathLike,
    data: PathLike,
    metrics: Sequence[str] = ("ndcg@10", "map", "mrr"),
    *,
    gain: str = "exp2",
    exclude_all_equal: bool = True,
    no_relevant: str = "skip",
    ties: str = "pessimistic",
    relevance_threshold: float = 1.0,
    json_path: PathLike | None = None,
) -> EvalReport:
    """Scores ``data`` with a trained model and computes ranking metrics: ``pairloss evaluate``.

    Args:
        model: ``best.pt`` / ``checkpoint.pt`` written by training, or a run directory.
        data: Data file (SVMlight/LETOR or LightGBM with ``.query``), or a fold (its ``test.txt``).
        metrics: Metric names, e.g. ``"ndcg@10"``, ``"map"``, ``"mrr@5"``, ``"pairwise_accuracy"``.
        gain: NDCG gain, ``"exp2"`` or ``"linear"``.
        exclude_all_equal: Leave sessions whose labels are all equal out of the means.
        no_relevant: Rule for sessions without a relevant item (see :mod:`pairloss.ltr.metrics`).
        ties: Tie-breaking rule for equal scores.
        relevance_threshold: Smallest relevant label for MAP and MRR.
        json_path: Also write the report there as JSON.

    Returns:
        The :class:`EvalReport`.
    """
    from .train import load_model

    model_path = resolve_model_path(model)
    scorer = load_model(model_path)
    dataset = _load_eval_data(data, scorer.n_features)
    scores = _score(scorer, dataset.features)
    values = evaluate(
        scores,
        dataset.labels,
        dataset.lengths,
        list(metrics),
        gain=gain,  # type: ignore[arg-type]
        exclude_all_equal=exclude_all_equal,
        no_relevant=no_relevant,  # type: ignore[arg-type]
        ties=ties,  # type: ignore[arg-type]
        relevance_threshold=relevance_threshold,
    )
    options = {
        "gain": gain,
        "exclude_all_equal": exclude_all_equal,
        "no_relevant": no_relevant,
        "ties": ties,
        "relevance_threshold": relevance_threshold,
    }
    report = EvalReport(values, model_path, Path(data), dataset.n_sessions, dataset.n_items, options)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def predict_file(model: PathLike, data: PathLike, out: PathLike | None = None) -> np.ndarray:
    """Scores every item of ``data`` with a trained model: ``pairloss predict``.

    Args:
        model: Checkpoint file or run directory (see :func:`evaluate_model`).
        data: Data file in any supported format (labels are read but not used).
        out: If given, write one score per line (in the file's item order) there.

    Returns:
        ``(N,)`` float64 scores.
    """
    from .train import load_model

    scorer = load_model(resolve_model_path(model))
    dataset = _load_eval_data(data, scorer.n_features)
    scores = _score(scorer, dataset.features)
    if out is not None:
        with open(out, "w") as f:
            f.writelines(f"{s:.9g}\n" for s in scores.tolist())
    return scores
