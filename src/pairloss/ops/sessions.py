"""What every session operator shares: the ``lengths`` doc, input validation and shape inference.

A session op takes scores X (N,) or (N, 1), relevance labels (N,) and optional ``lengths`` (S,) of
contiguous sessions, and outputs one value per session.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pairloss._checks import FLT_EPSILON, as_float_array, as_session_labels, check_lengths, column_to_flat

__all__ = [
    "LENGTHS_DOC",
    "KeptScratch",
    "per_session_output",
    "prepare_second_order",
    "prepare_sessions",
    "scale_unit_gradient",
    "session_offsets",
    "sessions_with_pairs",
    "sigmoid",
    "softplus",
    "times_session_values",
]

LENGTHS_DOC = ("Optional session sizes, 1-D non-negative integers summing to N; sessions are contiguous. "
               "Without it all N items form one session.")


class KeptScratch:
    """Scratch memory kept per thread between calls, up to ``limit`` bytes.

    A kernel's first touch of fresh pages costs about as much as a pass over them (the system zeroes each
    page; 0.5 ns a byte on these VMs), and glibc hands freed blocks of a few MiB back to the system whenever
    other work (a model's own tensors) trims the heap. The hinge's fused kernel on 10 x 1e5 sessions with
    int64 labels: 6.7 ms a call back to back, 8.8-9.0 ms with every block fresh (``malloc_trim`` before each
    call), 7.8-7.9 ms so with the labels' float64 copy in kept memory.
    A block returned by ``take`` is valid until the same thread's next ``take``.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept = threading.local()

    def take(self, nbytes: int) -> np.ndarray:
        """``nbytes`` (at least) of uint8 scratch."""
        kept = getattr(self._kept, "buffer", None)
        if kept is not None and kept.size >= nbytes:
            return kept
        buffer = np.empty(nbytes, np.uint8)
        if nbytes <= self._limit:
            self._kept.buffer = buffer
        return buffer

    def float64(self, n: int) -> np.ndarray:
        """``n`` float64 entries of scratch."""
        return self.take(8 * n)[:8 * n].view(np.float64)


def per_session_output(specs: Sequence[tuple[tuple[int, ...], np.dtype]], _args: Mapping[str, Any]) -> list:
    """Shape inference of the session losses: one value per session, (1,) without lengths; X's dtype."""
    return [((specs[2][0][0],) if len(specs) > 2 else (1,), specs[0][1])]


def prepare_sessions(scores: npt.ArrayLike, labels: npt.ArrayLike, lengths: npt.ArrayLike | None,
                     loss_grad: npt.ArrayLike | None = None, *,
                     label_scratch: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """Validated (scores_2d_or_1d, flat scores, float64 labels, int64 lengths[, flat loss_grad]).

    ``label_scratch``: as_session_labels' ``scratch``, for a kernel whose labels do not outlive the call."""
    x = as_float_array("scores", scores)
    flat = column_to_flat("scores", x)
    n = flat.shape[0]
    labels64 = as_session_labels(labels, n, scratch=label_scratch)
    lens = check_lengths(lengths, n)
    if loss_grad is None:
        return x, flat, labels64, lens
    g = as_float_array("loss_grad", loss_grad)
    if g.shape != (lens.size,):
        msg = f"loss_grad must have one entry per session, shape ({lens.size},); got shape {g.shape}"
        raise ValueError(msg)
    return x, flat, labels64, lens, g


def sessions_with_pairs(labels: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Which sessions hold a label-discordant pair (labels differing by at least FLT_EPSILON, as the
    kernels count them): the sessions a ``reduction="mean"`` averages over. ``labels`` (N,) or (N, 1) of any
    real dtype and ``lens`` (S,) are valid (a kernel has checked them)."""
    flat = labels.reshape(-1)
    if flat.dtype == np.float16:  # no Numba arithmetic; float32 holds every float16 exactly
        flat = flat.astype(np.float32)
    return _with_pairs_loop(flat, lens, FLT_EPSILON, np.zeros(lens.size, np.bool_))


@numba.njit(cache=True, nogil=True)
def _with_pairs_loop(labels, lens, eps, out):  # pragma: no cover - compiled
    # one pass and one call (four NumPy reductions cost more than the pass at mini-batch sizes)
    start = 0
    for s in range(lens.size):
        stop = start + lens[s]
        if stop > start:
            lo = hi = np.float64(labels[start])
            for k in range(start + 1, stop):
                v = np.float64(labels[k])
                lo = min(lo, v)
                hi = max(hi, v)
            out[s] = hi - lo >= eps
        start = stop
    return out


def prepare_second_order(scores: npt.ArrayLike, labels: npt.ArrayLike, loss_grad: npt.ArrayLike,
                          direction: npt.ArrayLike, lengths: npt.ArrayLike | None) -> tuple[np.ndarray, ...]:
    """prepare_sessions plus the direction X_grad_grad, which must have the shape of X."""
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    v = as_float_array("X_grad_grad", direction)
    if v.shape != x.shape:
        msg = f"X_grad_grad must have the shape of X, {x.shape}; got shape {v.shape}"
        raise ValueError(msg)
    return x, flat, lab, lens, g, v.reshape(-1)


def scale_unit_gradient(unit: np.ndarray, loss_grad: npt.ArrayLike, scores: npt.ArrayLike,
                        labels: npt.ArrayLike, lengths: npt.ArrayLike | None = None) -> np.ndarray:
    """X_grad of a session op from its unit gradient (X_grad for Y_grad = 1): unit times the item's Y_grad.

    Every session op's output entry depends on its own session only, and its gradient is linear in Y_grad,
    so X_grad = unit * Y_grad[session]: the backward of :class:`pairloss.registry.FusedGradient`.
    """
    x = as_float_array("scores", scores)
    flat = column_to_flat("scores", x)
    lens = check_lengths(lengths, flat.shape[0])
    g = as_float_array("loss_grad", loss_grad)
    u = np.asarray(unit)
    if g.shape != (lens.size,) or u.size != flat.shape[0]:
        msg = (f"loss_grad must have shape ({lens.size},) and the saved gradient {flat.shape[0]} entries; got "
               f"{g.shape} and {u.shape}")
        raise ValueError(msg)
    return times_session_values(u.reshape(-1), g.astype(np.float64), lens).astype(x.dtype).reshape(x.shape)


def session_offsets(lens: np.ndarray) -> np.ndarray:
    """(S + 1,) int64 starts of the sessions and N at the end: the running sum of the valid ``lens``."""
    return _running_sum(lens, np.empty(lens.size + 1, np.int64))


@numba.njit(cache=True, nogil=True)
def _running_sum(lens, out):  # pragma: no cover - compiled
    # np.cumsum into a view of a zeroed array took 0.26 ms for 1e5 sessions, this loop 0.05
    total = 0
    out[0] = 0
    for s in range(lens.size):
        total += lens[s]
        out[s + 1] = total
    return out


def times_session_values(per_item: np.ndarray, per_session: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """per_item[k] * per_session[session of k], float64, in one pass."""
    offsets = session_offsets(lens)
    return _times_session_values_loop(np.ascontiguousarray(per_item, np.float64), per_session, offsets,
                                      np.empty(offsets[-1]))


@numba.njit(cache=True, nogil=True)
def _times_session_values_loop(per_item, per_session, offsets, out):  # pragma: no cover - compiled
    # one flat pass (np.repeat and a product took two and an N-sized temporary; a loop per session does not
    # vectorise over sessions of ten)
    s = 0
    for k in range(per_item.size):
        while k >= offsets[s + 1]:
            s += 1
        out[k] = per_item[k] * per_session[s]
    return out


def softplus(z: float) -> float:
    """log(1 + exp(z)) in float64, for the references."""
    # relu(z) + log1p(exp(-|z|)): exact and finite for every finite z, where log(1 + exp(z)) overflows
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def sigmoid(z: float) -> float:
    """1 / (1 + exp(-z)) in float64 without overflow, for the references."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)
