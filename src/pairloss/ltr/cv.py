"""``pairloss cv``: k-fold cross-validation over LETOR folds, one process per fold.

A data directory holds either fold directories ``Fold1 .. FoldK`` (each with ``train.txt`` / ``vali.txt`` /
``test.txt``, see :func:`pairloss.ltr.data.fold_files`) or partition files ``S1.txt .. SK.txt`` (K >= 3),
rotated as LETOR rotates its five partitions: fold ``i`` trains on ``S_i .. S_{i+K-3}``, validates on
``S_{i+K-2}`` and tests on ``S_{i+K-1}`` (indices modulo K), so with K = 5::

    Fold1: train S1,S2,S3  vali S4  test S5        Fold4: train S4,S5,S1  vali S2  test S3
    Fold2: train S2,S3,S4  vali S5  test S1        Fold5: train S5,S1,S2  vali S3  test S4
    Fold3: train S3,S4,S5  vali S1  test S2

Each fold trains with early stopping on its vali split (:func:`pairloss.ltr.train`, run directory
``out/<fold>``) and scores its best model on vali and test (:data:`~pairloss.ltr.api.REPORT_METRICS`);
:func:`cross_validate` reports the per-fold values and, per metric, the mean over folds and its standard
error (sample standard deviation / sqrt(K)), and writes ``out/cv.json``. Compare settings by the *vali*
means: choosing by the test means would make them optimistic.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .api import REPORT_METRICS, InputError
from .callbacks import TestMetrics
from .checkpoint import write_json
from .config import TrainConfig
from .data import RankingDataset, concatenate, fold_files, load
from .training import train

__all__ = ["CVReport", "FoldResult", "FoldSpec", "cross_validate", "default_jobs", "find_folds", "fold_names",
           "load_fold_splits", "run_fold"]

PathLike = str | os.PathLike[str]
#: ``(fold name, epoch, epochs, validation eval_metric or None)`` after every epoch of a fold.
ProgressHook = Callable[[str, int, int, float | None], None]

_FOLD_DIR = re.compile(r"^Fold(\d+)$")
_PARTITION = re.compile(r"^S(\d+)\.txt(?:\.gz|\.bz2)?$")


@dataclass(frozen=True)
class FoldSpec:
    """One fold: its name and the files of its three splits (the training split may be several files)."""

    name: str
    train: tuple[Path, ...]
    vali: Path
    test: Path


def _numbered(directory: Path, pattern: re.Pattern[str], is_dir: bool) -> dict[int, Path]:
    found = {}
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match and (path.is_dir() if is_dir else path.is_file()):
            found[int(match.group(1))] = path
    return found


def _check_consecutive(numbers: Sequence[int], what: str, directory: Path) -> None:
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{directory}: {what} must be numbered 1..K without gaps; found {sorted(numbers)}")


def find_folds(directory: PathLike) -> list[FoldSpec]:
    """The folds of a cross-validation data directory (see the module docstring).

    Raises:
        FileNotFoundError: ``directory`` does not exist, or a fold directory lacks one of its files.
        ValueError: It holds neither ``Fold1..FoldK`` nor ``S1..SK`` (K >= 3), or they are not numbered 1..K.
    """
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"directory must be a str or os.PathLike; got {type(directory).__name__}")
    d = Path(os.fspath(directory))
    if not d.is_dir():
        raise FileNotFoundError(f"no such directory: {d}")
    fold_dirs = _numbered(d, _FOLD_DIR, is_dir=True)
    if fold_dirs:
        _check_consecutive(list(fold_dirs), "fold directories Fold<i>", d)
        specs = []
        for i in sorted(fold_dirs):
            files = fold_files(fold_dirs[i])
            missing = [name for name in ("vali", "test") if name not in files]
            if missing:
                raise FileNotFoundError(f"{fold_dirs[i]} lacks its {' and '.join(missing)} file: cross-validation "
                                        "needs train, vali and test in every fold")
            specs.append(FoldSpec(f"Fold{i}", (files["train"],), files["vali"], files["test"]))
        return specs
    parts = _numbered(d, _PARTITION, is_dir=False)
    if len(parts) < 3:
        present = sorted(p.name for p in d.iterdir())[:20]
        raise ValueError(f"{d} holds neither fold directories Fold1..FoldK nor partitions S1.txt..SK.txt (K >= 3); "
                         f"found {present}")
    _check_consecutive(list(parts), "partitions S<i>.txt", d)
    k = len(parts)
    return [FoldSpec(f"Fold{i + 1}", tuple(parts[(i + j) % k + 1] for j in range(k - 2)), parts[(i + k - 2) % k + 1],
                     parts[(i + k - 1) % k + 1]) for i in range(k)]


def _load_part(path: Path, n_features: int | None, role: str) -> RankingDataset:
    part = load(path, n_features)
    if not isinstance(part, RankingDataset):  # pragma: no cover - find_folds hands out files only
        raise ValueError(f"{path} is a directory, not the {role} file of a fold")
    return part


def load_fold_splits(spec: FoldSpec) -> tuple[RankingDataset, RankingDataset, RankingDataset]:
    """``(train, vali, test)`` of a fold, all with the first training file's feature count."""
    first = _load_part(spec.train[0], None, "train")
    width = first.n_features
    train_data = concatenate([first, *(_load_part(p, width, "train") for p in spec.train[1:])])
    return train_data, _load_part(spec.vali, width, "vali"), _load_part(spec.test, width, "test")


@dataclass
class FoldResult:
    """Outcome of one fold: its best epoch, and REPORT_METRICS of the best model on vali and on test."""

    name: str
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    sources: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return {"name": self.name, "best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "valid": self.valid,
                "test": self.test, "seconds": self.seconds, "sources": self.sources}


def run_fold(config: TrainConfig, spec: FoldSpec, out_dir: PathLike, progress: ProgressHook | None = None
             ) -> FoldResult:
    """Trains fold ``spec`` with early stopping on its vali split; scores the best model on vali and test.

    The run directory is ``out_dir/<fold name>``.
    """
    started = time.perf_counter()
    train_data, vali, test = load_fold_splits(spec)
    sources = {"train": [str(p) for p in spec.train], "vali": str(spec.vali), "test": str(spec.test)}

    def hook(epoch: int, record: dict[str, Any]) -> None:
        if progress is not None:
            progress(spec.name, epoch, config.epochs, record["valid"].get(config.eval_metric))

    result = train(config, train_data, vali, Path(out_dir) / spec.name, progress=False, on_epoch_end=hook,
                   callbacks=[TestMetrics(vali, REPORT_METRICS, "valid_report"), TestMetrics(test, REPORT_METRICS)],
                   summary={"data": sources})
    return FoldResult(spec.name, result.best_epoch, result.epochs_run, result.extras["valid_report"],
                      result.extras["test"], time.perf_counter() - started, sources)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def default_jobs(n_folds: int) -> int:
    """Parallel fold processes by default: ``min(n_folds, cores)``."""
    return max(1, min(n_folds, _available_cores()))


def _init_worker(threads: int) -> None:
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _queue_progress(sink: Any) -> ProgressHook:
    return lambda name, epoch, epochs, value: sink.put((name, epoch, epochs, value))


def _run_fold_in_worker(config: TrainConfig, spec: FoldSpec, out_dir: str, sink: Any) -> FoldResult:
    return run_fold(config, spec, out_dir, _queue_progress(sink))


def _run_parallel(config: TrainConfig, specs: list[FoldSpec], out: Path, jobs: int,
                  progress: ProgressHook | None) -> list[FoldResult]:
    # spawn, not fork: a forked child inherits torch's and Numba's thread pools in an undefined state.
    context = multiprocessing.get_context("spawn")
    threads = max(1, _available_cores() // jobs)
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                                           initargs=(threads,)) as pool:
        sink = manager.Queue()
        futures: list[Future[FoldResult]] = [pool.submit(_run_fold_in_worker, config, s, str(out), sink)
                                             for s in specs]
        while not all(f.done() for f in futures):
            try:
                message = sink.get(timeout=0.2)
            except queue.Empty:
                continue
            if progress is not None:
                progress(*message)
        return [f.result() for f in futures]


def _mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


@dataclass
class CVReport:
    """Outcome of :func:`cross_validate`.

    Attributes:
        folds: One :class:`FoldResult` per fold, in fold order.
        mean: ``{"valid": {metric: mean}, "test": {...}}`` over folds.
        stderr: The standard errors of those means (sample standard deviation / sqrt(folds)).
        config: The training configuration.
        data: The data directory.
        out_dir: Where the fold runs and ``cv.json`` are.
        jobs: Parallel fold processes used.
    """

    folds: list[FoldResult]
    mean: dict[str, dict[str, float]]
    stderr: dict[str, dict[str, float]]
    config: TrainConfig
    data: Path
    out_dir: Path
    jobs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (what ``cv.json`` holds)."""
        return {"data": str(self.data), "jobs": self.jobs, "config": self.config.to_dict(),
                "metrics": list(REPORT_METRICS), "mean": self.mean, "stderr": self.stderr,
                "folds": [f.to_dict() for f in self.folds]}


def _summarise(folds: list[FoldResult]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    mean: dict[str, dict[str, float]] = {"valid": {}, "test": {}}
    stderr: dict[str, dict[str, float]] = {"valid": {}, "test": {}}
    for split in ("valid", "test"):
        for metric in REPORT_METRICS:
            mean[split][metric], stderr[split][metric] = _mean_and_stderr(
                [getattr(f, split).get(metric, math.nan) for f in folds])
    return mean, stderr


def _selected(data: PathLike, folds: Sequence[str] | None) -> list[FoldSpec]:
    try:
        specs = find_folds(data)
    except (OSError, ValueError) as exc:
        raise InputError("directory", str(exc)) from exc
    if folds is None:
        return specs
    unknown = sorted(set(folds) - {s.name for s in specs})
    if unknown:
        raise InputError("folds", f"unknown folds {unknown}; {data} has {', '.join(s.name for s in specs)}")
    return [s for s in specs if s.name in set(folds)]


def fold_names(data: PathLike, folds: Sequence[str] | None = None) -> list[str]:
    """Names of the folds :func:`cross_validate` would run (``folds``, checked, or all of ``data``'s)."""
    return [s.name for s in _selected(data, folds)]


def cross_validate(config: TrainConfig, data: PathLike, out_dir: PathLike, *, jobs: int | None = None,
                   folds: Sequence[str] | None = None, progress: ProgressHook | None = None) -> CVReport:
    """Runs every fold of ``data`` (see the module docstring) and writes ``out_dir/cv.json``: ``pairloss cv``.

    Args:
        config: The training configuration of every fold.
        data: Directory with ``Fold1..FoldK`` or ``S1.txt..SK.txt``.
        out_dir: Directory of the fold runs (``out_dir/Fold<i>``) and of ``cv.json``.
        jobs: Folds trained at once, each in its own process (1: in this process); default
            :func:`default_jobs`. The cores are shared out between them.
        folds: Only these folds (names such as ``"Fold1"``); default all.
        progress: Called after each epoch of each fold (see :data:`ProgressHook`).

    Raises:
        InputError: ``data`` is not a cross-validation directory or a file in it cannot be read (source
            ``"directory"``), or ``jobs`` / ``folds`` are unusable.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    specs = _selected(data, folds)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise InputError("jobs", f"jobs must be a positive int; got {jobs!r}")
    n_jobs = min(default_jobs(len(specs)) if jobs is None else jobs, len(specs))
    out = Path(os.fspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    try:
        if n_jobs == 1:
            results = [run_fold(config, spec, out, progress) for spec in specs]
        else:
            results = _run_parallel(config, specs, out, n_jobs, progress)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("directory", str(exc)) from exc
    mean, stderr = _summarise(results)
    report = CVReport(results, mean, stderr, config, Path(os.fspath(data)), out, n_jobs)
    write_json(out / "cv.json", report.to_dict())
    return report
