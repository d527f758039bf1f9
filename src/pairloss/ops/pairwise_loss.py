r"""PairWiseLoss: the pairwise logistic (RankNet) loss, averaged per session.

For session :math:`s` with items :math:`i` and label-discordant pairs :math:`P_s`
(:math:`|l_i - l_j| \ge \epsilon_{32}`, ties skipped),

.. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \log\bigl(1 + e^{-(x_{hi} - x_{lo})}\bigr)

and :math:`Y_s = 0` when :math:`P_s` is empty (an empty, one-item or all-tied session).
Sessions are contiguous runs of items given by ``lengths``; without it all items are one session.
The loss is small when a larger label comes with a larger score (Burges et al., 2005, "Learning to rank
using gradient descent"; Caffe2's ``rank_loss_op.cc``).

Deliberate differences from Caffe2, for a loss users can trust:

- the softplus is exact (``relu(z) + log1p(exp(-|z|))``) instead of Caffe2's float32 ``logLogit`` with
  cut-offs at :math:`\pm 15.94` (they differ by < 1.2e-7), so the forward matches the gradient op's exact
  sigmoid;
- an empty batch gives one zero per session (shape ``(len(lengths),)``), where Caffe2 returned shape
  ``(0,)`` whatever ``lengths`` said; negative lengths and NaN labels raise instead of giving garbage;
- scores may be float16/32/64 (arithmetic in float64 per pair, outputs in the score dtype) and labels
  any integer or float dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, serial_twin, tl, triton
from pairloss._checks import FLT_EPSILON, as_float_array, check_lengths
from pairloss.ops.sessions import LENGTHS_DOC, per_session_output, prepare_sessions
from pairloss.registry import (
    GI,
    GO,
    I,
    OperatorDef,
    gradient_def,
    operator_schema,
    register_cpu_operator,
    register_cuda_operator,
    register_gradient,
)

__all__ = ["GRADIENT_GRADIENT_SCHEMA", "GRADIENT_SCHEMA", "SCHEMA", "pairwise_loss", "pairwise_loss_gradient"]

SCHEMA = (
    operator_schema("PairWiseLoss")
    .num_inputs(2, 3)
    .num_outputs(1)
    .input(0, "X", "Scores, shape (N,) or (N, 1); float16/32/64.")
    .input(1, "label", "Relevance labels, shape (N,) or (N, 1); integer or float (ties: |difference| < 2^-23).")
    .input(2, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "Y", "Mean pairwise logistic loss per session, shape (S,) ((1,) without lengths); dtype of X.")
    .tensor_inference_function(per_session_output)
    .onnx_decomposition("pairloss.onnx:pairwise_loss_decomposition")
    .set_doc(__doc__)
)

GRADIENT_SCHEMA = (
    operator_schema("PairWiseLossGradient")
    .num_inputs(3, 4)
    .num_outputs(1)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "Gradient with respect to the per-session loss Y, shape (S,).")
    .input(3, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Gradient with respect to X; shape and dtype of X.")
    .identical_type_and_shape(0)
    .gradient_op()
    .set_doc("Gradient of PairWiseLoss with respect to X (exact sigmoid; labels and lengths get none).")
)


GRADIENT_GRADIENT_SCHEMA = (
    operator_schema("PairWiseLossGradientGradient")
    .num_inputs(4, 5)
    .num_outputs(2)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "The Y_grad that PairWiseLossGradient was given, shape (S,).")
    .input(3, "X_grad_grad", "Gradient with respect to PairWiseLossGradient's output X_grad; shape of X.")
    .input(4, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Its gradient with respect to X: per session, Y_grad/|P| times the Hessian of the "
                         "pair sum applied to X_grad_grad (a Hessian-vector product); shape and dtype of X.")
    .output(1, "Y_grad_grad", "Its gradient with respect to Y_grad: per session, the sum of X_grad_grad "
                              "times the session's gradient for Y_grad = 1; shape (S,), dtype of X.")
    .tensor_inference_function(lambda specs, _args: [specs[0], ((specs[2][0][0],), specs[0][1])])
    .gradient_op()
    .set_doc("""Second derivatives of PairWiseLoss: the gradient of PairWiseLossGradient (double backward).

    With :math:`\\sigma_p = \\sigma(x_{lo} - x_{hi})` and :math:`w_p = \\sigma_p (1 - \\sigma_p)` for each
    discordant pair :math:`p`, and :math:`v` = X_grad_grad,

    .. math:: \\text{X\\_grad}_k = \\frac{g_s}{|P_s|} \\sum_{p \\ni k} w_p (v_k - v_{k'}), \\qquad
              \\text{Y\\_grad\\_grad}_s = \\frac{1}{|P_s|} \\sum_{p \\in P_s} \\sigma_p (v_{lo} - v_{hi})

    where :math:`k'` is the other item of pair :math:`p`. It has no gradient itself (third derivatives).""")
)


def _softplus(z: float) -> float:
    # relu(z) + log1p(exp(-|z|)): exact and finite for every finite z, where log(1 + exp(z)) overflows
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# ---- reference (float64, Caffe2's loop order) --------------------------------------------------------
def reference_forward(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths)
    out = np.zeros(lens.size, np.float64)
    offset = 0
    for s, length in enumerate(lens):
        total, pairs = 0.0, 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue  # ties carry no preference
                sign = 1.0 if lab[i] > lab[j] else -1.0
                total += _softplus(sign * (float(flat[j]) - float(flat[i])))
                pairs += 1
        out[s] = total / pairs if pairs else 0.0  # no discordant pair: nothing to learn, loss 0
        offset += length
    return out.astype(x.dtype)


def reference_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                       lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    dx = np.zeros(flat.shape[0], np.float64)
    offset = 0
    for s, length in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                sign = 1.0 if lab[i] > lab[j] else -1.0
                grad = sign * float(g[s]) * _sigmoid(sign * (float(flat[j]) - float(flat[i])))
                dx[i] -= grad
                dx[j] += grad
                pairs += 1
        if pairs:
            dx[offset:offset + length] /= pairs
        offset += length
    return dx.reshape(x.shape).astype(x.dtype)


def _prepare_second_order(scores: npt.ArrayLike, labels: npt.ArrayLike, loss_grad: npt.ArrayLike,
                          direction: npt.ArrayLike, lengths: npt.ArrayLike | None) -> tuple[np.ndarray, ...]:
    """prepare_sessions plus the direction X_grad_grad, which must have the shape of X."""
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    v = as_float_array("X_grad_grad", direction)
    if v.shape != x.shape:
        msg = f"X_grad_grad must have the shape of X, {x.shape}; got shape {v.shape}"
        raise ValueError(msg)
    return x, flat, lab, lens, g, v.reshape(-1)


def reference_gradient_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                                direction: np.ndarray, lengths: np.ndarray | None = None
                                ) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = _prepare_second_order(scores, labels, loss_grad, direction, lengths)
    hv = np.zeros(flat.shape[0], np.float64)
    gg = np.zeros(lens.size, np.float64)
    offset = 0
    for s, length in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                sig = _sigmoid(float(flat[lo]) - float(flat[hi]))
                w = sig * (1.0 - sig)
                hv[i] += w * (float(v[i]) - float(v[j]))
                hv[j] += w * (float(v[j]) - float(v[i]))
                gg[s] += sig * (float(v[lo]) - float(v[hi]))
                pairs += 1
        if pairs:
            hv[offset:offset + length] *= float(g[s]) / pairs
            gg[s] /= pairs
        offset += length
    return hv.reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CPU kernels --------------------------------------------------------------------------------------
# Fused Numba loops over the pairs of each session: no n x n matrix, no sort, no allocation per session.
#
# Work is cut into row ranges ("tasks") of about equal pair counts: many small sessions share a task,
# one huge session is split over several, so the same prange keeps every thread busy in both cases.
# Forward: row i sums its pairs (i, j < i) into row_sum[i] and row_cnt[i], which are added per session
# in float64 afterwards. Gradient: row k sums over all partners m of its session (both triangles), so each
# row writes only its own entry and rows need no synchronisation; the cost is twice the pair visits.
#
# The fast path avoids exp and log per pair. With e_k = exp(x_k - c_s) (c_s the session's mid score):
#   sigmoid(x_lo - x_hi) = e_lo / (e_lo + e_hi)                    (one division)
#   softplus(x_lo - x_hi) = relu(x_lo - x_hi) + log1p(q),  q = min(e)/max(e) = exp(-|x_hi - x_lo|),
#   log1p(q) = 2 atanh(t),  t = q / (2 + q) = min(e) / (2 max(e) + min(e)) in [0, 1/3]
# and atanh is its odd Taylor series in t^2 <= 1/9, cut after 16 terms (truncation < 2e-17 relative).
# Both are branch-free, so LLVM vectorises the inner loops. The only extra rounding is that of x - c_s,
# about 2^-53 * max|x - c_s| absolute in the exponent: relative errors ~1e-15 for ordinary scores.
# A session whose scores are not finite or span more than _FAST_SPAN (exp(+-_FAST_SPAN/2) must stay
# normal) takes the exact per-pair path, the reference's formulas, so 1e30, inf and NaN behave as there.
_FAST_SPAN = 1000.0
_ROW_OVERHEAD = 8  # per-row cost in "pairs", for splitting work into tasks
_TASKS_PER_THREAD = 8
_SERIAL_WORK = 1 << 17  # pair visits below which a parallel launch costs more than it saves
# reassociation lets LLVM vectorise the row sums; error_model="numpy" drops the zero-division branch
# (every divisor here is >= the larger e, so > 0). No "nnan"/"ninf": NaN must still compare as NaN.
_FASTMATH = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, nogil=True)
def _split_rows(offsets, n_tasks, full_rows):  # pragma: no cover - compiled
    """Row boundaries of about ``n_tasks`` tasks of equal work (pairs visited plus a per-row overhead)."""
    n_sessions = offsets.size - 1
    total = 0.0
    for s in range(n_sessions):
        n = offsets[s + 1] - offsets[s]
        total += (n * n if full_rows else n * (n - 1) // 2) + _ROW_OVERHEAD * n
    bounds = np.empty(n_tasks + 1, np.int64)
    bounds[0] = 0
    k = 1
    step = total / n_tasks
    done = 0.0
    for s in range(n_sessions):
        off, n = offsets[s], offsets[s + 1] - offsets[s]
        for r in range(n):
            done += (n if full_rows else r) + _ROW_OVERHEAD
            while k < n_tasks and done >= k * step:
                bounds[k] = off + r + 1
                k += 1
    while k <= n_tasks:
        bounds[k] = offsets[n_sessions]
        k += 1
    return bounds


@numba.njit(cache=True, nogil=True)
def _exp_centered(x, offsets, s, e):  # pragma: no cover - compiled
    """e[k] = exp(x[k] - c) over session s; False (and e untouched) when the fast path does not apply."""
    lo, hi = offsets[s], offsets[s + 1]
    if hi - lo < 2:
        return False
    xmin, xmax = x[lo], x[lo]
    for k in range(lo, hi):
        xmin = min(xmin, x[k])
        xmax = max(xmax, x[k])
    if not (xmax - xmin <= _FAST_SPAN):  # also False for inf and NaN
        return False
    center = 0.5 * xmin + 0.5 * xmax
    for k in range(lo, hi):
        e[k] = np.exp(x[k] - center)
    return True


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _log1p_ratio(a, b):  # pragma: no cover - compiled
    """log1p(a / b) for 0 < a <= b, branch-free (see above)."""
    t = a / (b + b + a)
    w = t * t
    p = 1.0 / 31.0
    p = p * w + 1.0 / 29.0
    p = p * w + 1.0 / 27.0
    p = p * w + 1.0 / 25.0
    p = p * w + 1.0 / 23.0
    p = p * w + 1.0 / 21.0
    p = p * w + 1.0 / 19.0
    p = p * w + 1.0 / 17.0
    p = p * w + 1.0 / 15.0
    p = p * w + 1.0 / 13.0
    p = p * w + 1.0 / 11.0
    p = p * w + 1.0 / 9.0
    p = p * w + 1.0 / 7.0
    p = p * w + 1.0 / 5.0
    p = p * w + 1.0 / 3.0
    p = p * w + 1.0
    return 2.0 * t * p


@numba.njit(cache=True, nogil=True)
def _softplus_exact(z):  # pragma: no cover - compiled
    return max(z, 0.0) + np.log1p(np.exp(-abs(z)))


@numba.njit(cache=True, nogil=True)
def _sigmoid_exact(z):  # pragma: no cover - compiled
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    ez = np.exp(z)
    return ez / (1.0 + ez)


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _forward_row_fast(x, lab, e, i, start):  # pragma: no cover - compiled
    xi, li, ei = x[i], lab[i], e[i]
    total = 0.0
    pairs = 0
    for j in range(start, i):
        dl = li - lab[j]
        ej = e[j]
        z = (x[j] - xi) if dl > 0.0 else (xi - x[j])  # x_lo - x_hi
        small = ej if ej < ei else ei
        big = ei if ej < ei else ej
        term = (z if z > 0.0 else 0.0) + _log1p_ratio(small, big)
        counted = abs(dl) >= FLT_EPSILON  # |dl| < 2^-23: a tie, skipped
        total += term if counted else 0.0
        pairs += counted
    return total, pairs


@numba.njit(cache=True, nogil=True)
def _forward_row_exact(x, lab, i, start):  # pragma: no cover - compiled
    xi, li = x[i], lab[i]
    total = 0.0
    pairs = 0
    for j in range(start, i):
        dl = li - lab[j]
        if abs(dl) < FLT_EPSILON:
            continue
        total += _softplus_exact((x[j] - xi) if dl > 0.0 else (xi - x[j]))
        pairs += 1
    return total, pairs


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _gradient_row_fast(lab, e, k, start, stop):  # pragma: no cover - compiled
    lk, ek = lab[k], e[k]
    total = 0.0
    pairs = 0
    for m in range(start, stop):  # m == k is a tie (dl = 0) and drops out
        dl = lk - lab[m]
        em = e[m]
        # k above m: d/dx_k softplus(x_m - x_k) = -sigmoid(x_m - x_k) = -e_m / (e_m + e_k); below: +e_k / (...)
        v = (-em if dl > 0.0 else ek) / (ek + em)
        counted = abs(dl) >= FLT_EPSILON
        total += v if counted else 0.0
        pairs += counted
    return total, pairs


@numba.njit(cache=True, nogil=True)
def _gradient_row_exact(x, lab, k, start, stop):  # pragma: no cover - compiled
    xk, lk = x[k], lab[k]
    total = 0.0
    pairs = 0
    for m in range(start, stop):
        dl = lk - lab[m]
        if abs(dl) < FLT_EPSILON:
            continue
        if dl > 0.0:
            total -= _sigmoid_exact(x[m] - xk)
        else:
            total += _sigmoid_exact(xk - x[m])
        pairs += 1
    return total, pairs


@numba.njit(cache=True, parallel=True, nogil=True)
def _forward_loop(x, lab, offsets, bounds, out):  # pragma: no cover - compiled
    n_sessions = offsets.size - 1
    e = np.empty(x.size)
    fast = np.zeros(n_sessions, np.bool_)
    for s in numba.prange(n_sessions):
        fast[s] = _exp_centered(x, offsets, s, e)
    row_sum = np.empty(x.size)
    row_cnt = np.empty(x.size, np.int64)
    for t in numba.prange(bounds.size - 1):
        r0, r1 = bounds[t], bounds[t + 1]
        if r0 == r1:
            continue
        s = np.searchsorted(offsets, r0, side="right") - 1
        for i in range(r0, r1):
            while i >= offsets[s + 1]:
                s += 1
            if fast[s]:
                row_sum[i], row_cnt[i] = _forward_row_fast(x, lab, e, i, offsets[s])
            else:
                row_sum[i], row_cnt[i] = _forward_row_exact(x, lab, i, offsets[s])
    for s in numba.prange(n_sessions):
        total = 0.0
        pairs = 0
        for i in range(offsets[s], offsets[s + 1]):
            total += row_sum[i]
            pairs += row_cnt[i]
        out[s] = total / pairs if pairs else 0.0  # no discordant pair: nothing to learn, loss 0


@numba.njit(cache=True, parallel=True, nogil=True)
def _gradient_loop(x, lab, g, offsets, bounds, out):  # pragma: no cover - compiled
    n_sessions = offsets.size - 1
    e = np.empty(x.size)
    fast = np.zeros(n_sessions, np.bool_)
    for s in numba.prange(n_sessions):
        fast[s] = _exp_centered(x, offsets, s, e)
    row_cnt = np.empty(x.size, np.int64)
    for t in numba.prange(bounds.size - 1):
        r0, r1 = bounds[t], bounds[t + 1]
        if r0 == r1:
            continue
        s = np.searchsorted(offsets, r0, side="right") - 1
        for k in range(r0, r1):
            while k >= offsets[s + 1]:
                s += 1
            if fast[s]:
                out[k], row_cnt[k] = _gradient_row_fast(lab, e, k, offsets[s], offsets[s + 1])
            else:
                out[k], row_cnt[k] = _gradient_row_exact(x, lab, k, offsets[s], offsets[s + 1])
    for s in numba.prange(n_sessions):
        pairs = 0
        for k in range(offsets[s], offsets[s + 1]):
            pairs += row_cnt[k]
        pairs //= 2  # every pair was visited from both ends
        scale = g[s] / pairs if pairs else 0.0
        for k in range(offsets[s], offsets[s + 1]):
            out[k] *= scale


@numba.njit(cache=True, parallel=True, nogil=True)
def _second_order_loop(x, lab, g, v, offsets, bounds, hv, gg):  # pragma: no cover - compiled
    # Row k visits every partner m of its session (both triangles), so rows need no synchronisation:
    # hv[k] = sum_m w_km (v_k - v_m), vraw[k] = v_k * (d/dx_k of the pair sum), row_cnt[k] = partners.
    n_sessions = offsets.size - 1
    row_cnt = np.empty(x.size, np.int64)
    vraw = np.empty(x.size)
    for t in numba.prange(bounds.size - 1):
        r0, r1 = bounds[t], bounds[t + 1]
        if r0 == r1:
            continue
        s = np.searchsorted(offsets, r0, side="right") - 1
        for k in range(r0, r1):
            while k >= offsets[s + 1]:
                s += 1
            xk, lk, vk = x[k], lab[k], v[k]
            acc_h = 0.0
            acc_d = 0.0
            cnt = 0
            for m in range(offsets[s], offsets[s + 1]):
                dl = lk - lab[m]
                if abs(dl) < FLT_EPSILON:
                    continue
                # sigma of (x_lo - x_hi); d/dx_k of softplus(x_lo - x_hi) is -sigma above m, +sigma below
                sig = _sigmoid_exact(x[m] - xk) if dl > 0.0 else _sigmoid_exact(xk - x[m])
                acc_h += sig * (1.0 - sig) * (vk - v[m])
                acc_d += -sig if dl > 0.0 else sig
                cnt += 1
            hv[k] = acc_h
            vraw[k] = vk * acc_d
            row_cnt[k] = cnt
    for s in numba.prange(n_sessions):
        pairs = 0
        total = 0.0
        for k in range(offsets[s], offsets[s + 1]):
            pairs += row_cnt[k]
            total += vraw[k]
        pairs //= 2
        scale = g[s] / pairs if pairs else 0.0
        for k in range(offsets[s], offsets[s + 1]):
            hv[k] *= scale
        gg[s] = total / pairs if pairs else 0.0


_forward_loop_serial = serial_twin(_forward_loop)
_gradient_loop_serial = serial_twin(_gradient_loop)
_second_order_loop_serial = serial_twin(_second_order_loop)


def _layout(flat: np.ndarray, lens: np.ndarray, full_rows: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """float64 scores, session offsets, task bounds for the loops, and whether to run them in parallel."""
    offsets = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    work = int(np.sum(lens * lens if full_rows else lens * (lens - 1) // 2)) + _ROW_OVERHEAD * flat.size
    parallel = work >= _SERIAL_WORK and numba.get_num_threads() > 1
    n_tasks = max(1, min(flat.size, numba.get_num_threads() * _TASKS_PER_THREAD)) if parallel else 1
    bounds = _split_rows(offsets, n_tasks, full_rows)
    return np.ascontiguousarray(flat, dtype=np.float64), offsets, bounds, parallel


def forward_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths)
    x64, offsets, bounds, parallel = _layout(flat, lens, full_rows=False)
    out = np.zeros(lens.size, np.float64)
    (_forward_loop if parallel else _forward_loop_serial)(x64, lab, offsets, bounds, out)
    return out.astype(x.dtype)


def gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                 lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    x64, offsets, bounds, parallel = _layout(flat, lens, full_rows=True)
    dx = np.zeros(flat.shape[0], np.float64)
    (_gradient_loop if parallel else _gradient_loop_serial)(x64, lab, g.astype(np.float64), offsets, bounds, dx)
    return dx.reshape(x.shape).astype(x.dtype)


def gradient_gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray, direction: np.ndarray,
                          lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = _prepare_second_order(scores, labels, loss_grad, direction, lengths)
    x64, offsets, bounds, parallel = _layout(flat, lens, full_rows=True)
    hv = np.zeros(flat.shape[0], np.float64)
    gg = np.zeros(lens.size, np.float64)
    loop = _second_order_loop if parallel else _second_order_loop_serial
    loop(x64, lab, g.astype(np.float64), v.astype(np.float64), offsets, bounds, hv, gg)
    return hv.reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CUDA kernels (torch tensors) ---------------------------------------------------------------------
# One Triton program per (session, block of rows); it walks its session's columns block by block, so
# nothing n x n is ever materialised. Arithmetic is float32 (float64 for float64 scores), labels are
# compared in float64, softplus is relu(z) + log1p(exp(-|z|)) with Kahan's log1p (Triton has no portable
# log1p), and the sigmoid is the stable one. Partial sums go to a
# (sessions, row blocks) buffer and are reduced in float64 afterwards: deterministic, no atomics.
forward_cuda: Any = None
gradient_cuda: Any = None
_BLOCK_ROWS = 32
_BLOCK_COLS = 64


def _prepare_cuda(scores: Any, labels: Any, lengths: Any, loss_grad: Any = None) -> tuple[Any, ...]:
    """prepare_sessions for tensors: (scores, flat scores, float64 labels, int64 lengths on host[, loss_grad])."""
    import torch

    if scores.dtype not in (torch.float16, torch.float32, torch.float64):
        msg = f"scores must be a float16, float32 or float64 tensor; got dtype={scores.dtype}"
        raise TypeError(msg)
    if scores.dim() == 0 or any(d != 1 for d in scores.shape[1:]):
        msg = f"scores must have shape (N,) or (N, 1) (one score per item); got shape {tuple(scores.shape)}"
        raise ValueError(msg)
    n = scores.shape[0]
    if labels.dtype == torch.bool or labels.is_complex():
        msg = f"labels must be an integer or float tensor; got dtype={labels.dtype}"
        raise TypeError(msg)
    if labels.dim() not in (1, 2) or (labels.dim() == 2 and labels.shape[1] != 1) or labels.shape[0] != n:
        msg = f"labels must have shape ({n},) or ({n}, 1), one per score; got shape {tuple(labels.shape)}"
        raise ValueError(msg)
    lab = labels.reshape(n).to(torch.float64).contiguous()
    if bool(torch.isnan(lab).any()):
        msg = "labels contain NaN"
        raise ValueError(msg)
    lens = check_lengths(None if lengths is None else lengths.detach().cpu().numpy(), n)
    flat = scores.reshape(n).contiguous()
    if loss_grad is None:
        return scores, flat, lab, lens
    if tuple(loss_grad.shape) != (lens.size,):
        msg = f"loss_grad must have one entry per session, shape ({lens.size},); got shape {tuple(loss_grad.shape)}"
        raise ValueError(msg)
    return scores, flat, lab, lens, loss_grad


if HAS_TRITON:

    @triton.jit
    def _log1p(q):
        # Kahan's log1p from log: u = 1 + q rounds, and log(u) * q / (u - 1) cancels that rounding
        # (a few ulp in the working precision; no float literal has to carry float64 digits)
        u = 1.0 + q
        return tl.where(u == 1.0, q, tl.log(u) * (q / tl.where(u == 1.0, 1.0, u - 1.0)))

    @triton.jit
    def _load_items(x_ptr, lab_ptr, start, idx, ok, IS_F64: tl.constexpr):
        # scores in the working precision (float64 only for float64 scores), labels as stored (float64)
        x = tl.load(x_ptr + start + idx, mask=ok, other=0.0)
        x = x.to(tl.float64) if IS_F64 else x.to(tl.float32)
        return x, tl.load(lab_ptr + start + idx, mask=ok, other=0.0)

    @triton.jit
    def _forward_kernel(x_ptr, lab_ptr, off_ptr, sum_ptr, cnt_ptr, n_row_blocks, eps,
                        IS_F64: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        s = tl.program_id(0)
        rb = tl.program_id(1)
        start = tl.load(off_ptr + s)
        n = tl.load(off_ptr + s + 1) - start
        rows = rb * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n
        xi, li = _load_items(x_ptr, lab_ptr, start, rows, row_ok, IS_F64)
        acc = tl.zeros([BLOCK_ROWS], dtype=tl.float64 if IS_F64 else tl.float32)
        cnt = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
        # pairs (i, j < i): columns up to the block's last row, none when the block lies past the session
        stop = tl.where(rb * BLOCK_ROWS < n, tl.minimum(n, (rb + 1) * BLOCK_ROWS), 0)
        for c0 in range(0, stop, BLOCK_COLS):
            cols = c0 + tl.arange(0, BLOCK_COLS)
            col_ok = cols < n
            xj, lj = _load_items(x_ptr, lab_ptr, start, cols, col_ok, IS_F64)
            dl = li[:, None] - lj[None, :]
            counted = (row_ok[:, None] & col_ok[None, :] & (cols[None, :] < rows[:, None])
                       & (tl.abs(dl) >= eps))
            z = tl.where(dl > 0, xj[None, :] - xi[:, None], xi[:, None] - xj[None, :])  # x_lo - x_hi
            loss = tl.maximum(z, 0.0) + _log1p(tl.exp(-tl.abs(z)))
            acc += tl.sum(tl.where(counted, loss, 0.0), axis=1)
            cnt += tl.sum(counted.to(tl.int32), axis=1)
        tl.store(sum_ptr + s * n_row_blocks + rb, tl.sum(acc, axis=0).to(tl.float64))
        tl.store(cnt_ptr + s * n_row_blocks + rb, tl.sum(cnt, axis=0).to(tl.int64))

    @triton.jit
    def _gradient_kernel(x_ptr, lab_ptr, off_ptr, raw_ptr, cnt_ptr, eps,
                         IS_F64: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        s = tl.program_id(0)
        rb = tl.program_id(1)
        start = tl.load(off_ptr + s)
        n = tl.load(off_ptr + s + 1) - start
        rows = rb * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n
        xi, li = _load_items(x_ptr, lab_ptr, start, rows, row_ok, IS_F64)
        acc = tl.zeros([BLOCK_ROWS], dtype=tl.float64 if IS_F64 else tl.float32)
        cnt = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
        # every partner of row i, both triangles, so each program writes only its own rows
        stop = tl.where(rb * BLOCK_ROWS < n, n, 0)
        for c0 in range(0, stop, BLOCK_COLS):
            cols = c0 + tl.arange(0, BLOCK_COLS)
            col_ok = cols < n
            xj, lj = _load_items(x_ptr, lab_ptr, start, cols, col_ok, IS_F64)
            dl = li[:, None] - lj[None, :]
            counted = row_ok[:, None] & col_ok[None, :] & (tl.abs(dl) >= eps)  # j == i is a tie
            z = tl.where(dl > 0, xj[None, :] - xi[:, None], xi[:, None] - xj[None, :])  # x_lo - x_hi
            ez = tl.exp(-tl.abs(z))
            sig = tl.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))  # sigmoid(x_lo - x_hi)
            acc += tl.sum(tl.where(counted, tl.where(dl > 0, -sig, sig), 0.0), axis=1)
            cnt += tl.sum(counted.to(tl.int32), axis=1)
        tl.store(raw_ptr + start + rows, acc.to(tl.float64), mask=row_ok)
        tl.store(cnt_ptr + start + rows, cnt.to(tl.int64), mask=row_ok)

    def _device_layout(flat: Any, lens: np.ndarray) -> tuple[Any, Any, int]:
        import torch

        offsets = np.zeros(lens.size + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        n_row_blocks = max(1, triton.cdiv(int(lens.max(initial=0)), _BLOCK_ROWS))
        return torch.from_numpy(offsets).to(flat.device), torch.from_numpy(lens).to(flat.device), n_row_blocks

    def forward_cuda(scores: Any, labels: Any, lengths: Any = None) -> Any:  # type: ignore[no-redef]
        import torch

        x, flat, lab, lens = _prepare_cuda(scores, labels, lengths)
        n_sessions = lens.size
        offsets, _, n_row_blocks = _device_layout(flat, lens)
        sums = torch.zeros((n_sessions, n_row_blocks), dtype=torch.float64, device=flat.device)
        counts = torch.zeros((n_sessions, n_row_blocks), dtype=torch.int64, device=flat.device)
        if n_sessions and flat.numel():
            _forward_kernel[(n_sessions, n_row_blocks)](
                flat, lab, offsets, sums, counts, n_row_blocks, FLT_EPSILON,
                IS_F64=flat.dtype == torch.float64, BLOCK_ROWS=_BLOCK_ROWS, BLOCK_COLS=_BLOCK_COLS)
        total, pairs = sums.sum(dim=1), counts.sum(dim=1)
        loss = torch.where(pairs > 0, total / pairs.clamp_min(1), torch.zeros_like(total))
        return loss.to(x.dtype)

    def gradient_cuda(scores: Any, labels: Any, loss_grad: Any, lengths: Any = None) -> Any:  # type: ignore[no-redef]
        import torch

        x, flat, lab, lens, g = _prepare_cuda(scores, labels, lengths, loss_grad)
        n_sessions = lens.size
        offsets, lens_t, n_row_blocks = _device_layout(flat, lens)
        raw = torch.zeros(flat.numel(), dtype=torch.float64, device=flat.device)
        counts = torch.zeros(flat.numel(), dtype=torch.int64, device=flat.device)
        if n_sessions and flat.numel():
            _gradient_kernel[(n_sessions, n_row_blocks)](
                flat, lab, offsets, raw, counts, FLT_EPSILON,
                IS_F64=flat.dtype == torch.float64, BLOCK_ROWS=_BLOCK_ROWS, BLOCK_COLS=_BLOCK_COLS)
        session = torch.repeat_interleave(torch.arange(n_sessions, device=flat.device), lens_t)
        pairs = torch.zeros(n_sessions, dtype=torch.int64, device=flat.device).index_add_(0, session, counts) // 2
        scale = torch.where(pairs > 0, g.to(torch.float64) / pairs.clamp_min(1), 0.0)
        return (raw * scale[session]).reshape(x.shape).to(x.dtype)


# ---- gradient definition ------------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    # lengths moves from input 2 to input 3 and is appended only when the forward op had it
    inputs: list[Any] = [I(0), I(1), GO(0)] + ([I(2)] if len(op.inputs) == 3 else [])
    return [gradient_def(op, "PairWiseLossGradient", inputs, [GI(0)])]


def _second_order_maker(op: OperatorDef) -> list[OperatorDef]:
    # PairWiseLossGradient(X, label, Y_grad[, lengths]) -> X_grad; its gradient reads the same blobs and
    # the gradient of X_grad, and gives those of X and of Y_grad (labels and lengths get none)
    inputs: list[Any] = [I(0), I(1), I(2), GO(0)] + ([I(3)] if len(op.inputs) == 4 else [])
    return [gradient_def(op, "PairWiseLossGradientGradient", inputs, [GI(0), GI(2)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_cuda_operator(SCHEMA, forward_cuda)
register_gradient(SCHEMA, _gradient_maker)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)
register_cuda_operator(GRADIENT_SCHEMA, gradient_cuda)
register_gradient(GRADIENT_SCHEMA, _second_order_maker)
register_cpu_operator(GRADIENT_GRADIENT_SCHEMA, gradient_gradient_cpu, reference=reference_gradient_gradient)


# ---- public NumPy functions ---------------------------------------------------------------------------
def pairwise_loss(scores: npt.ArrayLike, labels: npt.ArrayLike,
                  lengths: npt.ArrayLike | None = None) -> np.ndarray:
    r"""Pairwise logistic (RankNet) loss per session, Caffe2's PairWiseLoss.

    .. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \log\bigl(1 + e^{-(x_{hi} - x_{lo})}\bigr)

    Args:
        scores: Scores, shape (N,) or (N, 1), float16/32/64.
        labels: Relevance labels, shape (N,) or (N, 1), integer or float; pairs whose labels differ by
            less than 2^-23 are ties and are skipped.
        lengths: Session sizes, 1-D non-negative integers summing to N. None: one session.

    Returns:
        Shape (S,) (or (1,) without ``lengths``), dtype of ``scores``: the mean over each session's
        label-discordant pairs; 0 for an empty, one-item or all-tied session.

    Raises:
        ValueError: wrong shapes, lengths not summing to N or negative, NaN labels.
        TypeError: non-float scores, non-integer lengths.

    Examples:
        >>> import numpy as np
        >>> scores = np.array([2.0, 1.0, 0.0, 3.0, 3.0], np.float32)
        >>> labels = np.array([1, 0, 0, 2, 2])
        >>> pairwise_loss(scores, labels, lengths=np.array([3, 2]))   # session 2 is all tied
        array([0.22009484, 0.        ], dtype=float32)

    References:
        Burges et al., 2005, "Learning to rank using gradient descent".
    """
    return forward_cpu(scores, labels, lengths)


def pairwise_loss_gradient(scores: npt.ArrayLike, labels: npt.ArrayLike, loss_grad: npt.ArrayLike,
                           lengths: npt.ArrayLike | None = None) -> np.ndarray:
    """Gradient of :func:`pairwise_loss` with respect to ``scores`` given ``loss_grad`` of shape (S,).

    Examples:
        >>> import numpy as np
        >>> pairwise_loss_gradient(np.array([0.0, 0.0]), np.array([1, 0]), np.array([1.0]))
        array([-0.5,  0.5])
    """
    return gradient_cpu(scores, labels, loss_grad, lengths)
