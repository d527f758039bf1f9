r"""The CPU pair loops of the pairwise logistic family (PairWiseLoss, LambdaRankLoss).

For a label-discordant pair (hi, lo) of a session with centre :math:`c_s`, and :math:`e_k = e^{x_k - c_s}`:

.. math::
    \operatorname{softplus}(x_{lo} - x_{hi}) = \operatorname{relu}(x_{lo} - x_{hi}) + \log(1 + q),
    \qquad q = \frac{\min(e_{hi}, e_{lo})}{\max(e_{hi}, e_{lo})} = e^{-|x_{hi} - x_{lo}|}

    \sigma(x_{lo} - x_{hi}) = \frac{e_{lo}}{e_{lo} + e_{hi}}

and :math:`\log(1 + q) = 2\,\operatorname{atanh}(t)`, :math:`t = q / (2 + q) \in [0, 1/3]`, whose odd series in
:math:`w = t^2 \le 1/9` is cut after 7 terms in float32 (truncation below 2e-8 relative) and 16 in float64
(below 2e-17). A pair costs one division and a short polynomial, both branch-free, so the inner loops
vectorise (8 float32 or 4 float64 lanes on AVX2), where ``exp`` and ``log1p`` per pair would not. The
loops take care that LLVM can vectorise them: a conditional picks between computed values, never between
two loads (which LLVM turns into a gather), and every constant has the working dtype (a float32 mixed with a
Python number becomes float64 in Numba).

Precision. float16/float32 scores run in float32 arithmetic (each pair's term within a few float32 ulps,
sums in float64), float64 scores in float64. A session whose scores span more than ``FAST_SPAN`` of its
precision (so that every :math:`e_k` stays a normal number), or hold inf or NaN, takes the exact per-pair
path: ``exp``/``log1p`` in float64, the reference's formulas, so extreme scores behave as there.

Work layout (results do not depend on the number of threads):

- **small calls** (at most ``DIRECT_PAIRS`` label pairs, a training mini-batch) skip the plan: one serial
  pass walks each session's pairs once in float64 (one ``exp`` per item, the same series, no branch on the
  labels), since building the vectorised walk's working arrays would cost more than the pairs; otherwise:
- **small sessions** (fast, 2 to ``SMALL_SESSION`` items) are walked by *diagonals*: for :math:`d = 1, 2,
  \dots` every item :math:`k` pairs with :math:`k - d` when both lie in one session, so one contiguous,
  vectorised loop covers the pairs of many sessions at once, with no per-session overhead. Runs of such
  sessions are cut into chunks of about ``CHUNK_ITEMS`` items, which stay in cache; chunks run in parallel;
- **other sessions** are walked by *rows*, their items sorted by label (by counting when the labels are small
  integers), so that the partners of item :math:`i` are two contiguous spans of its session: the items of
  lower label (:math:`i` is the pair's upper item) and those of higher label. The forward walks the lower
  span (each discordant pair once), the gradient both (rows need no synchronisation). A span needs no label
  test, no tie mask and no pair count, and tied pairs are never visited. Rows are cut into tasks of about
  equal pair counts, so one huge session and many medium ones both keep every thread busy. The fused call
  (loss and gradient, the torch path) walks each sorted session of up to ``FUSED_ITEMS`` items once: row
  :math:`i` over its lower span adds each pair's :math:`\sigma` to both items, half the divisions of the
  gradient's own rows; such sessions are never cut between tasks, so the result does not depend on the
  thread count. The registry's separate forward and gradient operators keep their own loops.

Pair weights (LambdaRank's :math:`|\Delta\text{NDCG}|`) are :math:`|G_i - G_j|\,|D_i - D_j|\,\text{inv}_i` from
per-item gains :math:`G`, discounts :math:`D` and the inverse ideal DCG of the item's session; they are
constants here (the caller computes them from the current ranking), given in input order and float64
(:class:`PairWeights`, gathered into the walk's order here) or already in a plan's walk order and working
precision with the inverse ideal DCG folded into the discounts (:class:`WalkWeights`, which the LambdaRank
kernels write directly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba.extending import overload

from pairloss._backends import parallel_launch, serial_twin
from pairloss._checks import FLT_EPSILON
from pairloss.ops.sessions import session_offsets

__all__ = [
    "CHUNK_ITEMS",
    "DIRECT_PAIRS",
    "FAST_SPAN",
    "FUSED_ITEMS",
    "SMALL_SESSION",
    "DirectPlan",
    "PairWeights",
    "SessionPlan",
    "WalkWeights",
    "diagonal_chunks",
    "integer_grades",
    "logistic_forward",
    "logistic_forward_and_gradient",
    "logistic_gradient",
    "logistic_second_order",
    "plan_sessions",
]

SMALL_SESSION = 32
_COUNTED_GRADES = 64  # a row session whose labels are integers in [0, 64) is sorted by counting
_INT32_PLACES = 2**31  # sessions shorter than this keep their walk positions in int32
#: A call with at most this many label pairs (unordered, ties included) skips the plan: one compiled pass
#: in float64 computes loss and gradient per pair (scalar log1p), where building the vectorised loops'
#: working arrays would cost more than its pairs (a mini-batch of 64 sessions of 10 items has 2,880 pairs).
DIRECT_PAIRS = 4096
CHUNK_ITEMS = 2048
# exp(+-span/2) must stay a normal number in the working precision
FAST_SPAN = {np.dtype(np.float32): 80.0, np.dtype(np.float64): 600.0}
# t * t is clamped from below so that tiny q never makes the polynomial work on subnormals (2t is then q)
_W_MIN = {np.dtype(np.float32): 1e-30, np.dtype(np.float64): 1e-290}
_SERIES_TERMS = {np.dtype(np.float32): 7, np.dtype(np.float64): 16}
_ROW_OVERHEAD = 16  # a row's fixed cost, in pairs, for splitting rows into tasks of equal work
_TASKS_PER_THREAD = 4
_PARALLEL_PAIRS = 1 << 18  # below this many pair visits one thread finishes before a launch pays off
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@dataclass(frozen=True)
class PairWeights:
    """LambdaRank pair weights ``|G_i - G_j| |D_i - D_j| inv_i`` as per-item float64 arrays."""

    gain: np.ndarray
    discount: np.ndarray
    inv_ideal: np.ndarray


@dataclass(frozen=True)
class WalkWeights:
    """The same weights as a :class:`SessionPlan`'s loops read them: gain and discount in the plan's walk
    order and working precision, each discount already times its session's inverse ideal DCG, so a pair's
    weight is ``|G_i - G_j| |D_i - D_j|`` with no per-session factor left to apply."""

    gain: np.ndarray
    discount: np.ndarray


@dataclass(frozen=True)
class SessionPlan:
    """How one call walks its sessions (see the module doc); built by :func:`plan_sessions`."""

    lens: np.ndarray  # (S,) int64
    offsets: np.ndarray  # (S + 1,) int64
    fast: np.ndarray  # (S,) bool: the vectorised path applies
    # The working arrays (x, labels, e, pos, lower_end, higher_start) follow the walk's order: the items of
    # each sorted session (fast row sessions) by ascending label, every other item where it was. Only sorted
    # sessions have label spans, and only the others labels and positions (which the sorted rows never read).
    # (N,) int32 (int64 when a session has 2^31 items), counted from the start of the place's session: the
    # item at each place of the walk; the places of lower label are those before lower_end, those of higher
    # label from higher_start on
    order: np.ndarray
    lower_end: np.ndarray
    higher_start: np.ndarray
    x: np.ndarray  # scores, working precision
    x64: np.ndarray  # scores in the given order, float32 (from float16/32) or float64, for the exact path
    labels: np.ndarray  # labels in the working precision where that is exact, else float64
    labels64: np.ndarray  # in the given order, for the exact path
    e: np.ndarray  # exp(x - centre of the session), working precision (meaningless for exact sessions)
    pos: np.ndarray  # position of each item within its session, working precision
    chunks: np.ndarray  # (C, 2) item ranges of the diagonal chunks
    chunk_depth: np.ndarray  # (C,) size of the largest session in each chunk
    row_tasks: np.ndarray  # (T + 1, 2) where each row task starts: (index into row_sessions, row in it)
    row_sessions: np.ndarray  # the sessions walked by rows, in order
    coefficients: tuple  # atanh series, working precision
    w_min: np.floating
    eps: np.floating  # the tie tolerance in the labels' dtype
    parallel: bool


@dataclass(frozen=True)
class DirectPlan:
    """A small call's walk (at most ``DIRECT_PAIRS`` pairs): each session's pairs in one float64 pass."""

    lens: np.ndarray  # (S,) int64
    offsets: np.ndarray  # (S + 1,) int64
    x64: np.ndarray  # scores as float64
    labels64: np.ndarray


# ---- planning -----------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _session_centre(x, lo, hi, span_limit):  # pragma: no cover - compiled
    """(centre, fast) of the non-empty session x[lo:hi]: fast when its scores are finite and span at most
    ``span_limit``, the centre then halfway between its extremes (else 0)."""
    xmin, xmax = x[lo], x[lo]
    finite = True
    for k in range(lo, hi):
        xmin = min(xmin, x[k])
        xmax = max(xmax, x[k])
        finite &= np.isfinite(x[k])  # min/max may skip a NaN
    if finite and xmax - xmin <= span_limit:
        return 0.5 * xmin + 0.5 * xmax, True
    return 0.0, False


@numba.njit(cache=True, nogil=True, inline="always")
def integer_grades(labels64, start, stop, limit):  # pragma: no cover - compiled
    """(whether every label in [start, stop) is an integer in [0, limit), the largest of them or 0.0);
    ``limit`` at most 2^31. Branch-free on integers, so that it vectorises (a float maximum and floor
    did not: 1e6 labels 1.5 against 0.84 ms)."""
    top = np.int32(0)
    grades = True
    bound = np.float64(limit)
    for k in range(start, stop):
        v = labels64[k]
        inside = (v >= 0.0) & (v < bound)
        g = np.int32(v) if inside else np.int32(0)
        grades &= inside & (g == v)
        top = max(top, g)
    return grades, np.float64(top)


@numba.njit(cache=True, nogil=True)
def _sort_session(labels64, start, stop, counts, eps, order, lower_end, higher_start):  # pragma: no cover
    """order[start:stop] = the session's items (as positions in it) by ascending label, tied items in their
    order, and the label spans of each place (``_label_spans``). Labels that are all integers below
    ``counts.shape[1] - 1`` (graded relevance) are sorted by counting, and a grade's spans end where its run
    starts and start where it ends; other labels by a merge sort."""
    counted, top = integer_grades(labels64, start, stop, counts.shape[1] - 1)
    if not counted:
        rank = np.argsort(labels64[start:stop], kind="mergesort")
        for k in range(stop - start):
            order[start + k] = rank[k]
        _label_spans(labels64, order, start, stop, eps, lower_end, higher_start)
        return
    grades = np.int64(top) + 1
    run, fill = counts[0], counts[1]  # run[g]: where grade g's run starts (run[grades]: the session's end)
    run[:grades + 1] = 0
    for k in range(start, stop):
        run[np.int64(labels64[k]) + 1] += 1
    for g in range(grades):
        run[g + 1] += run[g]
        fill[g] = run[g]
    for k in range(start, stop):
        g = np.int64(labels64[k])
        order[start + fill[g]] = k - start
        fill[g] += 1
    for g in range(grades):
        for k in range(start + run[g], start + run[g + 1]):
            lower_end[k] = run[g]
            higher_start[k] = run[g + 1]


@numba.njit(cache=True, nogil=True)
def _label_spans(labels64, order, start, stop, eps, lower_end, higher_start):  # pragma: no cover - compiled
    # On a session sorted by label, the partners of place k are the places before lower_end[k] (labels at
    # least eps below) and those from higher_start[k] on (at least eps above), both counted from the session's
    # start; both only grow with k. The test is the reference's (float64 labels, a tie when |l_i - l_j| < eps).
    below = 0
    above = 0
    n = stop - start
    for k in range(n):
        lk = labels64[start + order[start + k]]
        while lk - labels64[start + order[start + below]] >= eps:
            below += 1
        above = max(above, k + 1)
        while above < n and labels64[start + order[start + above]] - lk < eps:
            above += 1
        lower_end[start + k] = below
        higher_start[start + k] = above


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _fill_items(x64, lab64, offsets, span_limit, sort_above, eps, tasks, fast, order, lower_end, higher_start, x,
                shifted, lab, pos, exact):  # pragma: no cover - compiled
    """One pass, session by session: whether the session is fast (``_session_centre``); the walk's order
    (fast sessions of more than ``sort_above`` items sorted by label, with their label spans); then scores
    and scores minus the session's centre in the working precision in that order, and for the other
    sessions labels and positions too; exact[s]: whether session s's labels are exact in the working
    precision (np.repeat of the centres and starts and a separate comparison took three more passes, a
    third of a call at n = 100). A sorted session's labels and positions are left unwritten: its rows
    never read them."""
    n_sessions = offsets.size - 1
    for t in numba.prange(tasks):
        counts = np.empty((2, _COUNTED_GRADES + 1), np.int64)
        for s in range(t * n_sessions // tasks, (t + 1) * n_sessions // tasks):
            start, stop = offsets[s], offsets[s + 1]
            c, fast[s] = _session_centre(x64, start, stop, span_limit) if stop > start else (0.0, False)
            if fast[s] and stop - start > sort_above:  # the sorted rows read neither labels nor positions
                _sort_session(lab64, start, stop, counts, eps, order, lower_end, higher_start)
                for k in range(start, stop):
                    x[k] = x64[start + order[k]]
                    shifted[k] = np.float64(x[k]) - c
                exact[s] = True
                continue
            same = True
            for k in range(start, stop):
                order[k] = k - start
                x[k] = x64[k]
                shifted[k] = np.float64(x64[k]) - c
                lab[k] = lab64[k]
                pos[k] = k - start
                same &= np.float64(lab[k]) == lab64[k]
            exact[s] = same


_fill_items_serial = serial_twin(_fill_items)


@numba.njit(cache=True, nogil=True)
def diagonal_chunks(offsets, small, chunk_items):  # pragma: no cover - compiled
    """Item ranges of chunks of consecutive small sessions (about chunk_items each) and their depth."""
    n_sessions = offsets.size - 1
    ranges = np.empty((n_sessions, 2), np.int64)
    depth = np.empty(n_sessions, np.int64)
    n = 0
    s = 0
    while s < n_sessions:
        if not small[s]:
            s += 1
            continue
        start = offsets[s]
        deepest = 0
        while s < n_sessions and small[s] and offsets[s] - start < chunk_items:
            deepest = max(deepest, offsets[s + 1] - offsets[s])
            s += 1
        ranges[n, 0] = start
        ranges[n, 1] = offsets[s]
        depth[n] = deepest
        n += 1
    return ranges[:n], depth[:n]


@numba.njit(cache=True, nogil=True, inline="always")
def _row_work(n, full_rows, both):  # pragma: no cover - compiled
    # pair visits of a session's rows: the gradient's full rows, the forward's triangle, or (both) the two
    full = n * n if full_rows or both else 0
    triangle = n * (n - 1) // 2 if not full_rows else 0
    return full + triangle + _ROW_OVERHEAD * n


@numba.njit(cache=True, nogil=True)
def _row_tasks(offsets, sessions, full_rows, n_tasks, whole_up_to, both_above_whole):  # pragma: no cover
    """Tasks of about equal work over the rows of ``sessions``: task t starts at row tasks[t, 1] of session
    sessions[tasks[t, 0]] and ends where task t + 1 starts (rows are not listed: a session's rows are its
    items, and only a session that a boundary cuts is walked row by row here). Sessions of at most
    ``whole_up_to`` items are never cut. ``both_above_whole`` (the fused call, triangular rows): a longer
    session runs the gradient's full rows as well as the forward's, so row i costs n + i, not i (counted as
    i alone, one 10,000-item session split 70/30 between two threads: 16.5 ms against 14.8 for the two ops
    called one after the other)."""
    total = 0.0
    for s in sessions:
        n = offsets[s + 1] - offsets[s]
        total += _row_work(n, full_rows, both_above_whole and n > whole_up_to)
    tasks = np.zeros((n_tasks + 1, 2), np.int64)
    step = total / n_tasks
    done = 0.0
    k = 1
    for p in range(sessions.size):
        n = offsets[sessions[p] + 1] - offsets[sessions[p]]
        both = both_above_whole and n > whole_up_to
        if k < n_tasks and done + _row_work(n, full_rows, both) >= k * step and n > whole_up_to:
            for i in range(n):
                done += (n if full_rows or both else 0) + (0 if full_rows else i) + _ROW_OVERHEAD
                while k < n_tasks and done >= k * step:
                    tasks[k, 0], tasks[k, 1] = p, i + 1
                    k += 1
        else:
            done += _row_work(n, full_rows, both)
            while k < n_tasks and done >= k * step:
                tasks[k, 0], tasks[k, 1] = p + 1, 0
                k += 1
    while k <= n_tasks:
        tasks[k, 0], tasks[k, 1] = sessions.size, 0
        k += 1
    return tasks


@numba.njit(cache=True, nogil=True, inline="always")
def _task_rows(tasks, t, sessions, offsets, p):  # pragma: no cover - compiled
    """(session, first item, end item) of the rows that task t walks in the p-th row session, for p from
    tasks[t, 0] to min(tasks[t + 1, 0], sessions.size - 1)."""
    s = sessions[p]
    start = offsets[s]
    first = tasks[t, 1] if p == tasks[t, 0] else 0
    end = tasks[t + 1, 1] if p == tasks[t + 1, 0] else offsets[s + 1] - start
    return s, start + first, start + end


def plan_sessions(flat_scores: np.ndarray, labels64: np.ndarray, lens: np.ndarray, precision: np.dtype, *,
                  full_rows: bool) -> SessionPlan | DirectPlan:
    """The walk of one call. ``full_rows``: the gradient's rows (both triangles) rather than the forward's.
    A call of at most ``DIRECT_PAIRS`` pairs gets a :class:`DirectPlan` whatever the precision."""
    precision = np.dtype(precision)
    offsets = session_offsets(lens)
    if int(np.dot(lens, lens)) <= 2 * DIRECT_PAIRS + int(offsets[-1]):  # sum n (n - 1) / 2 <= DIRECT_PAIRS
        return DirectPlan(lens, offsets, np.asarray(flat_scores, dtype=np.float64), labels64)
    # float16 has no Numba arithmetic; float32 and float64 are read as they are
    # (float16 widens to float32 exactly, so half scores share the float32 compilation of every loop)
    narrow = flat_scores.dtype in (np.float16, np.float32)
    x64 = np.ascontiguousarray(flat_scores, dtype=np.float32 if narrow else np.float64)
    pair_visits = int(np.sum(lens * lens if full_rows else lens * (lens - 1) // 2))
    threads = numba.get_num_threads()
    parallel = pair_visits >= _PARALLEL_PAIRS and threads > 1  # worth it; parallel_launch decides at launch
    x, e, lab, pos = (np.empty(x64.size, precision) for _ in range(4))
    # positions within a session: int32 halves these arrays (int64 only for a session of 2^31 items or more)
    places = np.int32 if int(lens.max(initial=0)) < _INT32_PLACES else np.int64
    order, lower_end, higher_start = (np.empty(x64.size, places) for _ in range(3))
    fast, exact = np.empty(lens.size, np.bool_), np.empty(lens.size, np.bool_)
    with parallel_launch(parallel) as launch:
        (_fill_items if launch else _fill_items_serial)(
            x64, labels64, offsets, FAST_SPAN[precision], SMALL_SESSION, FLT_EPSILON,
            min(lens.size, threads * _TASKS_PER_THREAD) if launch else 1, fast, order, lower_end, higher_start, x, e,
            lab, pos, exact)
    small = fast & (lens >= 2) & (lens <= SMALL_SESSION)
    with np.errstate(over="ignore", invalid="ignore"):
        # NumPy's exp is vectorised (float32 with AVX2); exact sessions may overflow here and never read it
        np.exp(e, out=e)
    labels = lab if exact.all() else _in_walk_order(order, offsets, labels64, labels64.dtype, parallel)
    chunks, depth = diagonal_chunks(offsets, small, CHUNK_ITEMS)
    row_sessions = np.flatnonzero(~small & (lens >= 2))
    n_tasks = max(1, threads * _TASKS_PER_THREAD) if parallel else 1
    tasks = _row_tasks(offsets, row_sessions, full_rows, n_tasks, 0, False)
    return SessionPlan(lens, offsets, fast, order, lower_end, higher_start, x, x64, labels, labels64, e, pos, chunks,
                       depth, tasks, row_sessions,
                       tuple(precision.type(1.0 / (2 * k + 1)) for k in range(_SERIES_TERMS[precision])),
                       precision.type(_W_MIN[precision]), labels.dtype.type(FLT_EPSILON), parallel)


@numba.njit(cache=True, nogil=True, parallel=True)
def _gather_walk(order, offsets, tasks, values, out):  # pragma: no cover - compiled
    # out[k] = values[the item at place k of the walk], in out's precision, one pass: order plus each
    # item's session start as an int64 array, then a gather and a cast, wrote four call-sized temporaries
    n_sessions = offsets.size - 1
    for t in numba.prange(tasks):
        for s in range(t * n_sessions // tasks, (t + 1) * n_sessions // tasks):
            start = offsets[s]
            for k in range(start, offsets[s + 1]):
                out[k] = values[start + order[k]]


_gather_walk_serial = serial_twin(_gather_walk)


def _in_walk_order(order: np.ndarray, offsets: np.ndarray, values: np.ndarray, dtype: np.dtype,
                   parallel: bool) -> np.ndarray:
    """``values`` (one per item, input order) in the walk's order (``SessionPlan.order``), as ``dtype``."""
    out = np.empty(values.size, dtype)
    with parallel_launch(parallel) as launch:
        tasks = max(1, min(offsets.size - 1, numba.get_num_threads() * _TASKS_PER_THREAD)) if launch else 1
        (_gather_walk if launch else _gather_walk_serial)(order, offsets, tasks, values, out)
    return out


def _forward_rows(plan: SessionPlan, whole_up_to: int) -> SessionPlan:
    """A gradient plan (``full_rows=True``) with the forward's row tasks: the same arrays, so one plan
    serves the fused call, whose triangular rows still split into equal work (sessions of at most
    ``whole_up_to`` items stay whole in one task)."""
    tasks = _row_tasks(plan.offsets, plan.row_sessions, False, plan.row_tasks.shape[0] - 1, whole_up_to, True)
    return dataclasses.replace(plan, row_tasks=tasks)


# ---- per-pair arithmetic ------------------------------------------------------------------------------
def _horner(w: float, coef: tuple) -> float:
    """sum(coef[k] * w**k), Horner's scheme (the compiled version is unrolled for the tuple's length)."""
    p = coef[-1]
    for c in coef[-2::-1]:
        p = p * w + c
    return p


def _like(value: float, like: float) -> float:
    """``value`` converted to the dtype of the scalar ``like`` (compiled: a plain cast)."""
    return type(like)(value)


@overload(_like, inline="always")
def _like_compiled(value, like):
    # In Numba a float32 combined with a bool or a Python number becomes float64, which would halve the
    # vector width of a float32 loop: every such conversion goes through this cast.
    cast = numba.np.numpy_support.as_dtype(like).type
    return lambda value, like: cast(value)


@overload(_horner, inline="always")
def _horner_unrolled(w, coef):
    # A loop over a tuple with a variable index keeps LLVM from vectorising the pair loop around it, so the
    # scheme is written out for the tuple's (compile-time) length.
    lines = [f"    p = coef[{coef.count - 1}]"] + [f"    p = p * w + coef[{k}]" for k in range(coef.count - 2, -1, -1)]
    namespace: dict[str, Any] = {}
    exec("def horner(w, coef):\n" + "\n".join(lines) + "\n    return p\n", namespace)
    return namespace["horner"]


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _log1p_ratio(small, big, coef, w_min):  # pragma: no cover - compiled
    """log1p(small / big) for 0 < small <= big, by the atanh series (module doc)."""
    t = small / (big + big + small)
    w = max(t * t, w_min)
    return (t + t) * _horner(w, coef)


@numba.njit(cache=True, nogil=True)
def _softplus_exact(z):  # pragma: no cover - compiled
    return max(z, 0.0) + np.log1p(np.exp(-abs(z)))


@numba.njit(cache=True, nogil=True)
def _sigmoid_exact(z):  # pragma: no cover - compiled
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    ez = np.exp(z)
    return ez / (1.0 + ez)


# ---- one pair -----------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _loss_term(xi, li, ei, xj, lj, ej, eps, coef, w_min):  # pragma: no cover - compiled
    """(softplus(x_lo - x_hi), whether the pair is discordant) for items i and j."""
    dl = li - lj
    diff = xj - xi
    z = diff if dl > 0 else -diff  # x_lo - x_hi; a select of values, never of loads
    term = max(z, w_min - w_min) + _log1p_ratio(min(ei, ej), max(ei, ej), coef, w_min)
    return term, abs(dl) >= eps


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _slope_term(li, ei, lj, ej, eps):  # pragma: no cover - compiled
    """(d/dx_i softplus(x_lo - x_hi), whether discordant): -sigma(x_j - x_i) if i is above j, else +sigma."""
    dl = li - lj
    # -e_j is computed, not loaded: LLVM cannot fold this select of values into a gather
    num = -ej if dl > 0 else ei
    return num / (ei + ej), abs(dl) >= eps


# ---- rows ---------------------------------------------------------------------------------------------
# A row's loops are written for LLVM's vectoriser and inlined into the drivers: unsigned indices (a signed
# index makes Numba emit its negative-index wraparound, which turns every load into a gather), no slices
# and no calls in the hot loop (each slice or call with arrays costs reference-count atomics, more than a
# short row). A span is a run of partners on one side of the row item's label (sorted sessions, module
# doc), so which item is the pair's upper one is known for the whole span: no label is read, no select
# and no mask is needed. Partial sums are float32 over blocks of _BLOCK pairs, then float64. (Whole groups
# of 8 plus one masked group, which the unsorted rows used to avoid LLVM's scalar remainder, measured 20-40 %
# slower than the plain loop here, with AVX-512 and with AVX2 code alike.)
_BLOCK = 1024
_U = numba.uint64
_INLINE = {"cache": True, "nogil": True, "fastmath": _FASTMATH, "error_model": "numpy", "inline": "always"}


# Weights come as arrays or as None: Numba compiles a version of each loop per case and prunes the
# ``is not None`` branches, so no flag is tested inside a vector loop (it would stay there once inlined).
@numba.njit(**_INLINE)
def _forward_span(xi, ei, gi, di, x, e, gain, disc, first, count, coef, w_min):  # pragma: no cover - compiled
    """Loss sum of item i over the items first .. first + count below it:
    softplus(x_lo - x_hi) = relu(x_lo - x_hi) + log1p(min(e) / max(e))."""
    zero = w_min - w_min
    acc = zero
    for j in range(count):
        k = first + j
        term = max(x[k] - xi, zero) + _log1p_ratio(min(ei, e[k]), max(ei, e[k]), coef, w_min)
        if gain is not None:  # i is the upper item: the gain rises with the label, so gi >= gain[k]
            term *= (gi - gain[k]) * abs(di - disc[k])
        acc += term
    return acc


@numba.njit(**_INLINE)
def _slope_span(ek, gk, dk, e, gain, disc, first, count, k_is_lower, w_min):  # pragma: no cover - compiled
    """sum over the partners m in first .. first + count of sigma(x_lo - x_hi), the pair term's slope in
    x_lo: e_k / (e_k + e_m) when k is the lower item, e_m / (e_k + e_m) when it is the upper one."""
    acc = w_min - w_min
    for j in range(count):
        m = first + j
        v = (ek if k_is_lower else e[m]) / (ek + e[m])
        if gain is not None:
            v *= abs(gk - gain[m]) * abs(dk - disc[m])
        acc += v
    return acc


@numba.njit(**_INLINE)
def _forward_row_fast(x, e, gain, disc, i, start, stop, coef, w_min):  # pragma: no cover - compiled
    # pairs (i, k) for the items k in start .. stop of lower label: each discordant pair once, at its upper item
    zero = w_min - w_min
    gi = zero if gain is None else gain[i]
    di = zero if disc is None else disc[i]
    total = 0.0
    for b in range(start, stop, _BLOCK):
        total += _forward_span(x[i], e[i], gi, di, x, e, gain, disc, _U(b), _U(min(_BLOCK, stop - b)), coef, w_min)
    return total


@numba.njit(**_INLINE)
def _slope_sum(e, gain, disc, k, start, stop, k_is_lower, w_min):  # pragma: no cover - compiled
    zero = w_min - w_min
    gk = zero if gain is None else gain[k]
    dk = zero if disc is None else disc[k]
    total = 0.0
    for b in range(start, stop, _BLOCK):
        total += _slope_span(e[k], gk, dk, e, gain, disc, _U(b), _U(min(_BLOCK, stop - b)), k_is_lower, w_min)
    return total


@numba.njit(**_INLINE)
def _gradient_row_fast(e, gain, disc, k, start, lower_end, higher_start, stop, w_min):  # pragma: no cover - compiled
    # d/dx_k of the session's pair sum: -sigma over the partners below k (k is the upper item), +sigma over
    # those above it; returns it with the number of partners
    upper = _slope_sum(e, gain, disc, k, higher_start, stop, True, w_min)
    lower = _slope_sum(e, gain, disc, k, start, lower_end, False, w_min)
    return upper - lower, (lower_end - start) + (stop - higher_start)


@numba.njit(**_INLINE)
def _fused_span(xi, ei, gi, di, x, e, gain, disc, first, count, coef, w_min, slope,
                base):  # pragma: no cover - compiled
    """Loss sum and sigma sum of upper item i over the items first .. first + count below it, adding each
    pair's sigma(x_lo - x_hi) = e_lo / (e_i + e_lo) to slope[base + j], the lower item's gradient."""
    zero = w_min - w_min
    acc = zero
    sig_acc = zero
    for j in range(count):
        k = first + j
        term = max(x[k] - xi, zero) + _log1p_ratio(min(ei, e[k]), max(ei, e[k]), coef, w_min)
        sig = e[k] / (ei + e[k])
        if gain is not None:  # i is the upper item: gi >= gain[k] (the gain rises with the label)
            w = (gi - gain[k]) * abs(di - disc[k])
            term *= w
            sig *= w
        acc += term
        sig_acc += sig
        slope[base + j] += sig
    return acc, sig_acc


@numba.njit(**_INLINE)
def _fused_session(x, e, gain, disc, lower_end, order, start, stop, coef, w_min, slope, slope64, item_sum, item_cnt,
                   out):  # pragma: no cover - compiled
    # Loss and gradient of one sorted session in one visit of each discordant pair (row i over the items below
    # it, which start at the session's start): the pair's sigma goes to both items, so the gradient needs half
    # the divisions of its own rows. The lower items' shares gather in slope (working precision, so that the
    # pair loop keeps its vector width), flushed into slope64 every _BLOCK rows: float32 sums of at most
    # _BLOCK terms, as in the other loops.
    zero = w_min - w_min
    n = stop - start
    for k in range(n):
        slope[k] = zero
        slope64[k] = 0.0
    for i in range(start, stop):
        gi = zero if gain is None else gain[i]
        di = zero if disc is None else disc[i]
        count = lower_end[i]
        total = 0.0
        sig_total = 0.0
        for b in range(0, count, _BLOCK):
            acc, sig_acc = _fused_span(x[i], e[i], gi, di, x, e, gain, disc, _U(start + b), _U(min(_BLOCK, count - b)),
                                       coef, w_min, slope, _U(b))
            total += acc
            sig_total += sig_acc
        item_sum[i] = total
        item_cnt[i] = count
        slope64[i - start] -= sig_total
        if (i - start) % _BLOCK == _BLOCK - 1 or i == stop - 1:
            for k in range(n):
                slope64[k] += slope[k]
                slope[k] = zero
    for k in range(n):
        out[start + order[start + k]] = slope64[k]


@numba.njit(cache=True, nogil=True)
def _forward_row_exact(x, lab, gain, disc, i, start, eps):  # pragma: no cover - compiled
    total = 0.0
    pairs = 0.0
    for j in range(start, i):
        dl = lab[i] - lab[j]
        if abs(dl) < eps:
            continue
        w = 1.0 if gain is None else abs(gain[i] - gain[j]) * abs(disc[i] - disc[j])
        d = np.float64(x[j]) - np.float64(x[i])
        total += w * _softplus_exact(d if dl > 0.0 else -d)
        pairs += 1.0
    return total, pairs


@numba.njit(cache=True, nogil=True)
def _gradient_row_exact(x, lab, gain, disc, k, start, stop, eps):  # pragma: no cover - compiled
    total = 0.0
    pairs = 0.0
    for m in range(start, stop):
        dl = lab[k] - lab[m]
        if abs(dl) < eps:
            continue
        w = 1.0 if gain is None else abs(gain[k] - gain[m]) * abs(disc[k] - disc[m])
        d = np.float64(x[m]) - np.float64(x[k])
        if dl > 0.0:
            total -= w * _sigmoid_exact(d)
        else:
            total += w * _sigmoid_exact(-d)
        pairs += 1.0
    return total, pairs


# ---- diagonals (small sessions) -----------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _forward_chunk(x, lab, e, pos, gain, disc, depth, eps, coef, w_min, acc, cnt):  # pragma: no cover
    # pair (k, k - d) for every item k with pos[k] >= d: each unordered pair of a session once
    zero = w_min - w_min
    n = x.size
    for d in range(1, depth):
        fd = _like(d, zero)
        xa, xb, la, lb, ea, eb = x[d:n], x[:n - d], lab[d:n], lab[:n - d], e[d:n], e[:n - d]
        pa, ac, cc = pos[d:n], acc[d:n], cnt[d:n]
        for k in range(xa.size):
            term, counted = _loss_term(xa[k], la[k], ea[k], xb[k], lb[k], eb[k], eps, coef, w_min)
            if gain is not None:
                term *= abs(gain[k + d] - gain[k]) * abs(disc[k + d] - disc[k])
            counted &= pa[k] >= fd
            ac[k] += term if counted else zero
            cc[k] += _like(counted, zero)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _gradient_chunk(lab, e, pos, gain, disc, depth, eps, w_min, tmp, out, cnt):  # pragma: no cover
    # pair (k + d, k): t = d/dx_{k+d} of its term, and -t for item k (the sigma terms are antisymmetric)
    zero = w_min - w_min
    n = lab.size
    for d in range(1, depth):
        fd = _like(d, zero)
        la, lb, ea, eb = lab[d:n], lab[:n - d], e[d:n], e[:n - d]
        pa, t, cc = pos[d:n], tmp[:n - d], cnt[d:n]
        for k in range(la.size):
            v, counted = _slope_term(la[k], ea[k], lb[k], eb[k], eps)
            if gain is not None:
                v *= abs(gain[k + d] - gain[k]) * abs(disc[k + d] - disc[k])
            counted &= pa[k] >= fd
            t[k] = v if counted else zero
            cc[k] += _like(counted, zero)
        oa = out[d:n]
        for k in range(t.size):
            oa[k] += t[k]
        ob = out[:n - d]
        for k in range(t.size):
            ob[k] -= t[k]


# ---- drivers ------------------------------------------------------------------------------------------
# One chunk of small sessions, or one task's rows of one row session, as each driver walks them; the fused
# driver runs both kinds of piece where a session is not walked once (_fused_session).
@numba.njit(cache=True, nogil=True, inline="always")
def _forward_chunk_at(x, lab, e, pos, gain, disc, a, b, depth, eps, coef, w_min, item_sum,
                      item_cnt):  # pragma: no cover - compiled
    acc = np.zeros(b - a, e.dtype)
    cnt = np.zeros(b - a, e.dtype)
    if gain is None:
        _forward_chunk(x[a:b], lab[a:b], e[a:b], pos[a:b], None, None, depth, eps, coef, w_min, acc, cnt)
    else:
        _forward_chunk(x[a:b], lab[a:b], e[a:b], pos[a:b], gain[a:b], disc[a:b], depth, eps, coef, w_min, acc, cnt)
    for k in range(b - a):
        item_sum[a + k] = acc[k]
        item_cnt[a + k] = cnt[k]


@numba.njit(cache=True, nogil=True, inline="always")
def _gradient_chunk_at(lab, e, pos, gain, disc, a, b, depth, eps, w_min, out, item_cnt):  # pragma: no cover
    tmp = np.empty(b - a, e.dtype)
    acc = np.zeros(b - a, e.dtype)
    cnt = np.zeros(b - a, e.dtype)
    if gain is None:
        _gradient_chunk(lab[a:b], e[a:b], pos[a:b], None, None, depth, eps, w_min, tmp, acc, cnt)
    else:
        _gradient_chunk(lab[a:b], e[a:b], pos[a:b], gain[a:b], disc[a:b], depth, eps, w_min, tmp, acc, cnt)
    for k in range(b - a):
        out[a + k] = acc[k]
        item_cnt[a + k] = cnt[k]  # each pair counted once, at its later item


@numba.njit(cache=True, nogil=True, inline="always")
def _forward_rows_at(x, x64, lab64, e, gain, disc, fast, lower_end, s, start, first, end, eps64, coef, w_min,
                     item_sum, item_cnt):  # pragma: no cover - compiled
    if fast[s]:
        for i in range(first, end):
            item_sum[i] = _forward_row_fast(x, e, gain, disc, i, start, start + lower_end[i], coef, w_min)
            item_cnt[i] = lower_end[i]
    else:
        for i in range(first, end):
            item_sum[i], item_cnt[i] = _forward_row_exact(x64, lab64, gain, disc, i, start, eps64)


@numba.njit(cache=True, nogil=True, inline="always")
def _gradient_rows_at(x64, lab64, e, gain, disc, fast, order, lower_end, higher_start, s, start, stop, first, end,
                      eps64, w_min, out, item_cnt):  # pragma: no cover - compiled
    if fast[s]:
        for k in range(first, end):
            out[start + order[k]], partners = _gradient_row_fast(e, gain, disc, k, start, start + lower_end[k],
                                                                 start + higher_start[k], stop, w_min)
            item_cnt[k] = 0.5 * partners  # each pair was visited from both of its items
    else:
        for k in range(first, end):
            out[k], partners = _gradient_row_exact(x64, lab64, gain, disc, k, start, stop, eps64)
            item_cnt[k] = 0.5 * partners


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _forward_loop(x, x64, lab, lab64, e, pos, gain, disc, fast, offsets, lower_end, chunks, depth, sessions,
                  tasks, eps, eps64, coef, w_min, item_sum, item_cnt):  # pragma: no cover - compiled
    for c in numba.prange(chunks.shape[0]):
        _forward_chunk_at(x, lab, e, pos, gain, disc, chunks[c, 0], chunks[c, 1], depth[c], eps, coef, w_min,
                          item_sum, item_cnt)
    for t in numba.prange(tasks.shape[0] - 1):
        for p in range(tasks[t, 0], min(tasks[t + 1, 0] + 1, sessions.size)):
            s, first, end = _task_rows(tasks, t, sessions, offsets, p)
            _forward_rows_at(x, x64, lab64, e, gain, disc, fast, lower_end, s, offsets[s], first, end, eps64, coef,
                             w_min, item_sum, item_cnt)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _gradient_loop(x64, lab, lab64, e, pos, gain, disc, fast, offsets, order, lower_end, higher_start, chunks,
                   depth, sessions, tasks, eps, eps64, w_min, out, item_cnt):  # pragma: no cover - compiled
    for c in numba.prange(chunks.shape[0]):
        _gradient_chunk_at(lab, e, pos, gain, disc, chunks[c, 0], chunks[c, 1], depth[c], eps, w_min, out, item_cnt)
    for t in numba.prange(tasks.shape[0] - 1):
        for p in range(tasks[t, 0], min(tasks[t + 1, 0] + 1, sessions.size)):
            s, first, end = _task_rows(tasks, t, sessions, offsets, p)
            _gradient_rows_at(x64, lab64, e, gain, disc, fast, order, lower_end, higher_start, s, offsets[s],
                              offsets[s + 1], first, end, eps64, w_min, out, item_cnt)


_forward_loop_serial = serial_twin(_forward_loop)
_gradient_loop_serial = serial_twin(_gradient_loop)


#: Sorted sessions of at most this many items are walked once for loss and gradient together and never cut
#: between tasks, so which walk a session takes does not depend on the number of threads; longer ones are
#: walked by rows, which tasks may cut.
FUSED_ITEMS = 2048


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
def _fused_loop(x, x64, lab, lab64, e, pos, gain, disc, fast, offsets, order, lower_end, higher_start, chunks, depth,
                sessions, tasks, fused_items, eps, eps64, coef, w_min, item_sum, item_cnt, out):  # pragma: no cover
    # The forward's and the gradient's loops in one launch over the forward's tasks. A sorted session of at
    # most fused_items items (whole in one task) is walked once (_fused_session); any other piece runs the
    # gradient's and then the forward's code (each row owns what it writes, so tasks may cut the session).
    # The forward writes item_cnt last: its per-item counts, whose session sums are the gradient's too.
    for c in numba.prange(chunks.shape[0]):
        a, b = chunks[c, 0], chunks[c, 1]
        _gradient_chunk_at(lab, e, pos, gain, disc, a, b, depth[c], eps, w_min, out, item_cnt)
        _forward_chunk_at(x, lab, e, pos, gain, disc, a, b, depth[c], eps, coef, w_min, item_sum, item_cnt)
    for t in numba.prange(tasks.shape[0] - 1):
        scratch = np.empty(fused_items, e.dtype)
        scratch64 = np.empty(fused_items, np.float64)
        for p in range(tasks[t, 0], min(tasks[t + 1, 0] + 1, sessions.size)):
            s, first, end = _task_rows(tasks, t, sessions, offsets, p)
            start, stop = offsets[s], offsets[s + 1]
            if first == end:  # a task that ends where the next session starts holds none of its rows
                continue
            if fast[s] and stop - start <= fused_items:  # whole in this task (_row_tasks never cuts it)
                _fused_session(x, e, gain, disc, lower_end, order, start, stop, coef, w_min, scratch, scratch64,
                               item_sum, item_cnt, out)
            else:
                _gradient_rows_at(x64, lab64, e, gain, disc, fast, order, lower_end, higher_start, s, start, stop,
                                  first, end, eps64, w_min, out, item_cnt)
                _forward_rows_at(x, x64, lab64, e, gain, disc, fast, lower_end, s, start, first, end, eps64, coef,
                                 w_min, item_sum, item_cnt)


_fused_loop_serial = serial_twin(_fused_loop)


@numba.njit(cache=True, nogil=True)
def _session_sums(offsets, values):  # pragma: no cover - compiled
    out = np.empty(offsets.size - 1)
    for s in range(offsets.size - 1):
        total = 0.0
        for k in range(offsets[s], offsets[s + 1]):
            total += values[k]
        out[s] = total
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _session_totals(offsets, first, second):  # pragma: no cover - compiled
    # the per-session sums of two per-item arrays in one pass, sessions in parallel; each session's sum runs
    # in item order whatever the thread count, so the totals are _session_sums' own
    n_sessions = offsets.size - 1
    out_first, out_second = np.empty(n_sessions), np.empty(n_sessions)
    for s in numba.prange(n_sessions):
        total_first = 0.0
        total_second = 0.0
        for k in range(offsets[s], offsets[s + 1]):
            total_first += first[k]
            total_second += second[k]
        out_first[s] = total_first
        out_second[s] = total_second
    return out_first, out_second


_session_totals_serial = serial_twin(_session_totals)


def _totals(plan: SessionPlan, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with parallel_launch(plan.parallel) as parallel:
        return (_session_totals if parallel else _session_totals_serial)(plan.offsets, first, second)


# ---- direct pass (small calls) --------------------------------------------------------------------------
@numba.njit(**_INLINE)
def _direct_fast_session(x, lab, gain, disc, e, lo, hi, eps, coef, wmin, with_slope, slope):  # pragma: no cover
    # The module doc's fast formulas on one session, each unordered pair once, without a branch on the labels
    # (random labels mispredict one branch in two, which cost more than the pair): the pair's weight is 0 when
    # it ties, and item j's share of the slope is minus item i's (the term depends on x_j - x_i only).
    # The formulas are _loss_term's and _slope_term's, written out: calling those two (fastmath, the weight
    # applied after the division) measured 5-15 % slower per pair here.
    total = 0.0
    count = 0.0
    for i in range(lo, hi):
        xi, li, ei = x[i], lab[i], e[i - lo]
        slope_i = 0.0
        for j in range(i + 1, hi):
            ej = e[j - lo]
            dl = li - lab[j]
            discordant = abs(dl) >= eps
            w = 1.0 if gain is None else abs(gain[i] - gain[j]) * abs(disc[i] - disc[j])
            w = w if discordant else 0.0
            diff = x[j] - xi
            z = diff if dl > 0 else -diff  # x_lo - x_hi
            total += w * (max(z, 0.0) + _log1p_ratio(min(ei, ej), max(ei, ej), coef, wmin))
            count += 1.0 if discordant else 0.0
            if with_slope:
                d_i = w * (-ej if dl > 0 else ei) / (ei + ej)  # d (w softplus(x_lo - x_hi)) / dx_i
                slope_i += d_i
                slope[j] -= d_i
        if with_slope:
            slope[i] += slope_i
    return total, count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _direct_pass(x, lab, gain, disc, inv, offsets, eps, coef, wmin, with_slope, sums, pairs, slope):  # pragma: no cover
    # Each unordered pair once, float64, by the module doc's formulas: one exp per item (sessions spanning
    # more than FAST_SPAN[float64] or holding inf/NaN take the exact ones), log1p by the float64 series.
    span_limit = 600.0  # FAST_SPAN[float64]
    longest = 0
    for s in range(offsets.size - 1):
        longest = max(longest, offsets[s + 1] - offsets[s])
    e = np.empty(longest)
    for s in range(offsets.size - 1):
        lo, hi = offsets[s], offsets[s + 1]
        sums[s] = 0.0
        pairs[s] = 0.0
        if hi - lo < 2:
            continue
        centre, fast = _session_centre(x, lo, hi, span_limit)
        if fast:
            for k in range(lo, hi):
                e[k - lo] = np.exp(x[k] - centre)
            total, count = _direct_fast_session(x, lab, gain, disc, e, lo, hi, eps, coef, wmin, with_slope, slope)
        else:
            total, count = _direct_exact_session(x, lab, gain, disc, lo, hi, eps, with_slope, slope)
        if inv is not None:
            total *= inv[lo]
            if with_slope:
                for k in range(lo, hi):
                    slope[k] *= inv[lo]
        sums[s] = total
        pairs[s] = count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _direct_exact_session(x, lab, gain, disc, lo, hi, eps, with_slope, slope):  # pragma: no cover - compiled
    # the reference's exp/log1p per pair: spans beyond exp's range, inf and NaN behave as there
    total = 0.0
    count = 0.0
    for i in range(lo, hi):
        for j in range(i + 1, hi):
            dl = lab[i] - lab[j]
            if abs(dl) < eps:
                continue
            top, bottom = (i, j) if dl > 0.0 else (j, i)
            z = x[bottom] - x[top]
            w = 1.0 if gain is None else abs(gain[i] - gain[j]) * abs(disc[i] - disc[j])
            total += w * _softplus_exact(z)
            count += 1.0
            if with_slope:
                sig = _sigmoid_exact(z)
                slope[top] -= w * sig
                slope[bottom] += w * sig
    return total, count


_FLOAT64 = np.dtype(np.float64)
_DIRECT_COEFFICIENTS = tuple(1.0 / (2 * k + 1) for k in range(_SERIES_TERMS[_FLOAT64]))


def _direct(plan: DirectPlan, weights: PairWeights | WalkWeights | None, with_slope: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss sum, discordant pairs, d pair sum / dx per item or zeros) of a direct plan, float64."""
    if isinstance(weights, WalkWeights):
        raise TypeError("a DirectPlan reads PairWeights (input order, float64), not WalkWeights")
    sums, pairs, slope = np.empty(plan.lens.size), np.empty(plan.lens.size), np.zeros(plan.x64.size)
    gain, disc, inv = (None, None, None) if weights is None else (weights.gain, weights.discount, weights.inv_ideal)
    _direct_pass(plan.x64, plan.labels64, gain, disc, inv, plan.offsets, FLT_EPSILON, _DIRECT_COEFFICIENTS,
                 _W_MIN[_FLOAT64], with_slope, sums, pairs, slope)
    return sums, pairs, slope


def _weight_arrays(plan: SessionPlan, weights: PairWeights | WalkWeights | None
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gains and discounts in the working precision and the walk's order, the inverse ideal DCG left out.

    The weight of a pair is |G_i - G_j| |D_i - D_j| inv_s; inv_s is per session, so the loops leave it out:
    for PairWeights the drivers multiply each item's sum by its session's inv afterwards, and WalkWeights
    carry it in their discounts.
    """
    if weights is None:
        return None, None
    if isinstance(weights, WalkWeights):
        return weights.gain, weights.discount
    gain = _in_walk_order(plan.order, plan.offsets, weights.gain, plan.e.dtype, plan.parallel)
    return gain, _in_walk_order(plan.order, plan.offsets, weights.discount, plan.e.dtype, plan.parallel)


def logistic_forward(plan: SessionPlan | DirectPlan, weights: PairWeights | WalkWeights | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(loss sum, discordant pairs) per session, float64: the weighted sum of softplus(x_lo - x_hi)."""
    if isinstance(plan, DirectPlan):
        sums, pairs, _ = _direct(plan, weights, with_slope=False)
        return sums, pairs
    gain, disc = _weight_arrays(plan, weights)
    n = plan.x64.size
    item_sum = np.zeros(n)
    item_cnt = np.zeros(n)
    with parallel_launch(plan.parallel) as parallel:
        loop = _forward_loop if parallel else _forward_loop_serial
        loop(plan.x, plan.x64, plan.labels, plan.labels64, plan.e, plan.pos, gain, disc, plan.fast, plan.offsets,
             plan.lower_end, plan.chunks, plan.chunk_depth, plan.row_sessions, plan.row_tasks, plan.eps, FLT_EPSILON,
             plan.coefficients, plan.w_min, item_sum, item_cnt)
    if isinstance(weights, PairWeights):
        item_sum *= weights.inv_ideal  # in the walk's order, but constant over each session
    return _totals(plan, item_sum, item_cnt)


def logistic_gradient(plan: SessionPlan | DirectPlan, weights: PairWeights | WalkWeights | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(d pair sum / dx per item, discordant pairs per session), float64."""
    if isinstance(plan, DirectPlan):
        _, pairs, slope = _direct(plan, weights, with_slope=True)
        return slope, pairs
    gain, disc = _weight_arrays(plan, weights)
    n = plan.x64.size
    out = np.zeros(n)
    item_cnt = np.zeros(n)
    with parallel_launch(plan.parallel) as parallel:
        loop = _gradient_loop if parallel else _gradient_loop_serial
        loop(plan.x64, plan.labels, plan.labels64, plan.e, plan.pos, gain, disc, plan.fast, plan.offsets,
             plan.order, plan.lower_end, plan.higher_start, plan.chunks, plan.chunk_depth, plan.row_sessions,
             plan.row_tasks, plan.eps, FLT_EPSILON, plan.w_min, out, item_cnt)
    if isinstance(weights, PairWeights):
        out *= weights.inv_ideal
    return out, _session_sums(plan.offsets, item_cnt)


def logistic_forward_and_gradient(plan: SessionPlan | DirectPlan, weights: PairWeights | WalkWeights | None = None
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loss sum, discordant pairs, d pair sum / dx per item) on one gradient plan (``full_rows=True``):
    the fused call of the torch path, one planning for both loops (one pass for a direct plan)."""
    if isinstance(plan, DirectPlan):
        return _direct(plan, weights, with_slope=True)
    plan = _forward_rows(plan, FUSED_ITEMS)
    gain, disc = _weight_arrays(plan, weights)
    n = plan.x64.size
    item_sum, item_cnt, slope = np.zeros(n), np.zeros(n), np.zeros(n)
    fused_items = min(FUSED_ITEMS, int(plan.lens[plan.row_sessions].max(initial=0)))
    with parallel_launch(plan.parallel) as parallel:
        (_fused_loop if parallel else _fused_loop_serial)(
            plan.x, plan.x64, plan.labels, plan.labels64, plan.e, plan.pos, gain, disc, plan.fast, plan.offsets,
            plan.order, plan.lower_end, plan.higher_start, plan.chunks, plan.chunk_depth, plan.row_sessions,
            plan.row_tasks, fused_items, plan.eps, FLT_EPSILON, plan.coefficients, plan.w_min, item_sum, item_cnt,
            slope)
    if isinstance(weights, PairWeights):
        item_sum *= weights.inv_ideal  # in the walk's order, but constant over each session
        slope *= weights.inv_ideal
    return (*_totals(plan, item_sum, item_cnt), slope)


# ---- second order (float64, exact per pair: double backward is rare and must be right) ---------------
@numba.njit(cache=True, nogil=True, inline="always")
def _second_order_row(x, lab, v, gain, disc, start, stop, k, eps, hv, vslope, item_cnt):  # pragma: no cover - compiled
    # row k of the loop below
    acc_h = 0.0
    acc_d = 0.0
    cnt = 0.0
    for m in range(start, stop):
        dl = lab[k] - lab[m]
        if abs(dl) < eps:
            continue
        w = 1.0 if gain is None else abs(gain[k] - gain[m]) * abs(disc[k] - disc[m])
        sig = _sigmoid_exact(x[m] - x[k]) if dl > 0.0 else _sigmoid_exact(x[k] - x[m])
        acc_h += w * sig * (1.0 - sig) * (v[k] - v[m])
        acc_d += w * (-sig if dl > 0.0 else sig)
        cnt += 1.0
    hv[k] = acc_h
    vslope[k] = v[k] * acc_d
    item_cnt[k] = 0.5 * cnt


@numba.njit(cache=True, nogil=True, parallel=True)
def _second_order_loop(x, lab, v, gain, disc, offsets, sessions, tasks, eps, hv, vslope,
                       item_cnt):  # pragma: no cover - compiled
    # Row k visits every partner m (both triangles), so rows need no synchronisation:
    # hv[k] = sum_m w_km s_km (1 - s_km) (v_k - v_m) with s_km = sigma(x_lo - x_hi) of the pair,
    # vslope[k] = v_k * d/dx_k (pair sum), item_cnt[k] = partners / 2.
    for t in numba.prange(tasks.shape[0] - 1):
        for p in range(tasks[t, 0], min(tasks[t + 1, 0] + 1, sessions.size)):
            s, first, end = _task_rows(tasks, t, sessions, offsets, p)
            for k in range(first, end):
                _second_order_row(x, lab, v, gain, disc, offsets[s], offsets[s + 1], k, eps, hv, vslope, item_cnt)


_second_order_loop_serial = serial_twin(_second_order_loop)


def logistic_second_order(flat_scores: np.ndarray, labels64: np.ndarray, lens: np.ndarray, direction: np.ndarray,
                          weights: PairWeights | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second-order terms of the pair sums, float64: (H v per item, <v, gradient> per session, pairs per session).

    H is the Hessian of each session's (weighted) pair sum; the caller scales by Y_grad / pairs.
    """
    offsets = session_offsets(lens)
    x = np.ascontiguousarray(flat_scores, dtype=np.float64)
    v = np.ascontiguousarray(direction, dtype=np.float64).reshape(-1)
    visits = int(np.sum(lens * lens))
    threads = numba.get_num_threads()
    worthwhile = visits >= _PARALLEL_PAIRS and threads > 1
    sessions = np.flatnonzero(lens >= 2)
    tasks = _row_tasks(offsets, sessions, True, max(1, threads * _TASKS_PER_THREAD) if worthwhile else 1, 0, False)
    gain = None if weights is None else weights.gain
    disc = None if weights is None else weights.discount
    hv, vslope, item_cnt = np.zeros(x.size), np.zeros(x.size), np.zeros(x.size)
    with parallel_launch(worthwhile) as parallel:
        (_second_order_loop if parallel else _second_order_loop_serial)(x, labels64, v, gain, disc, offsets, sessions,
                                                                        tasks, FLT_EPSILON, hv, vslope, item_cnt)
    if weights is not None:
        hv *= weights.inv_ideal
        vslope *= weights.inv_ideal
    with parallel_launch(worthwhile) as parallel:
        dot, pairs = (_session_totals if parallel else _session_totals_serial)(offsets, vslope, item_cnt)
    return hv, dot, pairs
