"""Ranking data sets (sessions of items with graded labels) and LETOR / LightGBM file loaders.

A *session* (a query in LETOR terms) is a contiguous block of items that are ranked against each
other; pairs are only ever formed inside one session. :class:`RankingDataset` stores all items of all
sessions in one dense matrix plus the session sizes, which is the layout every pairwise loss and
metric in this package consumes directly (no padding, no per-session Python objects).

File formats:

* **SVMlight / LETOR** (:func:`load_svmlight`): ``<label> qid:<int> <index>:<value> ... [# comment]``.
* **LightGBM ranking** (:func:`load_lightgbm`): the same lines without ``qid:``, plus a
  ``<file>.query`` side file holding one session size per line.
* :func:`load` picks one of the two per file, or reads a LETOR ``Fold`` directory
  (``train.txt`` / ``vali.txt`` / ``test.txt``) through :func:`load_fold`.

Feature indices are **zero-based by default** (index ``i`` is column ``i``, as in LightGBM). That
makes the column mapping a property of the format rather than of the file's content: scikit-learn's
``"auto"`` mode shifts columns by one when a file happens not to use index 0, which silently
misaligns a test file whose sparse rows never mention feature 0 with a training file that does.
One-based LETOR files therefore get an unused column 0; pass ``zero_based=False`` to drop it.

**Missing values.** A feature written as ``NULL`` (LETOR 4.0's rank-aggregation sets) or ``nan``, and a
feature a line does not mention, loads as ``NaN``: *missing*, not zero (``absent="zero"`` reads absent
features as 0, LightGBM's default). The scorers of :mod:`pairloss.ltr.models` fill missing values and can
add missing-indicator features, both fitted on the training data. Infinite values are still an error.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Literal

import numpy as np
import numpy.typing as npt

from .batching import plan_batches

__all__ = [
    "RankingDataset",
    "concatenate",
    "fold_files",
    "load",
    "load_fold",
    "load_lightgbm",
    "load_svmlight",
]

PathLike = str | os.PathLike[str]
ZeroBased = bool | Literal["auto"]
Absent = Literal["missing", "zero"]

# sklearn's parser stores feature indices in a C int; larger indices overflow instead of failing cleanly.
_MAX_FEATURE_INDEX = 2**31 - 1
_FOLD_FILES = ("train", "vali", "test")
# LETOR 4.0 writes a missing value as the literal NULL; sklearn's parser reads nan, not NULL.
_NULL_VALUE = re.compile(rb":(?:NULL|null)(?=\s|$)")
_MISSING_TOKENS = (b"NULL", b"null")


def _py(value: object) -> object:
    """Plain Python scalar for messages (numpy 2 reprs scalars as ``np.int64(7)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not _is_int(value):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r}")
    if int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be >= 1; got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _numeric_array(name: str, value: object, dtype: npt.DTypeLike, ndim: int) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensors, without importing torch
        value = value.detach().cpu().numpy()  # type: ignore[attr-defined]
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array; got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


@dataclass(frozen=True, eq=False, repr=False)
class RankingDataset:
    """Items of many sessions, stored session after session.

    Attributes:
        features: ``(N, F)`` float32 feature matrix, one row per item.
        labels: ``(N,)`` float32 graded relevance labels (higher is more relevant).
        qids: ``(N,)`` query / session identifier of each item; constant inside a session.
        lengths: ``(S,)`` int64 session sizes in storage order; ``lengths.sum() == N`` and every
            session has at least one item.

    Arrays are converted on construction (float32 / int64, C-contiguous) and validated: shapes must
    agree, labels must be finite, features finite or ``NaN`` (a missing value), and ``qids`` must not
    change inside a session. The class is frozen
    so that cached derived arrays (:attr:`session_offsets`, :attr:`session_ids`) stay valid; do not
    mutate the arrays in place.
    """

    features: np.ndarray
    labels: np.ndarray
    qids: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        features = _numeric_array("features", self.features, np.float32, 2)
        n_items = features.shape[0]
        labels = _numeric_array("labels", self.labels, np.float32, 1)
        if labels.shape[0] != n_items:
            raise ValueError(
                f"labels must have one entry per item (features has {n_items} rows); got {labels.shape[0]}"
            )
        qids = np.asarray(self.qids)
        if qids.ndim != 1 or qids.shape[0] != n_items:
            raise ValueError(f"qids must be a 1-D array of length {n_items}; got shape {qids.shape}")
        if hasattr(self.lengths, "detach"):
            lengths_in = np.asarray(self.lengths.detach().cpu().numpy())  # type: ignore[attr-defined]
        else:
            lengths_in = np.asarray(self.lengths)
        if lengths_in.ndim != 1:
            raise ValueError(f"lengths must be a 1-D array of session sizes; got shape {lengths_in.shape}")
        if lengths_in.size and lengths_in.dtype.kind not in "iu":
            raise TypeError(f"lengths must hold integers; got dtype {lengths_in.dtype}")
        # Each size is checked against [1, N] in its own dtype before any cast or sum: a sum in int64
        # can wrap around (four sessions of 2**62 items "sum" to 0) and pass a total check.
        if lengths_in.size and lengths_in.min() < 1:
            bad = int(np.flatnonzero(lengths_in < 1)[0])
            raise ValueError(
                f"lengths must be >= 1 (empty sessions are not stored); session {bad} has {_py(lengths_in[bad])}"
            )
        if lengths_in.size and lengths_in.max() > n_items:
            bad = int(np.flatnonzero(lengths_in > n_items)[0])
            raise ValueError(f"lengths must sum to the number of items {n_items}; session {bad} alone has "
                             f"{_py(lengths_in[bad])}")
        lengths = np.ascontiguousarray(lengths_in, dtype=np.int64)
        total = sum(lengths.tolist())
        if total != n_items:
            raise ValueError(f"lengths must sum to the number of items {n_items}; they sum to {total}")
        if np.isinf(features).any():
            row = int(np.flatnonzero(np.isinf(features).any(axis=1))[0])
            raise ValueError(f"features must be finite or NaN (missing); row {row} contains inf")
        if not np.isfinite(labels).all():
            row = int(np.flatnonzero(~np.isfinite(labels))[0])
            raise ValueError(f"labels must be finite; item {row} is {labels[row]}")
        if n_items > 1:
            changes = qids[1:] != qids[:-1]
            allowed = np.zeros(n_items - 1, dtype=bool)
            allowed[np.cumsum(lengths)[:-1] - 1] = True
            bad_pos = np.flatnonzero(changes & ~allowed)
            if bad_pos.size:
                item = int(bad_pos[0]) + 1
                session = int(np.searchsorted(np.cumsum(lengths), item, side="right"))
                raise ValueError(
                    f"qids must be constant inside a session; session {session} changes qid from "
                    f"{_py(qids[item - 1])!r} to {_py(qids[item])!r} at item {item}"
                )
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "qids", qids)
        object.__setattr__(self, "lengths", lengths)

    @classmethod
    def _trusted(
        cls, features: np.ndarray, labels: np.ndarray, qids: np.ndarray, lengths: np.ndarray
    ) -> RankingDataset:
        # Slices of an already validated data set: re-validating every batch would cost a full
        # isfinite pass over the features per step for no new information.
        obj = object.__new__(cls)
        object.__setattr__(obj, "features", features)
        object.__setattr__(obj, "labels", labels)
        object.__setattr__(obj, "qids", qids)
        object.__setattr__(obj, "lengths", lengths)
        return obj

    @classmethod
    def from_qids(cls, features: npt.ArrayLike, labels: npt.ArrayLike, qids: npt.ArrayLike) -> RankingDataset:
        """Builds a data set whose sessions are the runs of equal consecutive ``qids``.

        Args:
            features: ``(N, F)`` feature matrix.
            labels: ``(N,)`` relevance labels.
            qids: ``(N,)`` session identifiers; items of one session must be contiguous.

        Returns:
            The data set.

        Raises:
            ValueError: If a qid occurs in two separate runs (its session would be split).
        """
        q = np.asarray(qids)
        if q.ndim != 1:
            raise ValueError(f"qids must be a 1-D array; got shape {q.shape}")
        starts, lengths = _runs(q)
        _check_runs_unique(q, starts, where="qids")
        return cls(features, labels, q, lengths)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"RankingDataset(n_items={self.n_items}, n_sessions={self.n_sessions}, n_features={self.n_features})"

    @property
    def n_items(self) -> int:
        """Number of items (rows) over all sessions."""
        return int(self.features.shape[0])

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return int(self.lengths.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.features.shape[1])

    @cached_property
    def session_offsets(self) -> np.ndarray:
        """``(S + 1,)`` int64 prefix sums of :attr:`lengths`; session ``s`` is rows ``[o[s], o[s+1])``."""
        offsets = np.zeros(self.n_sessions + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        offsets.flags.writeable = False
        return offsets

    @cached_property
    def session_ids(self) -> np.ndarray:
        """``(N,)`` int64 index of the session each item belongs to."""
        ids = np.repeat(np.arange(self.n_sessions, dtype=np.int64), self.lengths)
        ids.flags.writeable = False
        return ids

    def subset(self, session_indices: npt.ArrayLike) -> RankingDataset:
        """Selects whole sessions.

        Args:
            session_indices: Session indices in ``[0, n_sessions)`` (kept in the given order,
                repeats allowed) or a boolean mask of length ``n_sessions``.

        Returns:
            A new data set holding copies of the selected sessions' rows.
        """
        idx = np.asarray(session_indices)
        if idx.dtype == bool:
            if idx.shape != (self.n_sessions,):
                raise ValueError(
                    f"session_indices as a boolean mask must have shape ({self.n_sessions},); got {idx.shape}"
                )
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif idx.dtype.kind not in "iu":
            raise TypeError(f"session_indices must be integers or a boolean mask; got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_sessions):
            bad = idx[(idx < 0) | (idx >= self.n_sessions)][0]
            raise ValueError(f"session_indices must lie in [0, {self.n_sessions}); got {int(bad)}")
        return self._take_sessions(idx)

    def _take_sessions(self, idx: np.ndarray) -> RankingDataset:
        lengths = self.lengths[idx]
        starts = self.session_offsets[idx]
        total = int(lengths.sum())
        # Row index of every selected item without a Python loop: each session's rows are
        # start + 0..len-1, i.e. a global arange shifted by (start - position of the session's first row).
        first_pos = np.cumsum(lengths) - lengths
        rows = np.arange(total, dtype=np.int64) + np.repeat(starts - first_pos, lengths)
        return RankingDataset._trusted(
            self.features[rows], self.labels[rows], self.qids[rows], np.ascontiguousarray(lengths)
        )

    def split(self, valid_fraction: float, seed: int | None = 0) -> tuple[RankingDataset, RankingDataset]:
        """Splits by whole sessions into a training and a validation part.

        Args:
            valid_fraction: Fraction of sessions, in ``(0, 1)``, that go to the validation part. The
                count is rounded and clamped so both parts keep at least one session.
            seed: Seed of the session shuffle; ``None`` draws fresh OS entropy.

        Returns:
            ``(train, valid)``; each keeps the original session order.
        """
        if not isinstance(valid_fraction, float | int) or isinstance(valid_fraction, bool):
            raise TypeError(f"valid_fraction must be a float in (0, 1); got {valid_fraction!r}")
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1); got {valid_fraction!r}")
        if self.n_sessions < 2:
            raise ValueError(f"split needs at least 2 sessions; this data set has {self.n_sessions}")
        n_valid = min(max(round(valid_fraction * self.n_sessions), 1), self.n_sessions - 1)
        perm = np.random.default_rng(seed).permutation(self.n_sessions)
        valid_idx = np.sort(perm[:n_valid])
        train_idx = np.sort(perm[n_valid:])
        return self._take_sessions(train_idx), self._take_sessions(valid_idx)

    def iter_batches(
        self,
        *,
        max_items: int | None = None,
        sessions_per_batch: int | None = None,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> Iterator[RankingDataset]:
        """Yields batches made of whole sessions (a session is never split across batches).

        Exactly one of ``max_items`` and ``sessions_per_batch`` must be given.

        Args:
            max_items: Greedily packs consecutive sessions while the batch holds at most this many
                items. A single session larger than ``max_items`` becomes a batch of its own rather
                than being cut, because cutting it would change which pairs exist.
            sessions_per_batch: Fixed number of sessions per batch (the last may be smaller).
            shuffle: Visit sessions in a random order.
            seed: Seed of the shuffle (ignored without ``shuffle``); ``None`` draws fresh entropy.

        Yields:
            One :class:`RankingDataset` per batch.
        """
        plan = plan_batches(self.lengths, max_items=max_items, sessions_per_batch=sessions_per_batch,
                            shuffle=shuffle, seed=seed)
        for idx in plan:
            yield self._take_sessions(idx)

    def shard(self, rank: int, world_size: int, *, drop_remainder: bool = False) -> RankingDataset:
        """Sessions of one worker for data-parallel training (``torch.distributed`` style).

        Sessions are dealt round-robin (session ``s`` goes to rank ``s % world_size``) so shards are
        balanced in session count whatever the session order.

        Args:
            rank: This worker's rank in ``[0, world_size)``.
            world_size: Number of workers.
            drop_remainder: Drop the last ``n_sessions % world_size`` sessions so that every rank has
                exactly the same number of sessions (and hence of fixed-size batches); collective ops
                hang when ranks run a different number of steps.

        Returns:
            This rank's shard (possibly empty when there are fewer sessions than workers).
        """
        world_size_i = _check_positive_int("world_size", world_size)
        assert world_size_i is not None
        if not _is_int(rank):
            raise TypeError(f"rank must be an int; got {type(rank).__name__} {rank!r}")
        if not 0 <= int(rank) < world_size_i:
            raise ValueError(f"rank must be in [0, world_size={world_size_i}); got {rank}")
        n = self.n_sessions - (self.n_sessions % world_size_i if drop_remainder else 0)
        return self._take_sessions(np.arange(int(rank), n, world_size_i, dtype=np.int64))


def concatenate(parts: Sequence[RankingDataset]) -> RankingDataset:
    """The sessions of ``parts``, one data set after the other (e.g. LETOR partitions S1, S2, S3).

    Raises:
        ValueError: If ``parts`` is empty or the parts have different feature counts.
    """
    if not parts or not all(isinstance(p, RankingDataset) for p in parts):
        raise ValueError(f"parts must be a non-empty sequence of RankingDataset; got {parts!r}")
    widths = sorted({p.n_features for p in parts})
    if len(widths) > 1:
        raise ValueError(f"parts must have one feature count; got {widths}")
    return RankingDataset._trusted(
        np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts]),
        np.concatenate([p.qids for p in parts]), np.concatenate([p.lengths for p in parts]),
    )


# --------------------------------------------------------------------------------------------------
# File loading


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal consecutive values."""
    n = values.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]).astype(np.int64)
    lengths = np.diff(np.r_[starts, n]).astype(np.int64)
    return starts, lengths


def _first_repeated_run(values: np.ndarray, starts: np.ndarray) -> tuple[int, int] | None:
    """Rows where the first qid seen in two separate runs starts its first and second run."""
    run_values = values[starts]
    if np.unique(run_values).size == run_values.size:
        return None
    seen: dict[object, int] = {}
    for start, value in zip(starts.tolist(), run_values.tolist(), strict=True):
        if value in seen:
            return seen[value], start
        seen[value] = start
    raise AssertionError("unreachable: np.unique found a repeat")  # pragma: no cover


def _check_runs_unique(values: np.ndarray, starts: np.ndarray, *, where: str) -> None:
    hit = _first_repeated_run(values, starts)
    if hit is not None:
        first, second = hit
        raise ValueError(
            f"{where}: qid {_py(values[first])!r} appears in two separate blocks (items {first} and {second}); "
            "the items of a session must be contiguous"
        )


def _open_binary(path: Path) -> IO[bytes]:
    # Same compression rule as sklearn's loader, so line numbers we report refer to the same text.
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def _data_lines(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(1-based line number, whitespace tokens) of every line that holds a data row."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            hash_pos = raw.find(b"#")
            line = raw if hash_pos < 0 else raw[:hash_pos]
            parts = line.split()
            if parts:
                yield lineno, parts


def _line_of_row(path: Path, row: int) -> int:
    for i, (lineno, _) in enumerate(_data_lines(path)):
        if i == row:
            return lineno
    raise AssertionError(f"row {row} not found in {path}")  # pragma: no cover


def _show(token: bytes) -> str:
    return repr(token.decode("utf-8", "replace"))


def _line_problem(parts: list[bytes], zero_based: ZeroBased) -> str | None:
    """Why sklearn's SVMlight parser rejects this line, mirroring its grammar; None if it is fine."""
    try:
        float(parts[0])
    except ValueError:
        return f"label {_show(parts[0])} is not a number"
    tokens = parts[1:]
    if tokens and tokens[0].startswith(b"qid"):
        pieces = tokens[0].split(b":", 1)
        try:
            if len(pieces) != 2:
                raise ValueError
            int(pieces[1])
        except ValueError:
            return f"malformed query id {_show(tokens[0])}; expected 'qid:<integer>'"
        tokens = tokens[1:]
    prev = -1
    for token in tokens:
        pieces = token.split(b":", 1)
        if len(pieces) != 2:
            return f"malformed feature {_show(token)}; expected '<index>:<value>'"
        try:
            idx = int(pieces[0])
        except ValueError:
            return f"feature index in {_show(token)} is not an integer"
        if idx < 0 or (zero_based is False and idx == 0):
            lowest = 1 if zero_based is False else 0
            return f"feature index {idx} in {_show(token)} is out of range (indices start at {lowest})"
        if idx > _MAX_FEATURE_INDEX:
            return f"feature index {idx} is too large (max {_MAX_FEATURE_INDEX})"
        if idx <= prev:
            return f"feature indices must be strictly increasing; {idx} follows {prev}"
        try:
            if pieces[1] not in _MISSING_TOKENS:
                float(pieces[1])
        except ValueError:
            return f"feature value in {_show(token)} is not a number"
        prev = idx
    return None


def _sklearn_load(path: Path, zero_based: ZeroBased) -> tuple[object, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    try:
        with _open_binary(path) as f:
            raw = f.read()
        if b"NULL" in raw or b"null" in raw:
            raw = _NULL_VALUE.sub(b":nan", raw)
        X, y, qid = load_svmlight_file(io.BytesIO(raw), dtype=np.float32, zero_based=zero_based, query_id=True)
    except (EOFError, OSError, zlib.error) as exc:
        # gzip/bz2 streams that end early or are not compressed at all; click would print "Aborted!".
        raise ValueError(f"{path}: the compressed file is truncated or damaged ({exc})") from None
    except (ValueError, OverflowError) as exc:
        # sklearn reports what is wrong but not where; re-scan (only on this failure path, so the
        # fast C parser stays the normal path) to name the offending line.
        for lineno, parts in _data_lines(path):
            problem = _line_problem(parts, zero_based)
            if problem is not None:
                raise ValueError(f"{path}, line {lineno}: {problem}") from exc
        raise ValueError(f"{path}: could not parse as SVMlight/LETOR data: {exc}") from exc
    return X, np.asarray(y), np.asarray(qid)


#: Largest dense feature matrix a loader builds (bytes). Features are stored densely, so one stray huge
#: feature index would otherwise ask for rows x index x 4 bytes.
MAX_DENSE_BYTES = 4 * 2**30


def _to_dense(X: object, path: Path, n_features: int | None, absent: Absent) -> np.ndarray:
    n_rows, n_cols = X.shape  # type: ignore[attr-defined]
    if n_features is not None and n_cols != n_features:
        raise ValueError(
            f"{path} has {n_cols} feature columns (feature indices 0..{n_cols - 1}) but {n_features} were expected; "
            "files are neither padded nor cut"
        )
    needed = n_rows * n_cols * 4
    if needed > MAX_DENSE_BYTES:
        row = int(np.searchsorted(X.indptr, int(np.argmax(X.indices)), side="right")) - 1  # type: ignore[attr-defined]
        raise ValueError(
            f"{path}, line {_line_of_row(path, row)}: feature index {n_cols - 1} would make a dense "
            f"{n_rows} x {n_cols} float32 feature matrix of {needed / 2**30:.1f} GiB, over the loader's limit of "
            f"{MAX_DENSE_BYTES / 2**30:.0f} GiB; renumber the features densely"
        )
    if absent == "zero":
        return X.toarray()  # type: ignore[attr-defined,no-any-return]
    # Every feature a line mentions is a stored entry (explicit zeros included), so what is not stored
    # was absent from the line: missing.
    dense = np.full((n_rows, n_cols), np.nan, dtype=np.float32)
    indptr = X.indptr  # type: ignore[attr-defined]
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    dense[rows, X.indices] = X.data  # type: ignore[attr-defined]
    return dense


def _check_finite(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    bad_labels = ~np.isfinite(labels)
    if bad_labels.any():
        row = int(np.flatnonzero(bad_labels)[0])
        raise ValueError(f"{path}, line {_line_of_row(path, row)}: label is NaN or infinite")
    bad_rows = np.isinf(features).any(axis=1)
    if bad_rows.any():
        row = int(np.flatnonzero(bad_rows)[0])
        raise ValueError(f"{path}, line {_line_of_row(path, row)}: a feature value is infinite (a missing value is "
                         "written NULL or nan, or left out)")


def _as_path(name: str, value: object) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike; got {type(value).__name__}")
    return Path(os.fspath(value))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")


def _check_absent(absent: object) -> Absent:
    if absent in ("missing", "zero"):
        return absent  # type: ignore[return-value]
    raise ValueError(f"absent must be 'missing' or 'zero'; got {absent!r}")


def _check_zero_based(zero_based: object) -> ZeroBased:
    if zero_based is True or zero_based is False or zero_based == "auto":
        return zero_based  # type: ignore[return-value]
    raise ValueError(f"zero_based must be True, False or 'auto'; got {zero_based!r}")


def load_svmlight(
    path: PathLike,
    n_features: int | None = None,
    *,
    zero_based: ZeroBased = True,
    noncontiguous_qids: Literal["error", "group"] = "error",
    absent: Absent = "missing",
) -> RankingDataset:
    """Loads an SVMlight / LETOR ranking file with a ``qid:`` on every line.

    Sessions are the runs of equal consecutive qids. Parsing is done by
    :func:`sklearn.datasets.load_svmlight_file` (``.gz`` / ``.bz2`` are decompressed).

    Args:
        path: The file.
        n_features: The number of feature columns the file must have (highest feature index + 1),
            typically the training set's or the model's when loading a test set; a file with fewer
            or more raises ``ValueError`` (no zero padding). ``None`` uses the file's own count.
        zero_based: Whether index ``i`` means column ``i`` (``True``, default, see module doc),
            column ``i - 1`` (``False``, index 0 is then an error) or sklearn's guess (``"auto"``).
        noncontiguous_qids: What to do when a qid occurs in two separate blocks of lines:
            ``"error"`` (default; such files usually come from a bad concatenation or sort), or
            ``"group"`` to move all items of a qid to where it first appears (stable otherwise).
        absent: A feature a line leaves out is ``"missing"`` (``NaN``, default, like ``NULL`` and ``nan``)
            or ``"zero"`` (SVMlight's sparse reading).

    Returns:
        The data set; ``qids`` holds the file's integer qids.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file has no data rows, a line is malformed or lacks ``qid:`` (the
            message names the file and the line number), a value is NaN/inf, a qid's block is
            split (with ``noncontiguous_qids="error"``), the file does not have ``n_features``
            columns, or its dense feature matrix would exceed :data:`MAX_DENSE_BYTES`.
    """
    p = _as_path("path", path)
    _check_file(p)
    n_features = _check_positive_int("n_features", n_features, allow_none=True)
    zb = _check_zero_based(zero_based)
    if noncontiguous_qids not in ("error", "group"):
        raise ValueError(f"noncontiguous_qids must be 'error' or 'group'; got {noncontiguous_qids!r}")
    missing = _check_absent(absent)
    X, y, qid = _sklearn_load(p, zb)
    n_rows = y.shape[0]
    if n_rows == 0:
        raise ValueError(f"{p}: file has no data rows (it is empty or holds only comments/blank lines)")
    if qid.shape[0] != n_rows:
        # sklearn silently drops missing qids (the array just gets shorter), so find the line ourselves.
        for lineno, parts in _data_lines(p):
            if len(parts) < 2 or not parts[1].startswith(b"qid"):
                hint = (
                    f"; a LightGBM-style file without qid: needs its group sizes in '{p.name}.query' beside it"
                    if qid.shape[0] == 0
                    else ""
                )
                raise ValueError(f"{p}, line {lineno}: missing 'qid:<integer>' after the label{hint}")
        raise AssertionError("unreachable: a row without qid must exist")  # pragma: no cover
    features = _to_dense(X, p, n_features, missing)
    labels = y.astype(np.float32)
    _check_finite(p, features, labels)
    starts, _ = _runs(qid)
    hit = _first_repeated_run(qid, starts)
    if hit is not None:
        if noncontiguous_qids == "error":
            first, second = hit
            raise ValueError(
                f"{p}: qid {int(qid[first])} appears in two separate blocks (lines "
                f"{_line_of_row(p, first)} and {_line_of_row(p, second)}); the lines of a session must be "
                "contiguous (sort the file by qid, keeping the order within each qid)"
            )
        _, first_index, inverse = np.unique(qid, return_index=True, return_inverse=True)
        order = np.argsort(first_index[inverse], kind="stable")
        features, labels, qid = features[order], labels[order], qid[order]
    return RankingDataset.from_qids(features, labels, qid)


def _read_group_sizes(query_path: Path, data_path: Path, n_rows: int) -> np.ndarray:
    """Group sizes as Python ints, each checked within [1, n_rows] before the sum (no int64 wrap-around)."""
    sizes: list[int] = []
    total = 0
    with open(query_path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.strip()
            if not text:
                continue
            try:
                size = int(text)
            except ValueError:
                raise ValueError(
                    f"{query_path}, line {lineno}: expected one integer group size per line; got {_show(text)}"
                ) from None
            if not 1 <= size <= n_rows:
                raise ValueError(
                    f"{query_path}, line {lineno}: group size {size} is out of range: sizes must be >= 1 and "
                    f"{data_path} has {n_rows} data rows in all"
                )
            sizes.append(size)
            total += size
    if not sizes:
        raise ValueError(f"{query_path}: query/group file holds no group sizes")
    if total != n_rows:
        raise ValueError(
            f"group sizes in {query_path} sum to {total} ({len(sizes)} groups) but {data_path} has {n_rows} data rows"
        )
    return np.asarray(sizes, dtype=np.int64)


def load_lightgbm(
    path: PathLike,
    query_path: PathLike | None = None,
    n_features: int | None = None,
    *,
    zero_based: ZeroBased = True,
    absent: Absent = "missing",
) -> RankingDataset:
    """Loads a LightGBM-style ranking file: SVMlight rows plus a group-size side file.

    Args:
        path: The data file (``<label> <index>:<value> ...``; a ``qid:`` token, if present, is
            ignored because the group file is authoritative).
        query_path: File with one session size per line, in row order. Defaults to
            ``<path>.query``.
        n_features: As in :func:`load_svmlight`.
        zero_based: As in :func:`load_svmlight`.
        absent: As in :func:`load_svmlight`.

    Returns:
        The data set; ``qids`` are the session numbers ``0..S-1``.

    Raises:
        FileNotFoundError: If either file does not exist.
        ValueError: If a file is empty or malformed (file and line named), or the group sizes do
            not add up to the number of data rows (both files and both numbers named).
    """
    p = _as_path("path", path)
    q = Path(str(p) + ".query") if query_path is None else _as_path("query_path", query_path)
    _check_file(p)
    _check_file(q)
    n_features = _check_positive_int("n_features", n_features, allow_none=True)
    zb = _check_zero_based(zero_based)
    missing = _check_absent(absent)
    X, y, _ = _sklearn_load(p, zb)
    n_rows = y.shape[0]
    if n_rows == 0:
        raise ValueError(f"{p}: file has no data rows (it is empty or holds only comments/blank lines)")
    sizes = _read_group_sizes(q, p, n_rows)
    features = _to_dense(X, p, n_features, missing)
    labels = y.astype(np.float32)
    _check_finite(p, features, labels)
    qids = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    return RankingDataset(features, labels, qids, sizes)


def _load_file(path: Path, n_features: int | None, zero_based: ZeroBased, absent: Absent) -> RankingDataset:
    if Path(str(path) + ".query").is_file():
        return load_lightgbm(path, n_features=n_features, zero_based=zero_based, absent=absent)
    return load_svmlight(path, n_features, zero_based=zero_based, absent=absent)


def fold_files(directory: PathLike) -> dict[str, Path]:
    """The files of a fold directory: ``{"train": ..., "vali": ..., "test": ...}``, those that exist.

    A LETOR ``Fold`` holds ``train.txt`` / ``vali.txt`` / ``test.txt``; a LightGBM example directory holds
    ``<name>.train`` / ``<name>.vali`` / ``<name>.test`` (e.g. ``rank.train`` and ``rank.test``, with their
    ``.query`` files).

    Raises:
        FileNotFoundError: If ``directory`` is not a directory or holds no training file (or several
            ``*.train``).
    """
    d = _as_path("directory", directory)
    if not d.is_dir():
        raise FileNotFoundError(f"no such directory: {d}")
    if (d / "train.txt").is_file():
        candidates = {name: d / f"{name}.txt" for name in _FOLD_FILES}
    else:
        trains = sorted(p for p in d.glob("*.train") if p.is_file())
        if len(trains) != 1:
            present = sorted(p.name for p in d.iterdir())[:20]
            raise FileNotFoundError(
                f"{d} is not a LETOR fold: expected train.txt (and optionally vali.txt, test.txt) or one "
                f"<name>.train (and optionally <name>.vali, <name>.test); found {present}"
            )
        candidates = {name: trains[0].with_suffix(f".{name}") for name in _FOLD_FILES}
    return {name: path for name, path in candidates.items() if path.is_file()}


def load_fold(
    directory: PathLike, n_features: int | None = None, *, zero_based: ZeroBased = True, absent: Absent = "missing"
) -> dict[str, RankingDataset]:
    """Loads a fold directory (see :func:`fold_files`): its training file and, if present, vali / test.

    Each file is read like :func:`load` reads a file. ``vali`` and ``test`` are loaded with the
    training set's ``n_features`` so all parts share one column layout.

    Args:
        directory: The fold directory.
        n_features: Column count for the training file (``None``: the file's own).
        zero_based: As in :func:`load_svmlight`.
        absent: As in :func:`load_svmlight`.

    Returns:
        ``{"train": ..., "vali": ..., "test": ...}`` with the parts that exist.

    Raises:
        FileNotFoundError: If ``directory`` has no training file.
        ValueError: If the vali or test file does not have as many feature columns as the training file.
    """
    files = fold_files(directory)
    n_features = _check_positive_int("n_features", n_features, allow_none=True)
    zb, missing = _check_zero_based(zero_based), _check_absent(absent)
    parts = {"train": _load_file(files["train"], n_features, zb, missing)}
    for name in _FOLD_FILES[1:]:
        if name in files:
            parts[name] = _load_file(files[name], parts["train"].n_features, zb, missing)
    return parts


def load(
    path: PathLike, n_features: int | None = None, *, zero_based: ZeroBased = True, absent: Absent = "missing"
) -> RankingDataset | dict[str, RankingDataset]:
    """Loads ranking data, choosing the format from what is on disk.

    * a directory: a fold, see :func:`load_fold` (returns a dict);
    * a file with a ``<path>.query`` next to it: :func:`load_lightgbm`;
    * any other file: :func:`load_svmlight` (``qid:`` required).

    Args:
        path: File or fold directory.
        n_features: The column count the file must have (see :func:`load_svmlight`); pass
            ``train.n_features`` when loading a test file.
        zero_based: As in :func:`load_svmlight`.
        absent: As in :func:`load_svmlight`.

    Returns:
        A :class:`RankingDataset` for a file, ``dict[str, RankingDataset]`` for a directory.
    """
    p = _as_path("path", path)
    if p.is_dir():
        return load_fold(p, n_features, zero_based=zero_based, absent=absent)
    _check_file(p)
    n_features = _check_positive_int("n_features", n_features, allow_none=True)
    return _load_file(p, n_features, _check_zero_based(zero_based), _check_absent(absent))
