r"""PairWiseHingeLoss: the pairwise hinge (RankSVM) loss, averaged per session, exact in O(n log n).

For session :math:`s` with label-discordant pairs :math:`P_s` (:math:`|l_i - l_j| \ge 2^{-23}`, ties
skipped, exactly as :class:`PairWiseLoss`), "hi" the item of the pair with the larger label,

.. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \max\bigl(0,\; \text{margin} - (x_{hi} - x_{lo})\bigr)

and :math:`Y_s = 0` when :math:`P_s` is empty (an empty, one-item or all-tied session). It is
MarginRankingCriterion applied to every discordant pair (``X1 = x_hi``, ``X2 = x_lo``, ``Y = +1``) and
averaged per session, and it keeps that op's conventions: a pair is *active* when
:math:`h = \text{margin} - (x_{hi} - x_{lo})` is not negative; **at the kink** :math:`h = 0` the loss adds 0
**and the gradient is passed**. Scores must be finite (a ValueError otherwise, on every device): the
exact O(n log n) algorithm needs scores it can order, and a NaN or infinite score means the model has
diverged, which a loss should say rather than turn into NaN. The gradient
is :math:`\partial Y_s/\partial x_{hi} = -1/|P_s|` and :math:`\partial Y_s/\partial x_{lo} = +1/|P_s|` per
active pair, times the output gradient.

Complexity. The float64 reference visits all :math:`n^2/2` pairs. The CPU kernel sorts each session by
score and by label (LSD radix sorts; float32 and float16 scores as 32-bit keys) and counts with two
Fenwick-tree sweeps, for every item, its active partners below and above it in label order, so it is exact
(the same active set, the same pair count) in :math:`O(n \log n)`:

- activity is the reference's float64 test ``fl(x_hi - x_lo) <= margin``, which is monotone in either
  score, so for each item the active partners form a contiguous run in score order;
- the tie tolerance is absolute (:math:`|l_i - l_j| < 2^{-23}`), so "tied" is not transitive when distinct
  labels lie closer than :math:`2^{-23}`. Labels are therefore grouped by exact value, and each group
  gets the run of groups it is at least :math:`2^{-23}` above and the run it is at least :math:`2^{-23}`
  below (both runs, since ``fl(a - b)`` is monotone), which reproduces the pair rule exactly for any
  finite labels;
- labels that are integers in ``[0, _GRADES)`` (graded relevance, the common case) are grouped by value
  with a count per grade instead of a label sort, and each item's partners in a run of the score order
  are counted from a table of per-grade prefix counts (two reads) instead of a Fenwick tree, with run
  ends that move by counting ``_WINDOW`` monotone tests at a time (branch-free);
- sessions of 2 to ``_LANES_MAX`` items (40) are computed pair by pair *side by side* when the call holds
  at least ``_LANES_MIN`` sessions of their size: grouped by size, ``_LANES`` of them at a time are laid
  out as the columns of small blocks, so that one vector operation does pair (i, j) of every session of
  the block (a 10-item session's rows, of 1 to 9 partners, would leave the vector lanes mostly idle);
- any other session of at most ``_ROWS_MAX`` items (256) is computed pair by pair instead, :math:`O(n^2)`, which
  beats sorting up to that size: with integer grades (from ``_GRADED_MIN`` items) in grade order, where
  an item's lower-graded partners are one contiguous prefix, so the vectorised inner loop visits only
  discordant pairs and is a subtraction, a comparison and two additions; other finite labels in a
  branch-free row loop over every pair with the tie test inside. The activity test and the pair count
  are the reference's;
- the loss is :math:`\text{margin}\,A + \sum_k d_k (x_k - c)` with :math:`A` the active pairs, :math:`d_k`
  the net count of active pairs in which :math:`k` is the lower item and :math:`c` the session's median
  (sorted paths) or midrange (grade-ordered rows) score (the :math:`d_k` sum to 0), summed with TwoSum
  compensation; the gradient is :math:`d_k/|P_s|`
  exactly. Forward values differ from the pair-by-pair sum by rounding only, about
  :math:`2^{-53}\,\max_k |x_k - c|` per active pair.

References: Herbrich, Graepel & Obermayer, 2000, "Large margin rank boundaries for ordinal regression";
Joachims, 2002, "Optimizing search engines using clickthrough data".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, cores_free_for, parallel_launch, serial_twin
from pairloss._checks import FLT_EPSILON, describe_values
from pairloss.ops.pair_loops import integer_grades
from pairloss.ops.pair_loops_cuda import (
    HINGE,
    check_loss_grad,
    pair_rows,
    prepare_sessions_cuda,
    raise_if_bad_labels,
    scale_rows,
    session_mean,
)
from pairloss.ops.sessions import (
    LENGTHS_DOC,
    KeptScratch,
    per_session_output,
    prepare_sessions,
    scale_unit_gradient,
    session_offsets,
    times_session_values,
)
from pairloss.registry import (
    GI,
    GO,
    FusedForward,
    I,
    OperatorDef,
    gradient_def,
    operator_schema,
    register_cpu_operator,
    register_cuda_operator,
    register_fused_gradient,
    register_gradient,
)

__all__ = [
    "GRADIENT_GRADIENT_SCHEMA",
    "GRADIENT_SCHEMA",
    "SCHEMA",
    "pairwise_hinge_loss",
    "pairwise_hinge_loss_gradient",
    "prepare_finite",
]

_MARGIN_DOC = ("Required score gap between the higher- and the lower-labelled item of each pair "
               "(1.0, as MarginRankingCriterion).")

SCHEMA = (
    operator_schema("PairWiseHingeLoss")
    .num_inputs(2, 3)
    .num_outputs(1)
    .input(0, "X", "Scores, shape (N,) or (N, 1); float16/32/64.")
    .input(1, "label", "Relevance labels, shape (N,) or (N, 1); integer or float (ties: |difference| < 2^-23).")
    .input(2, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "Y", "Mean pairwise hinge loss per session, shape (S,) ((1,) without lengths); dtype of X.")
    .arg("margin", float, default=1.0, doc=_MARGIN_DOC)
    .tensor_inference_function(per_session_output)
    .onnx_decomposition("pairloss.onnx:pairwise_hinge_loss_decomposition")
    .set_doc(__doc__)
)

GRADIENT_SCHEMA = (
    operator_schema("PairWiseHingeLossGradient")
    .num_inputs(3, 4)
    .num_outputs(1)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "Gradient with respect to the per-session loss Y, shape (S,).")
    .input(3, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Gradient with respect to X; shape and dtype of X.")
    .arg("margin", float, default=1.0, doc=_MARGIN_DOC)
    .identical_type_and_shape(0)
    .gradient_op()
    .set_doc("Gradient of PairWiseHingeLoss with respect to X: -Y_grad/|P| for the higher-labelled and "
             "+Y_grad/|P| for the lower-labelled item of every active pair (kink included).")
)


GRADIENT_GRADIENT_SCHEMA = (
    operator_schema("PairWiseHingeLossGradientGradient")
    .num_inputs(4, 5)
    .num_outputs(2)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "The Y_grad that PairWiseHingeLossGradient was given, shape (S,).")
    .input(3, "X_grad_grad", "Gradient with respect to PairWiseHingeLossGradient's output X_grad; shape of X.")
    .input(4, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Its gradient with respect to X: zero (the hinge's gradient is piecewise constant "
                         "in X); shape and dtype of X.")
    .output(1, "Y_grad_grad", "Its gradient with respect to Y_grad: per session, the sum of X_grad_grad "
                              "times the session's gradient for Y_grad = 1; shape (S,), dtype of X.")
    .arg("margin", float, default=1.0, doc=_MARGIN_DOC)
    .tensor_inference_function(lambda specs, _args: [specs[0], ((specs[2][0][0],), specs[0][1])])
    .gradient_op()
    .set_doc("Second derivatives of PairWiseHingeLoss (double backward): X_grad = 0 (almost everywhere) and "
             "Y_grad_grad_s = sum_k X_grad_grad_k * d_k / |P_s|, d_k the gradient for Y_grad = 1.")
)


def _second_order_from_gradient(gradient: Any, scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                                direction: np.ndarray, lengths: np.ndarray | None, margin: float
                                ) -> tuple[np.ndarray, np.ndarray]:
    """(zeros like X, per-session sum of direction * gradient(Y_grad = 1)) with ``gradient`` an impl."""
    x, _, _, lens, _ = prepare_finite(scores, labels, lengths, loss_grad)
    v = np.asarray(direction)
    if v.shape != x.shape:
        msg = f"X_grad_grad must have the shape of X, {x.shape}; got shape {v.shape}"
        raise ValueError(msg)
    unit = gradient(scores, labels, np.ones(lens.size), lengths, margin=margin).reshape(-1)
    sessions = np.repeat(np.arange(lens.size), lens)
    gg = np.bincount(sessions, weights=unit.astype(np.float64) * v.reshape(-1), minlength=lens.size)
    return np.zeros_like(x), gg.astype(x.dtype)


# ---- reference (float64, every pair, PairWiseLoss's loop order) ---------------------------------------
def prepare_finite(scores: npt.ArrayLike, labels: npt.ArrayLike, lengths: npt.ArrayLike | None,
                   loss_grad: npt.ArrayLike | None = None, *,
                   label_scratch: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """prepare_sessions, and the scores must be finite (see the module doc)."""
    prepared = prepare_sessions(scores, labels, lengths, loss_grad, label_scratch=label_scratch)
    flat = prepared[1]
    if not np.isfinite(flat).all():
        bad = ~np.isfinite(flat)
        msg = (f"PairWiseHingeLoss: scores must be finite; got NaN or inf at positions "
               f"{describe_values(np.flatnonzero(bad))}")
        raise ValueError(msg)
    return prepared


def reference_forward(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None, *,
                      margin: float) -> np.ndarray:
    x, flat, lab, lens = prepare_finite(scores, labels, lengths)
    out = np.zeros(lens.size, np.float64)
    offset = 0
    for s, length in enumerate(lens):
        total, pairs = 0.0, 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue  # ties carry no preference
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                h = margin - (float(flat[hi]) - float(flat[lo]))
                total += h if not h < 0.0 else 0.0  # std::max(h, 0) as MarginRankingCriterion: NaN stays
                pairs += 1
        out[s] = total / pairs if pairs else 0.0
        offset += length
    return out.astype(x.dtype)


def reference_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                       lengths: np.ndarray | None = None, *, margin: float) -> np.ndarray:
    x, flat, lab, lens, g = prepare_finite(scores, labels, lengths, loss_grad)
    dx = np.zeros(flat.shape[0], np.float64)
    offset = 0
    for s, length in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                h = margin - (float(flat[hi]) - float(flat[lo]))
                if not h < 0.0:  # active, the kink h == 0 and NaN included
                    dx[hi] -= float(g[s])
                    dx[lo] += float(g[s])
                pairs += 1
        if pairs:
            dx[offset:offset + length] /= pairs
        offset += length
    return dx.reshape(x.shape).astype(x.dtype)


def reference_gradient_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                                direction: np.ndarray, lengths: np.ndarray | None = None, *,
                                margin: float) -> tuple[np.ndarray, np.ndarray]:
    return _second_order_from_gradient(reference_gradient, scores, labels, loss_grad, direction, lengths, margin)


# ---- CPU kernels --------------------------------------------------------------------------------------
# Every session yields (pairs, loss sum, d_k = #active pairs with k below - #active pairs with k above),
# and d becomes the unit gradient d / pairs while the session is in cache; the forward divides the sum by
# pairs, the gradient scales the unit gradient by loss_grad, and the fused kernel of the torch path
# (registry.FusedGradient) returns both from one pass. Many sessions: prange over chunks of sessions,
# each chunk with scratch as long as its longest session, which every session of the chunk reuses while
# it is in cache (per-session slices of call-sized scratch cost 1.6x at n = 100: every session touched
# cold memory). A session of at least _PARALLEL_MIN items (when there are too few of those to keep the
# threads busy) runs on two threads: with integer grades (from _GRADED_PARALLEL_MIN items) every step in two
# halves of the items (_graded_big_session, bit for bit the serial result), other labels their two sorts
# and then their two sweeps side by side (_big_session).
# Sorting is an LSD radix sort (8 bits a pass) of the order-preserving integer image of the float64 keys:
# linear time, stable, and a pass whose byte is the same for every key (most of them for graded labels)
# is skipped.
_DIRECT_MAX = 48  # below this size no sorting scratch is made (the pair rows serve every session up to _ROWS_MAX)
_ROWS_MAX = 256  # up to this size the vectorised pair rows beat sorting (1.0 ns/pair; crossover ~250 on Zen 1)
_GRADED_MIN = 24  # from this size, integer grades take the grade-ordered rows (below it their set-up costs more)
_GRADES = 32  # labels that are integers in [0, _GRADES) are grouped by value, without a label sort
_COUNTED_BY_COMPARISON = 8  # up to this many grades _integer_grades counts each grade by comparisons
_WINDOW = 4  # the sorted sweeps move their pointers by counting this many tests at a time (8: 1.3x slower)
_PARALLEL_MIN = 1 << 15
# integer grades: below this size one thread's table sweep is about as fast as the two-thread session (whose
# sort and sweep exchange their halves between the cores). Two threads over one, called back to back: Xeon
# (AVX-512) 80,000 items 1.0x, 200,000 1.1x, 1e6 1.6x; EPYC (AVX2) 32,768 1.15x, 65,536 1.24x, 130,000
# 1.35x, 1e6 1.4x; after the benchmark harness's 5 ms idle pause (the workers asleep), EPYC: 80,000 0.87x,
# 200,000 1.07-1.27x, 1e6 1.02-1.43x (this VM's neighbours move such ratios by 0.2 from run to run)
_GRADED_PARALLEL_MIN = 1 << 17
_SERIAL_ITEMS = 1 << 13  # below this many items a parallel launch costs more than it saves
_LANES_MAX = 40  # sessions of 2 .. this many items go side by side (_lane_block); at 48 graded rows win
_LANES_MIN = 8  # ... when at least this many sessions of the call have that size (4 of 40 items: rows win)
_LANE_STEP = 16  # ... and a partial block is padded to a multiple of this many sessions
_LANES = 64  # sessions per side-by-side block: its three (_LANES_MAX, _LANES) float64 blocks take 60 KiB
_INV_FLT_EPSILON = 1.0 / FLT_EPSILON
_TWO_TO_64, _TWO_TO_MINUS_64 = 2.0**64, 2.0**-64
_SIGN = np.uint64(1 << 63)
_BYTE = np.uint64(255)


@numba.njit(cache=True, nogil=True)
def _direct_session(x, lab, lo, hi, margin, d):  # pragma: no cover - compiled
    """The reference's pair loop over [lo, hi): (pairs, loss sum); d[k] gets the net active counts."""
    total = 0.0
    pairs = 0
    for k in range(lo, hi):
        d[k] = 0.0
    for i in range(lo, hi):
        for j in range(lo, i):
            if abs(lab[i] - lab[j]) < FLT_EPSILON:
                continue
            top, bottom = (i, j) if lab[i] > lab[j] else (j, i)
            h = margin - (np.float64(x[top]) - np.float64(x[bottom]))  # float32 scores: a float64 difference
            if not h < 0.0:
                total += h
                d[top] -= 1.0
                d[bottom] += 1.0
            pairs += 1
    return pairs, total


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def _row_session(x, lab, lo, hi, margin, d):  # pragma: no cover - compiled
    """Every pair of [lo, hi) row by row, the inner loop branch-free so that it vectorises: (pairs, loss sum).

    The same pair rule and activity test as the reference, in float64 (h rounds exactly as there), for
    finite labels (a NaN label difference would be counted by the reference and skipped here); only the
    order of the loss sum differs. d[k] gets the net active counts.
    """
    for k in range(lo, hi):
        d[k] = 0.0
    total = 0.0
    count = 0.0
    for i in range(lo + 1, hi):
        xi = np.float64(x[i])  # float32 scores: float64 differences, as the reference's
        li = lab[i]
        row_total = 0.0
        row_count = 0.0
        row_d = 0.0
        xs, ls, ds = x[lo:i], lab[lo:i], d[lo:i]
        # arithmetic on 0/1 flags instead of selects, so that LLVM vectorises the loop (3x); sign is +1 when
        # item i is the higher-labelled one, and diff * sign (exact) is x_hi - x_lo
        for j in range(i - lo):
            dl = li - ls[j]
            sign = np.float64(dl > 0.0) * 2.0 - 1.0
            h = margin - (xi - xs[j]) * sign
            counted = np.float64(abs(dl) >= FLT_EPSILON)
            active = counted * np.float64(h >= 0.0)
            row_total += h if active > 0.0 else 0.0  # a select: 0 * inf (huge scores) would be NaN
            row_count += counted
            t = -active * sign
            row_d += t
            ds[j] -= t
        d[i] += row_d
        total += row_total
        count += row_count
    return int(count), total


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def _lane_pairs(xt, lt, dt, tot, cnt, n, b, margin):  # pragma: no cover - compiled
    """Every pair of ``b`` sessions of ``n`` items at once: column k of the (n, >= b) blocks is session k.

    The inner loop runs across sessions, so a pair (i, j) is one full-width vector operation for every
    session of the block: a tiny session's rows (1 .. n - 1 partners) would leave the vector lanes
    mostly idle. The pair rule, the float64 activity test and the select are _row_session's. tot[k]: the
    loss sum, cnt[k]: the discordant pairs, dt[i, k]: the net active counts of item i.
    """
    for k in range(b):
        tot[k] = 0.0
        cnt[k] = 0.0
    for i in range(n):
        for k in range(b):
            dt[i, k] = 0.0
    for i in range(1, n):
        xi, li, di = xt[i], lt[i], dt[i]
        for j in range(i):
            xj, lj, dj = xt[j], lt[j], dt[j]
            for k in range(b):
                dl = li[k] - lj[k]
                sign = 1.0 if dl > 0.0 else -1.0
                h = margin - (xi[k] - xj[k]) * sign
                counted = abs(dl) >= FLT_EPSILON
                active = counted & (h >= 0.0)
                tot[k] += h if active else 0.0
                # 1 or 0 without a select, which LLVM turns into a masked store (microcoded on AMD):
                # |dl| >= 2^-23 exactly when |dl| * 2^23 >= 1 (a power of two scales exactly)
                cnt[k] += np.floor(min(abs(dl) * _INV_FLT_EPSILON, 1.0))
                t = sign if active else 0.0
                di[k] -= t
                dj[k] += t


@numba.njit(cache=True, nogil=True)
def _lane_block(x, lab, offsets, block, n, margin, xt, lt, dt, tot, cnt, los, pairs, sums,
                d):  # pragma: no cover - compiled
    """The sessions ``block`` (each of ``n`` items) side by side: gathered into columns, _lane_pairs,
    and pairs[s], sums[s] and d (the gradient for Y_grad = 1) written back. ``los``: _LANES of scratch."""
    b = block.size
    width = min(_LANES, (b + _LANE_STEP - 1) // _LANE_STEP * _LANE_STEP)
    for k in range(b):
        los[k] = offsets[block[k]]
    # session by session, so that the call's arrays are read and written in contiguous runs (the block's
    # columns stay in L1): 8-16 % faster than item by item across the block at 10-40 items
    for k in range(b):
        lo = los[k]
        for i in range(n):
            xt[i, k] = np.float64(x[lo + i])  # float32 scores: float64 differences, as the reference's
            lt[i, k] = lab[lo + i]
    # a partial block is padded with sessions of tied labels (no pair) to a multiple of _LANE_STEP: the
    # vector loop takes 16 lanes a step (AVX2), and the rest would run in its scalar remainder (12
    # sessions of 40 items: 1.6x slower than 16)
    for i in range(n):
        for k in range(b, width):
            xt[i, k] = 0.0
            lt[i, k] = 0.0
    _lane_pairs(xt, lt, dt, tot, cnt, n, width, margin)
    for k in range(b):
        s, lo, p = block[k], los[k], cnt[k]
        pairs[s] = np.int64(p)
        sums[s] = tot[k]
        scale = 1.0 / p if p > 0.0 else 0.0  # no pair: every count is 0
        for i in range(n):
            d[lo + i] = dt[i, k] * scale


@numba.njit(cache=True, nogil=True)
def _lane_groups(lens, big):  # pragma: no cover - compiled
    """The sessions that go side by side, grouped by size: (their ids, ordered by size; the bounds of their
    blocks in that order, each block at most _LANES sessions of one size; the other sessions that are not
    ``big``, in order). A size takes the lanes only when at least _LANES_MIN sessions have it (fewer would
    leave the lanes idle: a mini-batch of mixed sizes stays with the rows)."""
    # four histograms, one per session modulo 4: sessions of one size would otherwise wait on each other's
    # increment of one counter (1e5 sessions of 10 items: the whole grouping 0.69 -> 0.41 ms)
    by_residue = np.zeros((4, _LANES_MAX + 2), np.int64)
    for s in range(lens.size):
        if 2 <= lens[s] <= _LANES_MAX:
            by_residue[s & 3, lens[s] + 1] += 1
    by_size = by_residue[0] + by_residue[1] + by_residue[2] + by_residue[3]
    n_blocks = 0
    for n in range(2, _LANES_MAX + 1):
        if by_size[n + 1] < _LANES_MIN:
            by_size[n + 1] = 0
        n_blocks += (by_size[n + 1] + _LANES - 1) // _LANES
    for n in range(1, _LANES_MAX + 2):
        by_size[n] += by_size[n - 1]
    grouped = np.empty(by_size[_LANES_MAX + 1], np.int64)
    rest = np.empty(lens.size - grouped.size, np.int64)
    fill = by_size.copy()
    r = 0
    for s in range(lens.size):
        n = lens[s]
        if 2 <= n <= _LANES_MAX and by_size[n + 1] > by_size[n]:
            grouped[fill[n]] = s
            fill[n] += 1
        elif not big[s]:
            rest[r] = s
            r += 1
    blocks = np.empty(n_blocks + 1, np.int64)
    b = 0
    for n in range(2, _LANES_MAX + 1):
        for start in range(by_size[n], by_size[n + 1], _LANES):
            blocks[b] = start
            b += 1
    blocks[n_blocks] = grouped.size
    return grouped, blocks, rest[:r]


@numba.njit(cache=True, parallel=True, nogil=True)
def _lane_loop(x, lab, offsets, grouped, blocks, margin, n_chunks, pairs, sums, d):  # pragma: no cover
    """The blocks of _lane_groups, ``n_chunks`` contiguous runs of them in parallel (_lane_block)."""
    n_blocks = blocks.size - 1
    for c in numba.prange(n_chunks):
        xt, lt, dt = np.empty((_LANES_MAX, _LANES)), np.empty((_LANES_MAX, _LANES)), np.empty((_LANES_MAX, _LANES))
        tot, cnt, los = np.empty(_LANES), np.empty(_LANES), np.empty(_LANES, np.int64)
        for b in range(c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks):
            block = grouped[blocks[b]:blocks[b + 1]]
            n = offsets[block[0] + 1] - offsets[block[0]]
            _lane_block(x, lab, offsets, block, n, margin, xt, lt, dt, tot, cnt, los, pairs, sums, d)


@numba.njit(cache=True, nogil=True, inline="always")
def _two_sum(total, comp, term):  # pragma: no cover - compiled
    """total + term, with what the addition rounded away added to comp (Knuth's TwoSum: no branch)."""
    t = total + term
    back = t - total
    comp += (total - (t - back)) + (term - back)
    return t, comp


@numba.njit(cache=True, nogil=True)
def _integer_grades(lab, grade, counts):  # pragma: no cover - compiled
    """grade[k] = lab[k] and counts[g] = #items of grade g when every label is an integer in [0, _GRADES).

    Returns (ok, grades used, label-discordant pairs); ok is False (and the rest meaningless) otherwise.
    Distinct integers are at least 1 apart, so "discordant" is simply "different grade".
    """
    n = lab.size
    ok = True
    top = 0
    for k in range(n):  # branch-free, so that it vectorises: the labels are almost always grades
        v = lab[k]
        inside = (v >= 0.0) & (v < _GRADES)
        g = np.int32(v) if inside else np.int32(0)
        ok &= inside & (g == v)
        grade[k] = g
        top = max(top, g)
    if not ok:
        return False, 0, 0
    used = top + 1 if n else 0
    if used <= _COUNTED_BY_COMPARISON:  # a vectorised count per grade (an increment per item waits on the last)
        for g in range(used):
            c = 0
            for k in range(n):
                c += grade[k] == g
            counts[g] = c
    else:
        counts[:used] = 0
        for k in range(n):
            counts[grade[k]] += 1
    tied = 0
    for g in range(used):
        tied += counts[g] * counts[g]
    return True, used, (n * n - tied) // 2


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def _lower_grade_rows(xs, lim, margin, ds):  # pragma: no cover - compiled
    """Items in grade order; item p against its lower-graded partners, the prefix [0, lim[p]).

    A pair is active when fl(x_hi - x_lo) <= margin, which is the reference's h = margin - (x_hi - x_lo)
    >= 0 (rounding is monotone and margin is finite). ds[j] += 1 per active pair with j the lower item,
    ds[p] -= 1 per active pair with p the higher one (``ds`` int64: integer counts, which cost less than
    float64 ones). Returns the active pairs. The inner loop is four vector operations a pair (subtract,
    compare, two adds) and no tie test: it is only ever given discordant pairs. Items of one grade share
    their prefix, so rows go four at a time where four consecutive items have one grade: each partner is
    loaded, and its count updated, once for four rows (n = 100: 10 against 7 ns an item).
    """
    active = 0
    n = xs.size
    p = 0
    while p < n:
        m = lim[p]
        if p + 4 <= n and lim[p + 3] == m:  # lim never falls, so rows p .. p + 3 all end at m
            x0, x1, x2, x3 = xs[p], xs[p + 1], xs[p + 2], xs[p + 3]
            r0, r1, r2, r3 = np.int64(0), np.int64(0), np.int64(0), np.int64(0)
            for j in range(m):
                xj = xs[j]
                a0 = np.int64(x0 - xj <= margin)
                a1 = np.int64(x1 - xj <= margin)
                a2 = np.int64(x2 - xj <= margin)
                a3 = np.int64(x3 - xj <= margin)
                r0 += a0
                r1 += a1
                r2 += a2
                r3 += a3
                ds[j] += (a0 + a1) + (a2 + a3)
            ds[p] -= r0
            ds[p + 1] -= r1
            ds[p + 2] -= r2
            ds[p + 3] -= r3
            active += (r0 + r1) + (r2 + r3)
            p += 4
        else:
            xp = xs[p]
            row = np.int64(0)
            for j in range(m):
                a = np.int64(xp - xs[j] <= margin)
                row += a
                ds[j] += a
            ds[p] -= row
            active += row
            p += 1
    return active


@numba.njit(cache=True, nogil=True, inline="always")
def _place_and_scaled_sum(net, xs, order, center, base, d, scale):  # pragma: no cover - compiled
    """d[order[p]] = net[p] and (base + sum_p net[p] (xs[p] - center)) * scale, compensated (TwoSum);
    ``scale`` a power of two, applied to every score and to ``base`` (exactly, unless a term underflows).

    The sum runs as four independent compensated chains (the four quarters of the places), joined at the
    end: one chain's four dependent additions a term had bound the loop.
    """
    n = net.size
    m = n // 4
    c = center * scale
    t0, c0, t1, c1, t2, c2, t3, c3 = base * scale, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for p in range(m):
        q1, q2, q3 = p + m, p + 2 * m, p + 3 * m
        n0, n1, n2, n3 = np.float64(net[p]), np.float64(net[q1]), np.float64(net[q2]), np.float64(net[q3])
        d[order[p]] = n0
        d[order[q1]] = n1
        d[order[q2]] = n2
        d[order[q3]] = n3
        t0, c0 = _two_sum(t0, c0, n0 * (xs[p] * scale - c))
        t1, c1 = _two_sum(t1, c1, n1 * (xs[q1] * scale - c))
        t2, c2 = _two_sum(t2, c2, n2 * (xs[q2] * scale - c))
        t3, c3 = _two_sum(t3, c3, n3 * (xs[q3] * scale - c))
    for p in range(4 * m, n):
        n3 = np.float64(net[p])
        d[order[p]] = n3
        t3, c3 = _two_sum(t3, c3, n3 * (xs[p] * scale - c))
    t0, c0 = _two_sum(t0, c0, t1)
    t2, c2 = _two_sum(t2, c2, t3)
    t0, c0 = _two_sum(t0, c0, t2)
    return t0 + ((c0 + c1) + (c2 + c3))


@numba.njit(cache=True, nogil=True)
def _place_and_sum(net, xs, order, center, base, d):  # pragma: no cover - compiled
    """d[order[p]] = net[p] and base + sum_p net[p] (xs[p] - center), compensated.

    With scores near the float64 limit a term can overflow where the loss does not, and +inf and -inf
    terms would make it NaN; the sum is then redone with every term scaled by 2^-64, which cannot
    overflow (|net| < 2^31), and scaled back: +inf exactly when the loss overflows, as the reference.
    """
    total = _place_and_scaled_sum(net, xs, order, center, base, d, 1.0)
    if not np.isfinite(total):
        total = _place_and_scaled_sum(net, xs, order, center, base, d, _TWO_TO_MINUS_64) * _TWO_TO_64
    return total


@numba.njit(cache=True, nogil=True)
def _graded_rows_session(x, lab, margin, d, grade, counts, first, order, xs, lim,
                         ds):  # pragma: no cover - compiled
    """One session of integer grades, pair by pair in grade order: (ok, pairs, loss sum); d = net counts.

    Counting-sorted by grade, each item's lower-graded partners are one contiguous prefix, so the pair loop
    visits only discordant pairs and needs no tie or sign logic. The loss is margin * active +
    sum_k d_k (x_k - c), c the midrange, compensated (as the sorted path). Not ok: labels that are not
    integer grades (nothing written). ``counts`` and ``first``: _GRADES int64 of scratch.
    """
    n = x.size
    ok, used, pairs = _integer_grades(lab, grade, counts)
    if not ok:
        return False, 0, 0.0
    start = 0
    for g in range(used):  # counts -> first position of each grade
        c = counts[g]
        counts[g] = start
        first[g] = start
        start += c
    # each item goes straight to its place with its score and its partners' prefix (the lower grades end
    # where its grade starts): one pass, where a scatter of indices and then a gather took two
    low = np.inf
    high = -np.inf
    for k in range(n):
        g = grade[k]
        p = counts[g]
        counts[g] = p + 1
        xk = np.float64(x[k])
        order[p] = k
        xs[p] = xk
        ds[p] = 0
        lim[p] = first[g]
        low = min(low, xk)
        high = max(high, xk)
    active = _lower_grade_rows(xs, lim, margin, ds)
    center = 0.5 * low + 0.5 * high  # the midrange keeps max |x_k - c| (the rounding's scale) smallest
    return True, pairs, _place_and_sum(ds, xs, order, center, margin * active, d)


@numba.njit(cache=True, nogil=True)
def _integer_label_groups(lab, rank, below_end, above_start, counts):  # pragma: no cover - compiled
    """_label_groups for integer grades, without sorting the labels: each grade is a group (an unused
    grade an empty one), above the grades under it and below those over it."""
    ok, used, pairs = _integer_grades(lab, rank, counts)
    if ok:
        for g in range(used):
            below_end[g] = g
            above_start[g] = g + 1
    return ok, used, pairs


@numba.njit(cache=True, nogil=True, inline="always")
def _bucket_starts(hist, p, first_shifted, n):  # pragma: no cover - compiled
    """Byte pass p of an LSD radix sort: hist[p] (counts per byte value) becomes each bucket's first place.
    False, and nothing changed, when every key has the first key's byte (``first_shifted``, the first key
    shifted to this byte): the pass would not move anything."""
    if hist[p, first_shifted & _BYTE] == n:
        return False
    start = 0
    for b in range(256):
        c = hist[p, b]
        hist[p, b] = start
        start += c
    return True


@numba.njit(cache=True, nogil=True)
def _radix_argsort(values, keys, kbuf, idx, ibuf, hist):  # pragma: no cover - compiled
    """Stable ascending sort of ``values``: keys[p] = the p-th smallest value, idx[p] = its index.

    ``keys``/``kbuf`` (float64) and ``idx``/``ibuf`` (int32) have the length of ``values``; ``hist`` is
    (8, 256) int64. Returns False (and sorts nothing) when a value is not finite.
    """
    n = values.size
    src = values.view(np.uint64)
    ku = keys.view(np.uint64)
    bu = kbuf.view(np.uint64)
    hist[:, :] = 0
    for k in range(n):
        if not np.isfinite(values[k]):
            return False
        u = src[k]
        # 2^63 +- magnitude: negatives reversed below positives, and the low zero bits of a float32-exact
        # value stay zero on both sides, so those bytes' passes are skipped (5 passes instead of 8)
        u = _SIGN - (u ^ _SIGN) if u & _SIGN else u | _SIGN
        ku[k] = u
        idx[k] = k
        for p in range(8):
            hist[p, (u >> np.uint64(8 * p)) & _BYTE] += 1
    src_k, src_i, dst_k, dst_i = ku, idx, bu, ibuf
    swapped = False
    for p in range(8):
        shift = np.uint64(8 * p)
        if not _bucket_starts(hist, p, src_k[0] >> shift, n):
            continue
        for k in range(n):
            u = src_k[k]
            b = (u >> shift) & _BYTE
            pos = hist[p, b]
            hist[p, b] = pos + 1
            dst_k[pos] = u
            dst_i[pos] = src_i[k]
        src_k, src_i, dst_k, dst_i = dst_k, dst_i, src_k, src_i
        swapped = not swapped
    if swapped:
        ku[:] = bu
        idx[:] = ibuf
    for k in range(n):
        u = ku[k]
        ku[k] = u ^ _SIGN if u >= _SIGN else (_SIGN - u) | _SIGN  # -0.0 comes back as +0.0
    return True


_TOP32 = np.uint32(1 << 31)
_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _pack32(bits, packed, lo, hi, hist):  # pragma: no cover - compiled
    """packed[k] = (32-bit order key of bits[k]) << 32 | k for k in [lo, hi), and hist[p, b] = how many of
    them have byte b in byte p of their key (hist (>= 4, 256) int64, overwritten)."""
    hist[:4, :] = 0
    for k in range(lo, hi):
        u = bits[k]
        key = ~u if u & _TOP32 else u | _TOP32  # negatives reversed below positives; -0.0 just below +0.0
        packed[k] = (np.uint64(key) << np.uint64(32)) | np.uint64(k)
        for p in range(4):
            hist[p, (key >> np.uint32(8 * p)) & np.uint32(255)] += 1


@numba.njit(cache=True, nogil=True)
def _radix_argsort32(bits, values, keys, idx, packed, pbuf, hist):  # pragma: no cover - compiled
    """_radix_argsort for float32 values: ``bits`` their float32 bit patterns (uint32), ``values`` the
    same numbers as float64 (what ``keys`` receives, in order).

    Each item moves as one uint64, its 32-bit order key above its index, through four byte passes at
    most: 8 bytes an item a pass where the float64 sort moves 12 (key and index) through five (n = 10,000:
    12 against 7 ns an item). ``packed``/``pbuf`` are uint64 of the session's length, ``hist`` (>= 4, 256)
    int64. The scores were checked finite beforehand.
    """
    n = bits.size
    if n == 0:
        return
    _pack32(bits, packed, 0, n, hist)
    src, dst = packed, pbuf
    for p in range(4):
        shift = np.uint64(32 + 8 * p)
        if not _bucket_starts(hist, p, src[0] >> shift, n):
            continue
        for k in range(n):
            e = src[k]
            b = (e >> shift) & _BYTE
            pos = hist[p, b]
            hist[p, b] = pos + 1
            dst[pos] = e
        src, dst = dst, src
    for k in range(n):
        i = np.int32(src[k] & _LOW32)
        idx[k] = i
        keys[k] = values[i]


@numba.njit(cache=True, nogil=True)
def _label_groups(lab, keys, kbuf, idx, ibuf, hist, rank, below_end, above_start):  # pragma: no cover
    """Group equal labels and find, per group, which groups it forms pairs with: (ok, groups, pairs).

    rank[k] is item k's group (groups in ascending label order). The tie rule |l_i - l_j| < 2^-23 is not
    transitive, so instead of "other groups" each group g gets the groups it is *above*, 0..below_end[g]-1
    (fl(v_g - v_h) >= 2^-23), and the groups it is *below*, above_start[g].. (fl(v_h - v_g) >= 2^-23):
    both are runs because fl(a - b) is monotone in a and b. Found with two pointers; ok is False only for
    non-finite labels. ``pairs`` counts the label-discordant pairs.
    """
    n = lab.size
    if not _radix_argsort(lab, keys, kbuf, idx, ibuf, hist):
        return False, 0, 0
    group = 0
    rank[idx[0]] = 0
    for p in range(1, n):
        if keys[p] != keys[p - 1]:
            group += 1
        rank[idx[p]] = group
    n_groups = group + 1
    pairs = 0
    down = 0  # positions [0, down) are at least 2^-23 below position p
    up = 0  # positions [up, n) are at least 2^-23 above position p
    group = -1
    for p in range(n):
        if p == 0 or keys[p] != keys[p - 1]:
            group += 1
            while keys[p] - keys[down] >= FLT_EPSILON:  # stops at p at the latest: 0 < 2^-23
                down += 1
            below_end[group] = rank[idx[down]]
            while up < n and keys[up] - keys[p] < FLT_EPSILON:
                up += 1
            above_start[group] = rank[idx[up]] if up < n else n_groups
        pairs += down
    return True, n_groups, pairs


@numba.njit(cache=True, nogil=True)
def _sweep_above(xs, rks, below_end, n_groups, margin, fen, count):  # pragma: no cover - compiled
    """count[p] = #lower-labelled partners j of the p-th item in score order with fl(x_p - x_j) <= margin.

    Going down in score, the active partners of an item are the suffix of the score order where
    fl(x_p - x_j) <= margin, and that suffix only grows: each item enters the Fenwick tree (a count per
    label group) once, and each item asks it how many entries lie in the groups it is above. Returns the
    total.
    """
    n = xs.size
    fen[:n_groups] = 0
    q = n
    active = 0
    for p in range(n - 1, -1, -1):
        xp = xs[p]
        while q > 0 and xp - xs[q - 1] <= margin:
            q -= 1
            i = rks[q] + 1
            while i <= n_groups:
                fen[i - 1] += 1
                i += i & -i
        below = 0
        i = below_end[rks[p]]  # groups 0 .. below_end - 1
        while i > 0:
            below += fen[i - 1]
            i -= i & -i
        count[p] = below
        active += below
    return active


@numba.njit(cache=True, nogil=True)
def _sweep_below(xs, rks, above_start, n_groups, margin, fen, count):  # pragma: no cover - compiled
    """count[p] = #higher-labelled partners j of the p-th item with fl(x_j - x_p) <= margin (a prefix)."""
    n = xs.size
    fen[:n_groups] = 0
    q = 0
    for p in range(n):
        xp = xs[p]
        while q < n and xs[q] - xp <= margin:
            i = rks[q] + 1
            while i <= n_groups:
                fen[i - 1] += 1
                i += i & -i
            q += 1
        not_above = 0
        i = above_start[rks[p]]  # entries in groups before above_start are not above this item
        while i > 0:
            not_above += fen[i - 1]
            i -= i & -i
        count[p] = q - not_above


@numba.njit(cache=True, nogil=True)
def _combine(xs, order, margin, active, above, below, d):  # pragma: no cover - compiled
    """d = below - above (by item); loss sum = margin * active + sum d_k (x_k - median), compensated.
    ``below`` is overwritten with the net counts."""
    n = xs.size
    for p in range(n):
        below[p] -= above[p]
    return _place_and_sum(below, xs, order, xs[n // 2], margin * active, d)


@numba.njit(cache=True, nogil=True)
def _gather_ranks(order, rank, rks):  # pragma: no cover - compiled
    for p in range(order.size):
        rks[p] = rank[order[p]]


@numba.njit(cache=True, nogil=True)
def _prefix_rows(rks, w, table, q0, q1):  # pragma: no cover - compiled
    """Rows q0 + 1 .. q1 of _table_sweeps' table from its row q0: table[q * w + g] counts the first q items
    in score order whose group (``rks``) is below g."""
    for q in range(q0, q1):
        gq = rks[q]
        base = q * w
        for g in range(w):
            table[base + w + g] = table[base + g] + (g > gq)


@numba.njit(cache=True, nogil=True)
def _first_failing(xs, xp, margin, above_xp):  # pragma: no cover - compiled
    """The first place where _sweep_range's low (``above_xp`` False: xp - xs[k] > margin) or high (True:
    xs[k] - xp <= margin) test fails, by bisection; the same test in the same float64 arithmetic, which is
    monotone in k, so it is where the pointer would stop. The +inf sentinels fail both tests."""
    a, b = 0, xs.size - 1
    while a < b:
        m = (a + b) // 2
        holds = xs[m] - xp <= margin if above_xp else xp - xs[m] > margin
        if holds:
            a = m + 1
        else:
            b = m
    return a


@numba.njit(cache=True, nogil=True)
def _sweep_range(xs, rks, w, below_end, above_start, margin, table, above, below, p0, p1):  # pragma: no cover
    """above[p], below[p] for the items p0 <= p < p1 in score order, from the table of _prefix_rows; returns
    their active pairs (as their lower items). The runs' ends move forward by a count of the next _WINDOW
    tests (they hold for a prefix of them, the tests being monotone), which is branch-free: a pointer that
    steps one item at a time mispredicts about once an item. They start where item p0's tests fail, so a
    range gives what the whole sweep gives its items."""
    n = rks.size
    low = _first_failing(xs, xs[p0], margin, False) if p0 else 0  # [0, low): too far below to pair with p
    high = _first_failing(xs, xs[p0], margin, True) if p0 else 0  # [0, high): close enough above (or below)
    active = 0
    for p in range(p0, p1):
        xp = xs[p]
        step = _WINDOW
        while step == _WINDOW:
            step = 0
            for k in range(_WINDOW):
                step += xp - xs[low + k] > margin
            low += step
        step = _WINDOW
        while step == _WINDOW:
            step = 0
            for k in range(_WINDOW):
                step += xs[high + k] - xp <= margin
            high += step
        g = rks[p]
        lower = below_end[g]
        a = table[n * w + lower] - table[low * w + lower]
        above[p] = a
        below[p] = high - table[high * w + above_start[g]]
        active += a
    return active


@numba.njit(cache=True, nogil=True)
def _table_sweeps(xs, rks, n_groups, below_end, above_start, margin, table, above, below):  # pragma: no cover
    """Both sweeps at once for at most _GRADES groups: above[p], below[p] as _sweep_above/_sweep_below.

    ``xs`` holds the n sorted scores and then _WINDOW +inf. table[q * w + g] (w = n_groups + 1) counts the
    first q items in score order whose group is below g, so each item's partners in a run of the score
    order are two table reads, not a tree walk (_sweep_range). Returns the active pairs.
    """
    w = n_groups + 1
    for g in range(w):
        table[g] = 0
    _prefix_rows(rks, w, table, 0, rks.size)
    return _sweep_range(xs, rks, w, below_end, above_start, margin, table, above, below, 0, rks.size)


@numba.njit(cache=True, nogil=True)
def _sorted_session(x, bits, lab, margin, d, keys, kbuf, idx, ibuf, rank, gbelow, gabove, fen, above, below, hist,
                    counts, table, pbuf):  # pragma: no cover - compiled
    """One session by sorting, serially: (ok, pairs, loss sum); not ok means "use the pair loop".

    ``keys`` has _WINDOW entries more than the session (the sentinels of _table_sweeps), ``table`` at
    least (n + 1) * (_GRADES + 1). ``bits``: the scores' float32 bit patterns when they are float32 numbers
    (sorted by _radix_argsort32, with ``kbuf`` and ``pbuf`` as its uint64 scratch), else empty.
    """
    n = x.size
    ok, n_groups, pairs = _integer_label_groups(lab, rank, gbelow, gabove, counts)
    if not ok:
        ok, n_groups, pairs = _label_groups(lab, keys[:n], kbuf, idx, ibuf, hist, rank, gbelow, gabove)
    if not ok:
        return False, 0, 0.0
    if bits.size:
        _radix_argsort32(bits, x, keys[:n], idx, kbuf.view(np.uint64), pbuf, hist)
    elif not _radix_argsort(x, keys[:n], kbuf, idx, ibuf, hist):
        return False, 0, 0.0
    _gather_ranks(idx, rank, ibuf)
    if n_groups <= _GRADES:
        keys[n:] = np.inf
        active = _table_sweeps(keys, ibuf, n_groups, gbelow, gabove, margin, table, above, below)
    else:
        active = _sweep_above(keys[:n], ibuf, gbelow, n_groups, margin, fen, above)
        _sweep_below(keys[:n], ibuf, gabove, n_groups, margin, fen, below)
    total = _combine(keys[:n], idx, margin, active, above, below, d)
    return True, pairs, total


@numba.njit(cache=True, nogil=True)
def _to_unit(d, lo, hi, pairs):  # pragma: no cover - compiled
    """Net active counts -> the gradient for Y_grad = 1 (d / |P|), while the session is in cache."""
    if pairs == 0:
        return
    p = np.float64(pairs)
    for k in range(lo, hi):
        d[k] = d[k] / p


@numba.njit(cache=True, parallel=True, nogil=True)
def _sessions_loop(x, bits, lab, offsets, sessions, margin, n_chunks, pairs, sums, d):  # pragma: no cover
    """The listed sessions, ``n_chunks`` contiguous groups of them in parallel: pairs[s], sums[s], d.
    ``x``: the scores, float64 or float32 (every path reads them as float64); ``bits``: float32 scores'
    bit patterns (_sorted_session), or empty. The labels are finite (prepare_sessions refuses others)."""
    for c in numba.prange(n_chunks):
        first, last = c * sessions.size // n_chunks, (c + 1) * sessions.size // n_chunks
        longest = 0
        for t in range(first, last):
            longest = max(longest, offsets[sessions[t] + 1] - offsets[sessions[t]])
        # scratch per chunk, as long as its longest session: every session reuses the same (cached) memory
        keys, kbuf = np.empty(longest + _WINDOW), np.empty(longest)
        table = np.empty((longest + 1) * (_GRADES + 1) if longest > _DIRECT_MAX else 0, np.int32)
        idx, ibuf, rank = np.empty(longest, np.int32), np.empty(longest, np.int32), np.empty(longest, np.int32)
        gbelow, gabove = np.empty(longest, np.int32), np.empty(longest, np.int32)
        fen, above, below = np.empty(longest, np.int32), np.empty(longest, np.int32), np.empty(longest, np.int32)
        hist = np.empty((8, 256), np.int64)
        counts, grade_first = np.empty(_GRADES, np.int64), np.empty(_GRADES, np.int64)
        net = np.empty(min(longest, _ROWS_MAX), np.int64)
        pbuf = np.empty(longest if bits.size and longest > _DIRECT_MAX else 0, np.uint64)
        for t in range(first, last):
            s = sessions[t]
            lo, hi = offsets[s], offsets[s + 1]
            n = hi - lo
            ok = False
            if _GRADED_MIN <= n <= _ROWS_MAX:
                ok, pairs[s], sums[s] = _graded_rows_session(
                    x[lo:hi], lab[lo:hi], margin, d[lo:hi], rank[:n], counts, grade_first, idx[:n], keys[:n],
                    ibuf[:n], net[:n])
            if ok:
                pass
            elif n <= _ROWS_MAX:
                pairs[s], sums[s] = _row_session(x, lab, lo, hi, margin, d)
                ok = True
            elif n > _DIRECT_MAX:
                ok, pairs[s], sums[s] = _sorted_session(
                    x[lo:hi], bits[lo:hi] if bits.size else bits, lab[lo:hi], margin, d[lo:hi], keys[:n + _WINDOW],
                    kbuf[:n], idx[:n], ibuf[:n], rank[:n], gbelow[:n], gabove[:n], fen[:n], above[:n], below[:n],
                    hist, counts, table, pbuf[:n] if bits.size else pbuf)
            if not ok:
                pairs[s], sums[s] = _direct_session(x, lab, lo, hi, margin, d)
            _to_unit(d, lo, hi, pairs[s])


@numba.njit(cache=True, nogil=True, inline="always")
def _half(n, t):  # pragma: no cover - compiled
    """Items [lo, hi) of half t (0 or 1) of n: the first n // 2, then the rest."""
    return t * (n // 2), n // 2 + t * (n - n // 2)


@numba.njit(cache=True, parallel=True, nogil=True)
def _integer_grades_halves(lab, grade):  # pragma: no cover - compiled
    """_integer_grades of one session, its two halves on two threads: (ok, grades used, pairs)."""
    n = lab.size
    counts = np.zeros((2, _GRADES), np.int64)
    oks = np.zeros(2, np.bool_)
    used = np.zeros(2, np.int64)
    for t in numba.prange(2):
        lo, hi = _half(n, t)
        oks[t], used[t], _ = _integer_grades(lab[lo:hi], grade[lo:hi], counts[t])
    if not (oks[0] and oks[1]):
        return False, 0, 0
    top = max(used[0], used[1])
    tied = 0
    for g in range(top):
        c = (counts[0, g] if g < used[0] else 0) + (counts[1, g] if g < used[1] else 0)
        tied += c * c
    return True, top, (n * n - tied) // 2


@numba.njit(cache=True, nogil=True)
def _scatter_pass(src, dst, lo, hi, shift, starts, next_shift, mid, next_counts):  # pragma: no cover
    """One thread's part of a byte pass of _radix_argsort32_halves: src[lo:hi] into dst by the byte at
    ``shift`` from this thread's bucket starts, counting as it goes each half of dst ([0, mid), [mid, n))
    by the byte at ``next_shift``: next_counts[half * 256 + byte], the next pass's halves, with no pass to
    count them (flat: a two-dimensional count here ran 4x slower)."""
    for k in range(lo, hi):
        e = src[k]
        b = (e >> shift) & _BYTE
        pos = starts[b]
        starts[b] = pos + 1
        dst[pos] = e
        next_counts[(np.int64(pos >= mid) << 8) | np.int64((e >> next_shift) & _BYTE)] += 1


@numba.njit(cache=True, parallel=True, nogil=True)
def _radix_argsort32_halves(bits, values, keys, idx, buf):  # pragma: no cover - compiled
    """_radix_argsort32 on two threads, ``buf`` (2, n) uint64 scratch: each pass, each thread moves one half
    of the items, the first half's items ahead of the second's within a bucket, so the sort stays stable
    and gives the serial order."""
    n = bits.size
    mid = n // 2
    hists = np.empty((2, 4, 256), np.int64)
    for t in numba.prange(2):
        lo, hi = _half(n, t)
        _pack32(bits, buf[0], lo, hi, hists[t])
    moves = np.zeros(4, np.bool_)
    for p in range(4):
        b = (buf[0, 0] >> np.uint64(32 + 8 * p)) & _BYTE
        moves[p] = hists[0, p, b] + hists[1, p, b] != n
    halves = np.empty((2, 256), np.int64)  # this pass's count of each byte in each half of its source
    starts = np.empty((2, 256), np.int64)
    next_counts = np.zeros((2, 512), np.int64)  # [thread, half of the destination * 256 + byte of the next pass]
    cur = 0
    counted = False
    for p in range(4):
        if not moves[p]:
            continue
        for h in range(2):
            for b in range(256):
                halves[h, b] = next_counts[0, 256 * h + b] + next_counts[1, 256 * h + b] if counted else hists[h, p, b]
        start = 0
        for b in range(256):
            starts[0, b] = start
            start += halves[0, b]
            starts[1, b] = start
            start += halves[1, b]
        q = p + 1
        while q < 4 and not moves[q]:
            q += 1
        next_shift = np.uint64(32 + 8 * (q if q < 4 else 0))
        next_counts[:, :] = 0
        for t in numba.prange(2):
            lo, hi = _half(n, t)
            _scatter_pass(buf[cur], buf[1 - cur], lo, hi, np.uint64(32 + 8 * p), starts[t], next_shift, mid,
                          next_counts[t])
        cur = 1 - cur
        counted = True
    for t in numba.prange(2):
        lo, hi = _half(n, t)
        for k in range(lo, hi):
            i = np.int32(buf[cur, k] & _LOW32)
            idx[k] = i
            keys[k] = values[i]


@numba.njit(cache=True, nogil=True)
def _gather_grades(order, lab, rks):  # pragma: no cover - compiled
    """rks[p] = the grade of the p-th item in score order (labels known to be integer grades)."""
    for p in range(order.size):
        rks[p] = np.int32(lab[order[p]])


@numba.njit(cache=True, parallel=True, nogil=True)
def _table_sweeps_halves(xs, order, lab, n_groups, margin, rks, table, above, below):  # pragma: no cover - compiled
    """_table_sweeps for integer grades (group = grade = the label) on two threads, ``order`` the score
    order, ``rks`` (n) and ``table`` ((n + 1) * (n_groups + 1)) int32 scratch: the grades in score order and
    the table's rows in two halves (the second from a count of the first's grades), then the sweep in two
    halves of the items. Returns the active pairs."""
    n = order.size
    w = n_groups + 1
    below_end = np.arange(w, dtype=np.int32)
    above_start = below_end + 1
    for t in numba.prange(2):
        lo, hi = _half(n, t)
        _gather_grades(order[lo:hi], lab, rks[lo:hi])
    # thread 0 writes rows 1 .. m - 1 (w counts an item), thread 1 counts the first m items and writes rows
    # m .. n: m balances the two when a count costs about one row entry
    m = max(1, n * w // (2 * w - 1))
    for t in numba.prange(2):
        if t == 0:
            table[:w] = 0
            _prefix_rows(rks, w, table, 0, m - 1)
        else:
            counts = np.zeros(w, np.int64)
            for q in range(m):
                counts[rks[q]] += 1
            below_m = 0
            for g in range(w):
                table[m * w + g] = below_m
                below_m += counts[g]
            _prefix_rows(rks, w, table, m, n)
    active = np.zeros(2, np.int64)
    for t in numba.prange(2):
        lo, hi = _half(n, t)
        active[t] = _sweep_range(xs, rks, w, below_end, above_start, margin, table, above, below, lo, hi)
    return active[0] + active[1]


# scratch of a large session's sort and sweeps (200,000 items: 7.7 -> 5.0 ms kept, against fresh pages), and
# the float64 copy of the labels of a call (which never outlives it)
_SESSION_SCRATCH = KeptScratch(64 << 20)
_LABEL_SCRATCH = KeptScratch(64 << 20)


def _graded_big_session(x: np.ndarray, bits: np.ndarray, lab: np.ndarray, margin: float, d: np.ndarray,
                        two_threads: bool) -> tuple[bool, int, float]:
    """One large session with integer grades: (ok, pairs, loss sum); not ok (labels that are not grades, or
    a float64 score that is not finite) means "use another path". ``two_threads``: every step in two
    halves of the items on two threads, bit for bit the serial result (the loss is summed serially);
    otherwise the serial kernels. Either way in one block of scratch kept for the next call (_SESSION_SCRATCH)."""
    n = x.size
    # one block: keys (n + _WINDOW float64), the sort's two uint64 buffers (which the float64 sort's scratch
    # and then the ranks and counts reuse), the order (first the grades, which nothing needs afterwards),
    # the table
    head = 8 * (n + _WINDOW) + 16 * n
    grades = _SESSION_SCRATCH.take(head + 4 * n)[head:head + 4 * n].view(np.int32)
    if two_threads:
        ok, n_groups, pairs = _integer_grades_halves(lab, grades)
    else:
        ok, n_groups, pairs = _integer_grades(lab, grades, np.empty(_GRADES, np.int64))
    if not ok:
        return False, 0, 0.0
    w = n_groups + 1
    block = _SESSION_SCRATCH.take(head + 4 * n + 4 * w * (n + 1))
    keys = block[:8 * (n + _WINDOW)].view(np.float64)
    sort_buf = block[8 * (n + _WINDOW):head].view(np.uint64).reshape(2, n)
    idx = block[head:head + 4 * n].view(np.int32)
    table = block[head + 4 * n:head + 4 * n + 4 * w * (n + 1)].view(np.int32)
    if bits.size and two_threads:
        _radix_argsort32_halves(bits, x, keys[:n], idx, sort_buf)
    elif bits.size:
        _radix_argsort32(bits, x, keys[:n], idx, sort_buf[0], sort_buf[1], np.empty((4, 256), np.int64))
    elif not _radix_argsort(x, keys[:n], sort_buf[0].view(np.float64), idx, sort_buf[1].view(np.int32)[:n],
                            np.empty((8, 256), np.int64)):
        return False, 0, 0.0
    keys[n:] = np.inf
    rks, above, below = sort_buf.view(np.int32).reshape(-1)[:3 * n].reshape(3, n)
    if two_threads:
        active = _table_sweeps_halves(keys, idx, lab, n_groups, margin, rks, table, above, below)
    else:
        _gather_grades(idx, lab, rks)
        below_end = np.arange(w, dtype=np.int32)
        active = _table_sweeps(keys, rks, n_groups, below_end, below_end + 1, margin, table, above, below)
    return True, int(pairs), float(_combine(keys[:n], idx, margin, active, above, below, d))


@numba.njit(cache=True, parallel=True, nogil=True)
def _big_session(x, bits, lab, margin, d):  # pragma: no cover - compiled
    """One large session, its two sorts and then its two sweeps on two threads: (ok, pairs, loss sum).
    ``bits`` as _sorted_session's."""
    n = x.size
    pbuf = np.empty(n if bits.size else 0, np.uint64)
    keys, kbuf, lkeys, lkbuf = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    idx, ibuf = np.empty(n, np.int32), np.empty(n, np.int32)
    lidx, libuf = np.empty(n, np.int32), np.empty(n, np.int32)
    rank, fen, fen2 = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int32)
    gbelow, gabove = np.empty(n, np.int32), np.empty(n, np.int32)
    above, below = np.empty(n, np.int32), np.empty(n, np.int32)
    hists = np.empty((2, 8, 256), np.int64)
    flags = np.zeros(2, np.bool_)
    stats = np.zeros(3, np.int64)
    counts = np.empty(_GRADES, np.int64)
    for t in numba.prange(2):
        if t == 0:
            flags[0], stats[0], stats[1] = _integer_label_groups(lab, rank, gbelow, gabove, counts)
            if not flags[0]:
                flags[0], stats[0], stats[1] = _label_groups(lab, lkeys, lkbuf, lidx, libuf, hists[0], rank,
                                                             gbelow, gabove)
        elif bits.size:
            _radix_argsort32(bits, x, keys, idx, kbuf.view(np.uint64), pbuf, hists[1])
            flags[1] = True
        else:
            flags[1] = _radix_argsort(x, keys, kbuf, idx, ibuf, hists[1])
    if not (flags[0] and flags[1]):
        return False, 0, 0.0
    n_groups, pairs = stats[0], stats[1]
    _gather_ranks(idx, rank, ibuf)
    for t in numba.prange(2):
        if t == 0:
            stats[2] = _sweep_above(keys, ibuf, gbelow, n_groups, margin, fen, above)
        else:
            _sweep_below(keys, ibuf, gabove, n_groups, margin, fen2, below)
    total = _combine(keys, idx, margin, stats[2], above, below, d)
    return True, pairs, total


_sessions_loop_serial = serial_twin(_sessions_loop)
_lane_loop_serial = serial_twin(_lane_loop)


def _session_terms(flat: np.ndarray, lab: np.ndarray, lens: np.ndarray, margin: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs per session, loss sum per session, the gradient for Y_grad = 1 per item), all sessions."""
    # float32 (and float16) scores go in as float32, which the kernels widen as they read them (no
    # float64 copy of every score: 0.5 ms at 1e6 items), and sort as 32-bit keys (_radix_argsort32)
    narrow = flat.dtype in (np.float16, np.float32)
    x = np.ascontiguousarray(flat, dtype=np.float32 if narrow else np.float64)
    bits = x.view(np.uint32) if narrow else np.empty(0, np.uint32)
    offsets = session_offsets(lens)
    pairs = np.zeros(lens.size, np.int64)
    sums = np.zeros(lens.size, np.float64)
    d = np.empty(x.size, np.float64)
    threads = numba.get_num_threads()
    # threads need two pieces of work (two sessions with pairs, or one session big enough to split): a lone
    # session on a worker thread only adds the launch, a time slice when loaded
    big = lens >= _PARALLEL_MIN
    worthwhile = x.size >= _SERIAL_ITEMS and (np.count_nonzero(lens >= 2) >= 2 or bool(big.any()))
    with parallel_launch(worthwhile) as parallel:
        # a large session gets the threads to itself only when sessions alone cannot keep them busy, and
        # only when no other process holds their cores: each of its steps ends at a barrier (cores_free_for)
        if parallel and big.sum() >= 2 * threads:
            big[:] = False
        spread = parallel and bool(big.any()) and cores_free_for(threads)
        for s in np.flatnonzero(big):
            lo, hi = int(offsets[s]), int(offsets[s + 1])
            graded, _ = integer_grades(lab, lo, hi, _GRADES)
            if not (spread or graded) or (graded and hi - lo < _GRADED_PARALLEL_MIN):
                big[s] = False  # with the other sessions (a graded one: on one thread its table sweep is as fast)
                continue
            session_bits = bits[lo:hi] if narrow else bits
            if graded:
                # on one thread too: the serial loop's scratch would be fresh pages (1e6 items: 65 -> 28 ms)
                ok, pairs[s], sums[s] = _graded_big_session(x[lo:hi], session_bits, lab[lo:hi], margin,
                                                            d[lo:hi], spread)
            else:
                ok, pairs[s], sums[s] = _big_session(x[lo:hi], session_bits, lab[lo:hi], margin, d[lo:hi])
            if not ok:
                pairs[s], sums[s] = _direct_session(x, lab, lo, hi, margin, d)
            _to_unit(d, lo, hi, pairs[s])
        grouped, blocks, rest = _lane_groups(lens, big)
        if grouped.size:
            n_blocks = blocks.size - 1
            lanes = _lane_loop if parallel and n_blocks >= 2 else _lane_loop_serial
            lanes(x, lab, offsets, grouped, blocks, margin, min(n_blocks, 8 * threads), pairs, sums, d)
        if rest.size:
            # a lone session left to the loop (a graded one under _GRADED_PARALLEL_MIN) is serial anyway
            loop = _sessions_loop if parallel and np.count_nonzero(lens[rest] >= 2) >= 2 else _sessions_loop_serial
            loop(x, bits, lab, offsets, rest, margin, min(rest.size, 8 * threads), pairs, sums, d)
    return pairs, sums, d


def forward_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None, *,
                margin: float) -> np.ndarray:
    x, flat, lab, lens = prepare_finite(scores, labels, lengths, label_scratch=_LABEL_SCRATCH.float64)
    pairs, sums, _ = _session_terms(flat, lab, lens, float(margin))
    out = np.divide(sums, pairs, out=np.zeros(lens.size), where=pairs > 0)  # no pair: loss 0
    return out.astype(x.dtype)


def forward_with_unit_gradient_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None, *,
                                   margin: float) -> FusedForward:
    """(Y, the gradient for Y_grad = 1, the sessions with a pair) from one pass over the pairs: the fused
    kernel of the torch path."""
    x, flat, lab, lens = prepare_finite(scores, labels, lengths, label_scratch=_LABEL_SCRATCH.float64)
    pairs, sums, unit = _session_terms(flat, lab, lens, float(margin))
    with_pairs = pairs > 0
    out = np.divide(sums, pairs, out=np.zeros(lens.size), where=with_pairs)
    return FusedForward(out.astype(x.dtype), unit.reshape(x.shape), with_pairs)


def gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                 lengths: np.ndarray | None = None, *, margin: float) -> np.ndarray:
    x, flat, lab, lens, g = prepare_finite(scores, labels, lengths, loss_grad,
                                           label_scratch=_LABEL_SCRATCH.float64)
    _, _, unit = _session_terms(flat, lab, lens, float(margin))
    return times_session_values(unit, g.astype(np.float64), lens).reshape(x.shape).astype(x.dtype)


def gradient_gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray, direction: np.ndarray,
                          lengths: np.ndarray | None = None, *, margin: float) -> tuple[np.ndarray, np.ndarray]:
    return _second_order_from_gradient(gradient_cpu, scores, labels, loss_grad, direction, lengths, margin)


# ---- CUDA kernels: the Triton pair loops (O(n^2) pairs per session, in tiles; activity in float64) -----
forward_cuda: Any = None
gradient_cuda: Any = None

def _raise_if_not_finite(sessions: Any, bad_labels: Any) -> None:
    """One host synchronisation for the label and the score checks of a call."""
    import torch

    counts = torch.stack([bad_labels.to(torch.int64).reshape(()),
                          (~torch.isfinite(sessions.flat)).sum().to(torch.int64)]).cpu()
    raise_if_bad_labels(counts[0])
    if int(counts[1]):
        msg = f"PairWiseHingeLoss: scores must be finite; got {int(counts[1])} NaN or inf score(s)"
        raise ValueError(msg)


if HAS_TRITON:

    def forward_cuda(scores: Any, labels: Any, lengths: Any = None, *, margin: float) -> Any:  # type: ignore[no-redef]
        sessions = prepare_sessions_cuda(scores, labels, lengths)
        values, counts, bad = pair_rows(sessions, loss=HINGE, forward=True, margin=margin)
        loss, _ = session_mean(sessions, values, counts, pairs_counted_twice=False)
        _raise_if_not_finite(sessions, bad)
        return loss.to(scores.dtype)

    def gradient_cuda(scores: Any, labels: Any, loss_grad: Any, lengths: Any = None, *,  # type: ignore[no-redef]
                      margin: float) -> Any:
        sessions = prepare_sessions_cuda(scores, labels, lengths)
        check_loss_grad(loss_grad, sessions)
        values, counts, bad = pair_rows(sessions, loss=HINGE, forward=False, margin=margin)
        _, pairs = session_mean(sessions, values, counts, pairs_counted_twice=True)
        out = scale_rows(sessions, values, pairs, loss_grad)
        _raise_if_not_finite(sessions, bad)
        return out


# ---- gradient definition ------------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    # lengths moves from input 2 to input 3 and is appended only when the forward op had it; margin is copied
    inputs: list[Any] = [I(0), I(1), GO(0)] + ([I(2)] if len(op.inputs) == 3 else [])
    return [gradient_def(op, "PairWiseHingeLossGradient", inputs, [GI(0)])]


def _third_order_maker(op: OperatorDef) -> list[OperatorDef]:
    # X_grad = 0 and Y_grad_grad = <v, d>/P: the gradient in v is the gradient op fed Y_grad_grad's
    # gradient; in X and Y_grad it is zero almost everywhere, so the maker is complete
    lengths: list[Any] = [I(4)] if len(op.inputs) == 5 else []
    return [gradient_def(op, "PairWiseHingeLossGradient", [I(0), I(1), GO(1), *lengths], [GI(3)])]


def _second_order_maker(op: OperatorDef) -> list[OperatorDef]:
    inputs: list[Any] = [I(0), I(1), I(2), GO(0)] + ([I(3)] if len(op.inputs) == 4 else [])
    return [gradient_def(op, "PairWiseHingeLossGradientGradient", inputs, [GI(0), GI(2)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_cuda_operator(SCHEMA, forward_cuda)
register_gradient(SCHEMA, _gradient_maker)
register_fused_gradient(SCHEMA, forward=forward_with_unit_gradient_cpu, backward=scale_unit_gradient)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)
register_cuda_operator(GRADIENT_SCHEMA, gradient_cuda)
register_gradient(GRADIENT_SCHEMA, _second_order_maker)
register_cpu_operator(GRADIENT_GRADIENT_SCHEMA, gradient_gradient_cpu, reference=reference_gradient_gradient)
register_gradient(GRADIENT_GRADIENT_SCHEMA, _third_order_maker)


# ---- public NumPy functions ---------------------------------------------------------------------------
def pairwise_hinge_loss(scores: npt.ArrayLike, labels: npt.ArrayLike, lengths: npt.ArrayLike | None = None, *,
                        margin: float = SCHEMA.get_arg("margin").default) -> np.ndarray:
    r"""Pairwise hinge (RankSVM) loss per session, exact in O(n log n) per session.

    .. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \max\bigl(0,\; \text{margin} - (x_{hi} - x_{lo})\bigr)

    Args:
        scores: Scores, shape (N,) or (N, 1), float16/32/64.
        labels: Relevance labels, shape (N,) or (N, 1), integer or float; pairs whose labels differ by
            less than 2^-23 are ties and are skipped.
        lengths: Session sizes, 1-D non-negative integers summing to N. None: one session.
        margin: Required score gap (1.0, as MarginRankingCriterion).

    Returns:
        Shape (S,) (or (1,) without ``lengths``), dtype of ``scores``: the mean over each session's
        label-discordant pairs; 0 for an empty, one-item or all-tied session. A NaN score makes the
        loss of its session NaN.

    Raises:
        ValueError: wrong shapes, lengths not summing to N or negative, NaN labels.
        TypeError: non-float scores, non-integer lengths.

    Examples:
        >>> import numpy as np
        >>> scores = np.array([2.0, 1.5, 0.0, 3.0, 3.0])
        >>> labels = np.array([2, 1, 0, 1, 1])
        >>> pairwise_hinge_loss(scores, labels, lengths=np.array([3, 2]))   # (0.5 + 0 + 0) / 3 pairs
        array([0.16666667, 0.        ])

    References:
        Herbrich et al., 2000; Joachims, 2002.
    """
    return forward_cpu(scores, labels, lengths, margin=SCHEMA.get_arg("margin").coerce(SCHEMA.name, margin))


def pairwise_hinge_loss_gradient(scores: npt.ArrayLike, labels: npt.ArrayLike, loss_grad: npt.ArrayLike,
                                 lengths: npt.ArrayLike | None = None, *,
                                 margin: float = SCHEMA.get_arg("margin").default) -> np.ndarray:
    """Gradient of :func:`pairwise_hinge_loss` with respect to ``scores`` given ``loss_grad`` of shape (S,).

    At the kink (``margin - (x_hi - x_lo) == 0``) the gradient is passed, as in MarginRankingCriterion.

    Examples:
        >>> import numpy as np
        >>> pairwise_hinge_loss_gradient(np.array([0.0, 1.0]), np.array([1, 0]), np.array([1.0]))
        array([-1.,  1.])
    """
    return gradient_cpu(scores, labels, loss_grad, lengths,
                        margin=GRADIENT_SCHEMA.get_arg("margin").coerce(GRADIENT_SCHEMA.name, margin))
