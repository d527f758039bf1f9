"""Ranking metrics over sessions: NDCG@k, MAP, MRR and pairwise accuracy (NumPy).

All metrics take flat arrays in the :class:`~pairloss.ltr.data.RankingDataset` layout: ``scores``
and ``labels`` of shape ``(N,)`` and ``lengths`` of shape ``(S,)`` giving the size of each
(contiguous) session; ``lengths=None`` means one session. Each metric is computed per session and
averaged over the sessions that are not excluded; ``per_query=True`` returns the per-session array
instead, with ``NaN`` marking excluded sessions.

**Ties in scores** are broken deterministically by the ``ties`` argument:

* ``"pessimistic"`` (default): among equal scores, less relevant items are ranked first. The
  metric is then a lower bound that a model cannot raise by emitting ties. With input order as the
  tie-breaker, a constant scorer would inherit whatever order the file happens to be in, and LETOR
  files are frequently sorted by label or by a baseline ranker, so a collapsed model could report
  an excellent NDCG.
* ``"optimistic"``: more relevant items first (upper bound).
* ``"stable"``: input order (what a stable sort, e.g. LightGBM's, does).

The same ranking feeds every metric, so ``pairwise_accuracy`` gives a tied discordant pair credit
0 (pessimistic), 1 (optimistic) or by input order (stable).

**Sessions without signal.** ``no_relevant`` decides sessions without any relevant item (ideal DCG
0 for NDCG; no label >= ``relevance_threshold`` for MAP/MRR): ``"skip"`` leaves them out of the mean
(default), ``"zero"`` scores them 0 (scikit-learn's ``ndcg_score``), ``"one"`` scores them 1
(LightGBM). ``exclude_all_equal=True`` also leaves out sessions whose labels are all equal (single
items included): every ranking of such a session is ideal, so they only pull the mean towards 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "METRIC_FORMS",
    "evaluate",
    "mean_average_precision",
    "mrr",
    "ndcg_at",
    "pairwise_accuracy",
    "parse_metric",
]

Gain = Literal["exp2", "linear"]
NoRelevant = Literal["skip", "zero", "one"]
Ties = Literal["pessimistic", "optimistic", "stable"]
Average = Literal["query", "pair"]

#: Metric names understood by :func:`evaluate` / :func:`parse_metric` (``k`` a positive integer).
METRIC_FORMS = ("ndcg", "ndcg@k", "map", "map@k", "mrr", "mrr@k", "pairwise_accuracy")

# 2**1024 is float64's overflow; labels this large need the linear gain.
_MAX_EXP2_LABEL = 1024
# Largest boolean block (elements) materialised at once when counting pairs, to bound memory.
_PAIR_BLOCK = 1 << 24


def _to_numpy(name: str, value: object) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensors, without importing torch
        value = value.detach().cpu().numpy()  # type: ignore[attr-defined]
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


@dataclass(frozen=True)
class _Ranked:
    """Sessions with items sorted by the ranking; everything a metric kernel needs."""

    labels: np.ndarray  # (N,) float64 labels in ranked order, session after session
    pos: np.ndarray  # (N,) int64 0-based rank inside the session
    seg: np.ndarray  # (N,) int64 session index
    lengths: np.ndarray  # (S,) int64
    offsets: np.ndarray  # (S + 1,) int64
    raw_labels: np.ndarray  # (N,) float64 labels in input order (for ideal orderings)

    @property
    def n_sessions(self) -> int:
        return int(self.lengths.shape[0])


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_k(k: object) -> int | None:
    if k is None:
        return None
    if not isinstance(k, int | np.integer) or isinstance(k, bool | np.bool_):
        raise TypeError(f"k must be a positive int or None; got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (or None for the full list); got {k}")
    return int(k)


def _rank(scores: object, labels: object, lengths: object, ties: str) -> _Ranked:
    _check_choice("ties", ties, ("pessimistic", "optimistic", "stable"))
    s = _to_numpy("scores", scores).astype(np.float64, copy=False)
    y = _to_numpy("labels", labels).astype(np.float64, copy=False)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D array (n_items,); got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels must have the same shape as scores {s.shape}; got {y.shape}")
    if np.isnan(s).any():
        raise ValueError(f"scores must not contain NaN (item {int(np.flatnonzero(np.isnan(s))[0])} is NaN)")
    if not np.isfinite(y).all():
        raise ValueError(f"labels must be finite (item {int(np.flatnonzero(~np.isfinite(y))[0])} is not)")
    n = s.shape[0]
    if lengths is None:
        lens = np.array([n], dtype=np.int64)
    else:
        raw = _to_numpy("lengths", lengths)
        if raw.ndim != 1:
            raise ValueError(f"lengths must be a 1-D array of session sizes; got shape {raw.shape}")
        if raw.size and raw.dtype.kind not in "iu":
            raise TypeError(f"lengths must hold integers; got dtype {raw.dtype}")
        # Every size within [0, n] before any cast or sum: an int64 sum can wrap around to n.
        if raw.size and raw.min() < 0:
            raise ValueError(f"lengths must be >= 0; got {int(raw.min())}")
        if raw.size and raw.max() > n:
            raise ValueError(f"lengths must sum to the number of items {n}; one session alone has {int(raw.max())}")
        lens = raw.astype(np.int64)
        total = sum(lens.tolist())
        if total != n:
            raise ValueError(f"lengths must sum to the number of items {n}; they sum to {total}")
    offsets = np.zeros(lens.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    seg = np.repeat(np.arange(lens.shape[0], dtype=np.int64), lens)
    # np.lexsort is stable and sorts by the last key first: session, then descending score, then
    # the tie key; remaining ties keep input order.
    if ties == "pessimistic":
        order = np.lexsort((y, -s, seg))
    elif ties == "optimistic":
        order = np.lexsort((-y, -s, seg))
    else:
        order = np.lexsort((-s, seg))
    pos = np.arange(n, dtype=np.int64) - offsets[seg]
    return _Ranked(y[order], pos, seg, lens, offsets, y)


def _segment_sum(r: _Ranked, values: np.ndarray) -> np.ndarray:
    return np.bincount(r.seg, weights=values, minlength=r.n_sessions).astype(np.float64)


def _all_equal(r: _Ranked) -> np.ndarray:
    """Sessions whose labels are all equal (empty and single-item sessions included)."""
    out = np.ones(r.n_sessions, dtype=bool)
    nonempty = r.lengths > 0
    if nonempty.any():
        starts = r.offsets[:-1][nonempty]
        lo = np.minimum.reduceat(r.raw_labels, starts)
        hi = np.maximum.reduceat(r.raw_labels, starts)
        out[nonempty] = lo == hi
    return out


def _finish(
    values: np.ndarray,
    no_signal: np.ndarray,
    no_relevant: str,
    exclude: np.ndarray | None,
    per_query: bool,
) -> float | np.ndarray:
    out = values.astype(np.float64, copy=True)
    out[no_signal] = {"skip": np.nan, "zero": 0.0, "one": 1.0}[no_relevant]
    if exclude is not None:
        out[exclude] = np.nan
    if per_query:
        return out
    kept = out[~np.isnan(out)]
    # An empty mean is reported as NaN rather than raising: "no session qualifies" is a legitimate
    # outcome (e.g. a validation batch of single-item sessions), and NaN propagates visibly.
    return float(kept.mean()) if kept.size else float("nan")


def _check_threshold(value: object) -> float:
    if not isinstance(value, int | float | np.integer | np.floating) or isinstance(value, bool):
        raise TypeError(f"relevance_threshold must be a number; got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"relevance_threshold must be finite; got {value!r}")
    return float(value)


def _ndcg_kernel(
    r: _Ranked, k: int | None, gain: str, no_relevant: str, exclude_all_equal: bool, per_query: bool
) -> float | np.ndarray:
    _check_choice("gain", gain, ("exp2", "linear"))
    _check_choice("no_relevant", no_relevant, ("skip", "zero", "one"))
    if r.raw_labels.size and r.raw_labels.min() < 0:
        raise ValueError(f"ndcg needs labels >= 0 (gains of negative labels are meaningless); got {r.raw_labels.min()}")

    if gain == "exp2" and r.raw_labels.size and r.raw_labels.max() >= _MAX_EXP2_LABEL:
        raise ValueError(
            f"labels up to {r.raw_labels.max():g} overflow the exp2 gain 2**label - 1 in float64 (labels must be "
            f"< {_MAX_EXP2_LABEL}); use the linear gain (gain='linear', on the command line --gain linear)"
        )

    def to_gain(v: np.ndarray) -> np.ndarray:
        return np.exp2(v) - 1.0 if gain == "exp2" else v

    discount = 1.0 / np.log2(r.pos + 2.0)
    if k is not None:
        discount = np.where(r.pos < k, discount, 0.0)
    dcg = _segment_sum(r, to_gain(r.labels) * discount)
    # The ideal ranking uses the same positions (hence discounts), only the labels are re-sorted.
    ideal = r.raw_labels[np.lexsort((-r.raw_labels, r.seg))]
    idcg = _segment_sum(r, to_gain(ideal) * discount)
    if not np.isfinite(idcg).all():
        raise ValueError(f"the exp2 gains of labels up to {r.raw_labels.max():g} add up beyond float64's range; "
                         "use the linear gain (gain='linear', on the command line --gain linear)")
    no_signal = idcg <= 0.0
    values = dcg / np.where(no_signal, 1.0, idcg)
    return _finish(values, no_signal, no_relevant, _all_equal(r) if exclude_all_equal else None, per_query)


def _ap_kernel(
    r: _Ranked,
    k: int | None,
    threshold: float,
    no_relevant: str,
    exclude_all_equal: bool,
    per_query: bool,
) -> float | np.ndarray:
    _check_choice("no_relevant", no_relevant, ("skip", "zero", "one"))
    rel = (r.labels >= threshold).astype(np.float64)
    n_rel = _segment_sum(r, rel)
    cum = np.cumsum(rel)
    # Relevant items at or above each position, inside its own session: global running count minus
    # the count accumulated before the session started.
    before = np.concatenate(([0.0], cum))[r.offsets[:-1]][r.seg]
    precision = (cum - before) / (r.pos + 1.0)
    contrib = precision * rel
    if k is not None:
        contrib = np.where(r.pos < k, contrib, 0.0)
    # AP@k divides by min(R, k) so that a perfect top-k scores 1 even when R > k.
    denom = n_rel if k is None else np.minimum(n_rel, float(k))
    no_signal = n_rel == 0
    values = _segment_sum(r, contrib) / np.where(no_signal, 1.0, denom)
    return _finish(values, no_signal, no_relevant, _all_equal(r) if exclude_all_equal else None, per_query)


def _rr_kernel(
    r: _Ranked,
    k: int | None,
    threshold: float,
    no_relevant: str,
    exclude_all_equal: bool,
    per_query: bool,
) -> float | np.ndarray:
    _check_choice("no_relevant", no_relevant, ("skip", "zero", "one"))
    hits = np.flatnonzero(r.labels >= threshold)
    first_pos = np.full(r.n_sessions, np.inf)
    # Items are sorted by (session, rank), so the first hit of each session is its best-ranked one.
    sessions, first = np.unique(r.seg[hits], return_index=True)
    first_pos[sessions] = r.pos[hits[first]]
    no_signal = np.isinf(first_pos)
    values = 1.0 / (first_pos + 1.0)
    if k is not None:
        values = np.where(first_pos < k, values, 0.0)
    return _finish(values, no_signal, no_relevant, _all_equal(r) if exclude_all_equal else None, per_query)


def _pair_counts(r: _Ranked, block: int = _PAIR_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Per session: discordant pairs ranked correctly, and all discordant pairs."""
    n_sessions = r.n_sessions
    correct = np.zeros(n_sessions, dtype=np.int64)
    wrong = np.zeros(n_sessions, dtype=np.int64)
    order = np.argsort(r.lengths, kind="stable")
    sorted_lens = r.lengths[order]
    i = int(np.searchsorted(sorted_lens, 2))  # sessions of 0 or 1 item have no pairs
    while i < n_sessions:
        m = int(sorted_lens[i])
        if m * m > block:
            # One very long session: compare a band of rows at a time to keep memory at O(block).
            s = int(order[i])
            lab = r.labels[r.offsets[s] : r.offsets[s + 1]]
            rows = max(1, block // m)
            cols = np.arange(m)
            for start in range(0, m, rows):
                a = lab[start : start + rows, None]
                below = cols[None, :] > (start + np.arange(a.shape[0]))[:, None]
                correct[s] += np.count_nonzero((a > lab[None, :]) & below)
                wrong[s] += np.count_nonzero((a < lab[None, :]) & below)
            i += 1
            continue
        # Many short sessions at once: pad sessions of similar length (sorted by length) into a
        # (c, m, m) block so the Python loop runs per block, not per session.
        j = min(n_sessions, i + max(1, block // (m * m)))
        while j - i > 1 and (j - i) * int(sorted_lens[j - 1]) ** 2 > block:
            j = i + (j - i) // 2
        sel = order[i:j]
        width = int(sorted_lens[j - 1])
        cols = np.arange(width)
        valid = cols[None, :] < r.lengths[sel][:, None]
        padded = np.full((sel.shape[0], width), np.nan)
        padded[valid] = r.labels[(r.offsets[sel][:, None] + cols[None, :])[valid]]
        upper = cols[None, :] > cols[:, None]
        a, b = padded[:, :, None], padded[:, None, :]
        with np.errstate(invalid="ignore"):  # NaN padding compares False, which is what we want
            correct[sel] = ((a > b) & upper).sum(axis=(1, 2))
            wrong[sel] = ((a < b) & upper).sum(axis=(1, 2))
        i = j
    return correct, correct + wrong


def _pair_kernel(r: _Ranked, average: str, per_query: bool) -> float | np.ndarray:
    _check_choice("average", average, ("query", "pair"))
    correct, total = _pair_counts(r)
    per = np.full(r.n_sessions, np.nan)
    has_pairs = total > 0
    per[has_pairs] = correct[has_pairs] / total[has_pairs]
    if per_query:
        return per
    if average == "pair":
        return float(correct.sum() / total.sum()) if total.sum() else float("nan")
    return float(per[has_pairs].mean()) if has_pairs.any() else float("nan")


_METRIC_RE = re.compile(r"^(ndcg|map|mrr)(?:@(\d+))?$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """Parses a metric name such as ``"ndcg@10"``.

    Args:
        name: One of :data:`METRIC_FORMS` (case-insensitive), e.g. ``"ndcg@5"``, ``"map"``,
            ``"mrr@10"``, ``"pairwise_accuracy"``.

    Returns:
        ``(kind, k)`` with ``kind`` in ``{"ndcg", "map", "mrr", "pairwise_accuracy"}`` and ``k`` the
        cutoff, ``None`` for the full list.

    Raises:
        ValueError: If the name is not a known metric.

    Example:
        >>> parse_metric("NDCG@10")
        ('ndcg', 10)
    """
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a str; got {type(name).__name__} {name!r}")
    text = name.strip().lower()
    if text == "pairwise_accuracy":
        return "pairwise_accuracy", None
    match = _METRIC_RE.match(text)
    if match is None:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(METRIC_FORMS)} (k >= 1)")
    k = match.group(2)
    if k is not None and int(k) < 1:
        raise ValueError(f"metric {name!r}: the cutoff k must be >= 1")
    return match.group(1), None if k is None else int(k)


@overload
def ndcg_at(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    k: int | None,
    *,
    gain: Gain = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    ties: Ties = ...,
    per_query: Literal[False] = ...,
) -> float: ...
@overload
def ndcg_at(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    k: int | None,
    *,
    gain: Gain = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    ties: Ties = ...,
    per_query: Literal[True],
) -> np.ndarray: ...
def ndcg_at(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    k: int | None,
    *,
    gain: Gain = "exp2",
    no_relevant: NoRelevant = "skip",
    exclude_all_equal: bool = False,
    ties: Ties = "pessimistic",
    per_query: bool = False,
) -> float | np.ndarray:
    """Normalised discounted cumulative gain at ``k``, averaged over sessions.

    ``DCG@k = sum_{r < k} gain(label at rank r) / log2(r + 2)`` (``r`` 0-based) and
    ``NDCG@k = DCG@k / IDCG@k`` with IDCG the DCG of the label-sorted session.

    Args:
        scores: ``(N,)`` model scores (higher ranks first); NaN is rejected.
        labels: ``(N,)`` non-negative relevance labels.
        lengths: ``(S,)`` session sizes (``None``: a single session).
        k: Cutoff; ``None`` uses the whole session. Sessions shorter than ``k`` use all items.
        gain: ``"exp2"`` (``2**label - 1``, the LETOR/LightGBM convention) or ``"linear"``
            (``label``, scikit-learn's ``ndcg_score``).
        no_relevant: Rule for sessions with IDCG 0 (all labels 0): ``"skip"``, ``"zero"``, ``"one"``.
        exclude_all_equal: Also skip sessions whose labels are all equal.
        ties: Tie-breaking rule for equal scores; see the module docstring.
        per_query: Return the ``(S,)`` per-session values (NaN = skipped) instead of the mean.

    Returns:
        The mean over non-skipped sessions (NaN if none), or the per-session array.

    Example:
        >>> round(ndcg_at([0.1, 0.9, 0.5], [0, 1, 2], None, 3, gain="linear"), 4)
        0.8597
    """
    r = _rank(scores, labels, lengths, ties)
    return _ndcg_kernel(r, _check_k(k), gain, no_relevant, exclude_all_equal, per_query)


@overload
def mean_average_precision(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    k: int | None = ...,
    relevance_threshold: float = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    ties: Ties = ...,
    per_query: Literal[False] = ...,
) -> float: ...
@overload
def mean_average_precision(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    k: int | None = ...,
    relevance_threshold: float = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    ties: Ties = ...,
    per_query: Literal[True],
) -> np.ndarray: ...
def mean_average_precision(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    k: int | None = None,
    relevance_threshold: float = 1.0,
    no_relevant: NoRelevant = "skip",
    exclude_all_equal: bool = False,
    ties: Ties = "pessimistic",
    per_query: bool = False,
) -> float | np.ndarray:
    """Mean average precision with binary relevance ``label >= relevance_threshold``.

    ``AP = (1 / R) * sum over relevant ranks r of precision@r``, with ``R`` the number of
    relevant items; with a cutoff ``k`` only ranks ``< k`` count and ``R`` becomes ``min(R, k)``.

    Args:
        scores: ``(N,)`` model scores.
        labels: ``(N,)`` relevance labels.
        lengths: ``(S,)`` session sizes (``None``: a single session).
        k: Optional cutoff.
        relevance_threshold: Smallest label counted as relevant.
        no_relevant: Rule for sessions without a relevant item: ``"skip"``, ``"zero"``, ``"one"``.
        exclude_all_equal: Also skip sessions whose labels are all equal.
        ties: Tie-breaking rule for equal scores; see the module docstring.
        per_query: Return the per-session values (NaN = skipped) instead of the mean.

    Returns:
        The mean over non-skipped sessions (NaN if none), or the per-session array.

    Example:
        >>> mean_average_precision([3.0, 2.0, 1.0], [1, 0, 1], None)
        0.8333333333333333
    """
    r = _rank(scores, labels, lengths, ties)
    threshold = _check_threshold(relevance_threshold)
    return _ap_kernel(r, _check_k(k), threshold, no_relevant, exclude_all_equal, per_query)


@overload
def mrr(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    k: int | None = ...,
    relevance_threshold: float = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    ties: Ties = ...,
    per_query: Literal[False] = ...,
) -> float: ...
@overload
def mrr(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    k: int | None = ...,
    relevance_threshold: float = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    ties: Ties = ...,
    per_query: Literal[True],
) -> np.ndarray: ...
def mrr(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    k: int | None = None,
    relevance_threshold: float = 1.0,
    no_relevant: NoRelevant = "skip",
    exclude_all_equal: bool = False,
    ties: Ties = "pessimistic",
    per_query: bool = False,
) -> float | np.ndarray:
    """Mean reciprocal rank of the first item with ``label >= relevance_threshold``.

    Args:
        scores: ``(N,)`` model scores.
        labels: ``(N,)`` relevance labels.
        lengths: ``(S,)`` session sizes (``None``: a single session).
        k: Optional cutoff; a first relevant item at rank ``>= k`` scores 0.
        relevance_threshold: Smallest label counted as relevant.
        no_relevant: Rule for sessions without a relevant item: ``"skip"``, ``"zero"``, ``"one"``.
        exclude_all_equal: Also skip sessions whose labels are all equal.
        ties: Tie-breaking rule for equal scores; see the module docstring.
        per_query: Return the per-session values (NaN = skipped) instead of the mean.

    Returns:
        The mean over non-skipped sessions (NaN if none), or the per-session array.

    Example:
        >>> mrr([3.0, 2.0, 1.0, 5.0, 4.0], [0, 1, 0, 2, 0], [3, 2])
        0.75
    """
    r = _rank(scores, labels, lengths, ties)
    threshold = _check_threshold(relevance_threshold)
    return _rr_kernel(r, _check_k(k), threshold, no_relevant, exclude_all_equal, per_query)


@overload
def pairwise_accuracy(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    ties: Ties = ...,
    average: Average = ...,
    per_query: Literal[False] = ...,
) -> float: ...
@overload
def pairwise_accuracy(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    ties: Ties = ...,
    average: Average = ...,
    per_query: Literal[True],
) -> np.ndarray: ...
def pairwise_accuracy(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    *,
    ties: Ties = "pessimistic",
    average: Average = "query",
    per_query: bool = False,
) -> float | np.ndarray:
    """Fraction of label-discordant pairs (same session, different labels) ranked correctly.

    Sessions without a discordant pair (single items, all labels equal) have no value and are
    skipped. Cost is ``O(sum of n_s**2)`` time with memory bounded by blocking.

    Args:
        scores: ``(N,)`` model scores.
        labels: ``(N,)`` relevance labels.
        lengths: ``(S,)`` session sizes (``None``: a single session).
        ties: Tie-breaking rule for equal scores (pessimistic: a tied pair counts as wrong).
        average: ``"query"`` averages per-session accuracies; ``"pair"`` pools all pairs, so
            large sessions weigh more.
        per_query: Return the per-session accuracies (NaN = no discordant pair).

    Returns:
        The average (NaN if no session has a discordant pair), or the per-session array.

    Example:
        >>> pairwise_accuracy([0.3, 0.2, 0.1], [2, 0, 1], None)
        0.6666666666666666
    """
    r = _rank(scores, labels, lengths, ties)
    return _pair_kernel(r, average, per_query)


@overload
def evaluate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    metrics: str | Iterable[str] = ...,
    *,
    gain: Gain = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    relevance_threshold: float = ...,
    ties: Ties = ...,
    per_query: Literal[False] = ...,
) -> dict[str, float]: ...
@overload
def evaluate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    metrics: str | Iterable[str] = ...,
    *,
    gain: Gain = ...,
    no_relevant: NoRelevant = ...,
    exclude_all_equal: bool = ...,
    relevance_threshold: float = ...,
    ties: Ties = ...,
    per_query: Literal[True],
) -> dict[str, np.ndarray]: ...
def evaluate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    lengths: npt.ArrayLike | None,
    metrics: str | Iterable[str] = ("ndcg@10", "map", "mrr"),
    *,
    gain: Gain = "exp2",
    no_relevant: NoRelevant = "skip",
    exclude_all_equal: bool = False,
    relevance_threshold: float = 1.0,
    ties: Ties = "pessimistic",
    per_query: bool = False,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Computes several metrics at once (the ranking is sorted only once).

    Args:
        scores: ``(N,)`` model scores.
        labels: ``(N,)`` relevance labels.
        lengths: ``(S,)`` session sizes (``None``: a single session).
        metrics: Metric names (see :func:`parse_metric`), or a single name.
        gain: NDCG gain, see :func:`ndcg_at`.
        no_relevant: Rule for sessions without a relevant item (NDCG, MAP, MRR).
        exclude_all_equal: Skip sessions whose labels are all equal (NDCG, MAP, MRR; pairwise
            accuracy skips them anyway).
        relevance_threshold: Smallest relevant label for MAP and MRR.
        ties: Tie-breaking rule for equal scores; see the module docstring.
        per_query: Return per-session arrays instead of means.

    Returns:
        ``{name: value}`` keyed by the names exactly as given, in the given order.

    Raises:
        ValueError: If a metric name is unknown (the message lists the valid ones).

    Example:
        >>> evaluate([2.0, 1.0, 0.0], [1, 0, 0], None, ["ndcg@10", "mrr"])
        {'ndcg@10': 1.0, 'mrr': 1.0}
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("metrics must name at least one metric")
    parsed = [parse_metric(name) for name in names]  # fail on a bad name before any work
    _check_choice("gain", gain, ("exp2", "linear"))
    _check_choice("no_relevant", no_relevant, ("skip", "zero", "one"))
    threshold = _check_threshold(relevance_threshold)
    r = _rank(scores, labels, lengths, ties)
    out: dict[str, float | np.ndarray] = {}
    for name, (kind, k) in zip(names, parsed, strict=True):
        if kind == "ndcg":
            out[name] = _ndcg_kernel(r, k, gain, no_relevant, exclude_all_equal, per_query)
        elif kind == "map":
            out[name] = _ap_kernel(r, k, threshold, no_relevant, exclude_all_equal, per_query)
        elif kind == "mrr":
            out[name] = _rr_kernel(r, k, threshold, no_relevant, exclude_all_equal, per_query)
        else:
            out[name] = _pair_kernel(r, "query", per_query)
    return out  # type: ignore[return-value]
