r"""LambdaRankLoss: the pairwise logistic loss with each pair weighted by the NDCG change of swapping it.

For session :math:`s`, rank every item by its current score (descending; equal scores keep their input
order), and let :math:`G_i` be its gain (:math:`2^{l_i} - 1`, or :math:`l_i` with ``gain="linear"``),
:math:`D_i = 1/\log_2(1 + \text{rank}_i)` its discount (0 beyond rank ``topn`` when ``topn > 0``) and
:math:`\text{IDCG}_s` the session's ideal DCG (cut at ``topn`` likewise). Each label-discordant pair gets the
weight

.. math:: w_{ij} = \frac{|G_i - G_j|\,|D_i - D_j|}{\text{IDCG}_s} = |\Delta \text{NDCG}_{ij}|,

the change in the session's NDCG if :math:`i` and :math:`j` swapped places, and

.. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} w_{hi,lo}\,\log\bigl(1 + e^{-\sigma (x_{hi} - x_{lo})}\bigr)

normalised, like PairWiseLoss, by the number of discordant pairs :math:`|P_s|` (ties skipped the same way;
``Y_s = 0`` without pairs or when IDCG is 0). With ``topn`` only pairs with an item in the current top
``topn`` carry weight. The weights depend on the scores only through the ranking, which is piecewise
constant: they are **constants for the gradient** (as in LightGBM's lambdarank, TF-Ranking's
``NDCGLambdaWeight`` and Rax's ``dcg_lambdaweight``), so the gradient is LambdaRank's lambdas,
:math:`\partial Y_s / \partial x_{hi} = -\sigma\,w\,\sigma(-\sigma(x_{hi} - x_{lo})) / |P_s|`.

References: Burges, Ragno & Le, 2006, "Learning to rank with nonsmooth cost functions"; Burges, 2010,
"From RankNet to LambdaRank to LambdaMART: an overview"; Wang et al., 2018, "The LambdaLoss framework for
ranking metric optimization".
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, parallel_launch, serial_twin
from pairloss._checks import FLT_EPSILON
from pairloss.ops.pair_loops import (
    DirectPlan,
    PairWeights,
    SessionPlan,
    WalkWeights,
    integer_grades,
    logistic_forward,
    logistic_forward_and_gradient,
    logistic_gradient,
    logistic_second_order,
    plan_sessions,
)
from pairloss.ops.pair_loops_cuda import (
    LOGISTIC,
    CudaSessions,
    check_loss_grad,
    pair_rows,
    prepare_sessions_cuda,
    raise_if_bad_labels,
    scale_rows,
    session_mean,
    session_sums,
)
from pairloss.ops.pairwise_loss import working_precision
from pairloss.ops.sessions import (
    LENGTHS_DOC,
    KeptScratch,
    per_session_output,
    prepare_second_order,
    prepare_sessions,
    scale_unit_gradient,
    session_offsets,
    sigmoid,
    softplus,
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
    "GAINS",
    "GRADIENT_GRADIENT_SCHEMA",
    "GRADIENT_SCHEMA",
    "SCHEMA",
    "lambdarank_loss",
    "lambdarank_loss_gradient",
    "lambdarank_weights",
]

GAINS = ("exp2", "linear")
_MAX_EXP2_LABEL = 1023  # 2**1024 - 1 overflows float64
_SIGMA_DOC = "Scale of the score difference in the logistic loss, log(1 + exp(-sigma (x_hi - x_lo)))."
_TOPN_DOC = "Truncation: only pairs with an item in the current top `topn` carry weight (0: all pairs)."
_GAIN_DOC = "Label gain: 'exp2' (2**label - 1, the NDCG of LightGBM and LETOR) or 'linear' (label)."


def _args(schema: Any) -> Any:
    return (schema.arg("sigma", float, default=1.0, doc=_SIGMA_DOC)
            .arg("topn", int, default=0, doc=_TOPN_DOC)
            .arg("gain", str, default="exp2", doc=_GAIN_DOC))


SCHEMA = _args(
    operator_schema("LambdaRankLoss")
    .num_inputs(2, 3)
    .num_outputs(1)
    .input(0, "X", "Scores, shape (N,) or (N, 1); float16/32/64.")
    .input(1, "label", "Relevance grades, shape (N,) or (N, 1); non-negative integers or floats.")
    .input(2, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "Y", "LambdaRank-weighted pairwise logistic loss per session, shape (S,); dtype of X.")
    .tensor_inference_function(per_session_output)
    .onnx_decomposition("pairloss.onnx:lambdarank_loss_decomposition")
    .set_doc(__doc__)
)

GRADIENT_SCHEMA = _args(
    operator_schema("LambdaRankLossGradient")
    .num_inputs(3, 4)
    .num_outputs(1)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "Gradient with respect to the per-session loss Y, shape (S,).")
    .input(3, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Gradient with respect to X (the lambdas times Y_grad / |P|); shape and dtype of X.")
    .identical_type_and_shape(0)
    .gradient_op()
    .set_doc("Gradient of LambdaRankLoss with respect to X, the pair weights held constant.")
)

GRADIENT_GRADIENT_SCHEMA = _args(
    operator_schema("LambdaRankLossGradientGradient")
    .num_inputs(4, 5)
    .num_outputs(2)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "The Y_grad that LambdaRankLossGradient was given, shape (S,).")
    .input(3, "X_grad_grad", "Gradient with respect to LambdaRankLossGradient's output X_grad; shape of X.")
    .input(4, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Its gradient with respect to X (the weighted Hessian-vector product, weights "
                         "constant); shape and dtype of X.")
    .output(1, "Y_grad_grad", "Its gradient with respect to Y_grad; shape (S,), dtype of X.")
    .tensor_inference_function(lambda specs, _args: [specs[0], ((specs[2][0][0],), specs[0][1])])
    .gradient_op()
    .set_doc("Second derivatives of LambdaRankLoss (double backward), the pair weights held constant. Its "
             "gradient covers X_grad_grad (forward over reverse mode); third derivatives in X and Y_grad are "
             "not implemented.")
    .gradient_not_implemented(0, 2)
)


# ---- weights ------------------------------------------------------------------------------------------
def _check_args(labels64: np.ndarray, sigma: float, topn: int, gain: str) -> None:
    if gain not in GAINS:
        msg = f"gain must be one of {GAINS}; got {gain!r}"
        raise ValueError(msg)
    if topn < 0:
        msg = f"topn must be >= 0 (0: no truncation); got {topn}"
        raise ValueError(msg)
    if not (sigma > 0 and math.isfinite(sigma)):
        msg = f"sigma must be a positive finite number; got {sigma}"
        raise ValueError(msg)
    if not labels64.size:
        return
    lowest, highest = _label_range(labels64)
    if lowest < 0:
        msg = f"labels must be non-negative relevance grades for NDCG gains; got min {lowest}"
        raise ValueError(msg)
    if gain == "exp2" and highest > _MAX_EXP2_LABEL:
        msg = (f"gain='exp2' needs labels <= {_MAX_EXP2_LABEL} (2**label - 1 overflows float64); got max "
               f"{highest}; use gain='linear'")
        raise ValueError(msg)


@numba.njit(cache=True, nogil=True)
def _label_range(labels64):  # pragma: no cover - compiled
    # (min, max) of the non-empty labels in one pass (NumPy's min and max took two); the labels are finite
    lowest = highest = labels64[0]
    for k in range(1, labels64.size):
        lowest = min(lowest, labels64[k])
        highest = max(highest, labels64[k])
    return lowest, highest


def _scaled(flat: np.ndarray, sigma: float) -> np.ndarray:
    """sigma * scores; the scores themselves for sigma = 1 (the identity: no N-sized product and copy)."""
    return flat if sigma == 1.0 else flat * sigma


_COUNT_MAX = 160  # sessions up to this size are ranked by counting (O(n^2), branch-free), longer ones sorted
_COUNT_LANES = 16  # the counting loop's vector width (float32 with AVX-512), to which a session is padded
_PADDED_COUNT = (_COUNT_MAX + _COUNT_LANES - 1) // _COUNT_LANES * _COUNT_LANES


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _descending_order(values, lo, hi, order, rank, padded):  # pragma: no cover - compiled
    """order[r] = the position in [lo, hi) of the r-th largest value, ties in input order, NaN last: the
    order of np.argsort(-values[lo:hi], kind="mergesort"), without a sort on short sessions; ``rank`` is
    scratch of the same size, ``padded`` scratch of values' dtype for _COUNT_MAX rounded up to _COUNT_LANES.

    An item's rank is the number of items that go before it, counted in a branch-free (vectorised) loop:
    comparison sorts of random scores stall on mispredicted branches (~38 ns an item at n = 100). The count
    first assumes no ties and no NaN, one comparison a pair (the number of larger values); a tie shows as
    counts that sum to less than n (n - 1) / 2 (every member of a tied group but its first counts too few),
    and only then is the session counted again with the tie rules (three comparisons a pair) or, holding
    a NaN, the NaN rules (n = 100, 1e6 items: 38 ms with the tie rules for every session, 56 with the NaN
    rules, mergesort 69 ms; the count and the sort meet near 200 items).
    """
    n = hi - lo
    if n > _COUNT_MAX:
        order[:n] = np.argsort(-values[lo:hi], kind="mergesort")
        return
    v = values[lo:hi]
    any_nan = False
    for k in range(n):
        any_nan |= np.isnan(v[k])
    if not any_nan:
        # whole vectors of 16 (the padding, -inf, is larger than no score) and four rows a pass, int32 counts:
        # each loaded score serves four comparisons and LLVM leaves no scalar remainder (n = 100: 7 against
        # 10 ms serial for 1e6 items)
        m = (n + _COUNT_LANES - 1) // _COUNT_LANES * _COUNT_LANES
        for k in range(n):
            padded[k] = v[k]
        for k in range(n, m):
            padded[k] = -np.inf
        total = 0
        i = 0
        while i + 4 <= n:
            v0, v1, v2, v3 = padded[i], padded[i + 1], padded[i + 2], padded[i + 3]
            c0, c1, c2, c3 = np.int32(0), np.int32(0), np.int32(0), np.int32(0)
            for j in range(m):
                pj = padded[j]
                c0 = np.int32(c0 + np.int32(pj > v0))
                c1 = np.int32(c1 + np.int32(pj > v1))
                c2 = np.int32(c2 + np.int32(pj > v2))
                c3 = np.int32(c3 + np.int32(pj > v3))
            rank[i], rank[i + 1], rank[i + 2], rank[i + 3] = c0, c1, c2, c3
            total += np.int64(c0) + c1 + c2 + c3
            i += 4
        for k in range(i, n):  # the last rows, one at a time
            vk = padded[k]
            count = np.int32(0)
            for j in range(m):
                count = np.int32(count + np.int32(padded[j] > vk))
            rank[k] = count
            total += count
        if total == n * (n - 1) // 2:
            for i in range(n):
                order[rank[i]] = i
            return
        for i in range(n):
            vi = v[i]
            count = 0
            for j in range(n):
                vj = v[j]
                count += np.int64(vj > vi) | (np.int64(vj == vi) & np.int64(j < i))
            order[count] = i
        return
    for i in range(n):
        vi = v[i]
        nan_i = np.int64(np.isnan(vi))
        count = 0
        for j in range(n):
            vj = v[j]
            nan_j = np.int64(np.isnan(vj))
            ahead = np.int64(vj > vi) | (nan_i & (1 - nan_j))  # larger, or a number ahead of a NaN
            tie = np.int64(vj == vi) | (nan_i & nan_j)
            count += ahead | (tie & np.int64(j < i))
        order[count] = i


@numba.njit(cache=True, nogil=True, parallel=True)
def _session_weights(x, gains, labels, level_gain, offsets, topn, log2_rank, rank_discount, ideal_terms, walk, n_chunks,
                     gain_out, discount, inv_ideal):  # pragma: no cover - compiled
    """Gains and discounts (from the ranking by score) per item and the inverse ideal DCG per item, chunks of
    sessions in parallel; log2_rank[r] = log2(2 + r), computed once per call (a log per item cost as much
    as the sort), as are rank_discount = 1 / log2_rank and, for graded labels, ideal_terms[level, r] =
    level_gain[level] / log2_rank[r] for the first ranks (two divisions an item had cost a third of the
    loop; the quotients are the same, so are the sums).

    An empty ``walk``: gain_out and discount in input order, inv_ideal per item. Else in a pair walk's order
    (place p of a session holds its item walk[p], ``SessionPlan.order``) and gain_out's and discount's
    precision, which spares the pair loops a gather and a cast of each, and each discount already times its
    session's inverse ideal DCG (|D_i - D_j| inv = |D_i inv - D_j inv|, inv >= 0), so that no per-item factor
    remains; inv_ideal is not written. A non-empty ``level_gain``: the labels are the
    integers 0 .. levels - 1 with these gains, which the loop writes (else ``gains`` holds each item's), and
    the ideal ranking (labels descending; the gain rises with the label) comes from a count per label, not a
    sort.
    """
    levels = level_gain.size
    table_ranks = ideal_terms.shape[1]
    n_sessions = offsets.size - 1
    longest = log2_rank.size  # one entry per rank of the longest session
    for c in numba.prange(n_chunks):
        order = np.empty(longest, np.int64)
        rank = np.empty(longest, np.int64)
        padded_scores = np.empty(_PADDED_COUNT, x.dtype)
        padded_gains = np.empty(_PADDED_COUNT, gains.dtype)
        session_discount = np.empty(longest)
        per_level = np.empty(max(levels, 1), np.int64)
        for s in range(c * n_sessions // n_chunks, (c + 1) * n_sessions // n_chunks):
            lo, hi = offsets[s], offsets[s + 1]
            n = hi - lo
            if n == 0:
                continue
            _descending_order(x, lo, hi, order, rank, padded_scores)
            cut = n if topn == 0 else min(n, topn)
            for r in range(n):
                session_discount[order[r]] = rank_discount[r] if r < cut else 0.0
            idcg = 0.0
            if levels > 0:
                per_level[:] = 0
                for k in range(lo, hi):
                    per_level[np.int64(labels[k])] += 1
                r = 0
                for level in range(levels - 1, -1, -1):
                    stop = min(r + per_level[level], cut)
                    for q in range(r, stop):  # the table's terms are the quotients: the same sum
                        idcg += ideal_terms[level, q] if q < table_ranks else level_gain[level] / log2_rank[q]
                    r += per_level[level]
            else:
                _descending_order(gains, lo, hi, order, rank, padded_gains)  # the ideal ranking
                for r in range(cut):
                    idcg += gains[lo + order[r]] / log2_rank[r]
            inv = 1.0 / idcg if idcg > 0.0 else 0.0
            if walk.size:  # discounts times the session's inverse ideal DCG (a product by 1.0 is exact)
                for p in range(n):
                    item = walk[lo + p]
                    discount[lo + p] = session_discount[item] * inv
                    gain_out[lo + p] = level_gain[np.int64(labels[lo + item])] if levels > 0 else gains[lo + item]
            else:
                for k in range(n):
                    discount[lo + k] = session_discount[k]
                    gain_out[lo + k] = level_gain[np.int64(labels[lo + k])] if levels > 0 else gains[lo + k]
                    inv_ideal[lo + k] = inv


_MAX_LEVELS = 256


@numba.njit(cache=True, nogil=True)
def _grade_levels(labels64):  # pragma: no cover - compiled
    # 1 + the largest label when every label is an integer in [0, _MAX_LEVELS), else 0: one pass (NumPy's
    # min, max and floor comparison took four, and two call-sized temporaries)
    grades, top = integer_grades(labels64, 0, labels64.size, _MAX_LEVELS)
    return np.int64(top) + 1 if grades and labels64.size > 0 else 0


def _level_gains(labels64: np.ndarray, gain: str) -> np.ndarray:
    """The gain of each label 0 .. levels - 1 when every label is such an integer (levels <= _MAX_LEVELS),
    computed as the per-item gains are (the same values); else an empty array."""
    levels = np.arange(_grade_levels(labels64), dtype=np.float64)
    return np.exp2(levels) - 1.0 if gain == "exp2" and levels.size else levels


@numba.njit(cache=True, nogil=True)
def _log2_ranks(m):  # pragma: no cover - compiled
    out = np.empty(m)
    for r in range(m):
        out[r] = np.log2(2.0 + r)  # the scalar log2 the per-item loop used: the same values
    return out


_session_weights_serial = serial_twin(_session_weights)
_PARALLEL_ITEMS = 1 << 15
_RANKED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_IDEAL_TABLE = 1 << 16  # entries of the (grade, rank) table of ideal DCG terms; later ranks divide


def _weights_into(scores: np.ndarray, labels64: np.ndarray, lens: np.ndarray, topn: int, gain: str,
                  walk: np.ndarray, gain_out: np.ndarray, discount: np.ndarray, inv_ideal: np.ndarray) -> None:
    """Fill the outputs as :func:`_session_weights` says (input order for an empty ``walk``)."""
    offsets = session_offsets(lens)
    level_gain = _level_gains(labels64, gain)
    if level_gain.size:  # graded labels: the kernel takes each item's gain from its grade's
        gains = np.empty(0)
    elif gain == "exp2":
        gains = np.exp2(labels64)
        gains -= 1.0
    else:
        gains = labels64.astype(np.float64, copy=True)
    # NaN scores rank last (argsort of -NaN), as np.argsort puts NaN at the end; float32 scores are ranked
    # as they are (their float64 values compare the same), float16 ones as float32 (no Numba arithmetic)
    ranked = np.ascontiguousarray(scores, dtype=scores.dtype if scores.dtype in _RANKED_DTYPES else np.float32)
    log2_rank = _log2_ranks(int(lens.max(initial=0)))
    with parallel_launch(labels64.size >= _PARALLEL_ITEMS) as parallel:
        weights = _session_weights if parallel else _session_weights_serial
        n_chunks = min(lens.size, 8 * numba.get_num_threads()) if parallel else 1
        weights(ranked, gains, labels64, level_gain, offsets, int(topn), log2_rank, 1.0 / log2_rank,
                level_gain[:, None] / log2_rank[:_IDEAL_TABLE // max(level_gain.size, 1)], walk, n_chunks, gain_out,
                discount, inv_ideal)


def lambdarank_weights(scores: np.ndarray, labels64: np.ndarray, lens: np.ndarray, *, topn: int,
                       gain: str) -> PairWeights:
    """Per-item gains, discounts (from the current ranking by ``scores``) and inverse ideal DCG, float64,
    input order."""
    gains, discount, inv_ideal = (np.empty(labels64.size) for _ in range(3))
    _weights_into(scores, labels64, lens, topn, gain, np.empty(0, np.int64), gains, discount, inv_ideal)
    return PairWeights(gains, discount, inv_ideal)


def weights_for_plan(scores: np.ndarray, labels64: np.ndarray, lens: np.ndarray, plan: SessionPlan | DirectPlan, *,
                     topn: int, gain: str) -> PairWeights | WalkWeights:
    """The weights as ``plan``'s pair loops read them: :class:`WalkWeights` (walk order, working
    precision) for a :class:`SessionPlan`, :func:`lambdarank_weights` for a :class:`DirectPlan`."""
    if isinstance(plan, DirectPlan):
        return lambdarank_weights(scores, labels64, lens, topn=topn, gain=gain)
    gains, discount = np.empty(labels64.size, plan.e.dtype), np.empty(labels64.size, plan.e.dtype)
    _weights_into(scores, labels64, lens, topn, gain, plan.order, gains, discount, np.empty(0))
    return WalkWeights(gains, discount)


def _pair_weight(w: PairWeights, i: int, j: int) -> float:
    return abs(w.gain[i] - w.gain[j]) * abs(w.discount[i] - w.discount[j]) * w.inv_ideal[i]


# ---- reference (float64, every pair) -----------------------------------------------------------------
def _reference_weights(flat: np.ndarray, lab: np.ndarray, lens: np.ndarray, topn: int, gain: str) -> PairWeights:
    """The weights by their definition, in plain Python (the reference does not trust the fast one)."""
    gains = [2.0 ** float(v) - 1.0 if gain == "exp2" else float(v) for v in lab]
    discount = [0.0] * len(lab)
    inv_ideal = [0.0] * len(lab)
    offset = 0
    for n in lens.tolist():
        idx = list(range(offset, offset + n))
        # descending score, NaN after every number (-inf included), ties in input order
        ranked = sorted(idx, key=lambda k: (math.isnan(flat[k]), 0.0 if math.isnan(flat[k]) else -float(flat[k]), k))
        cut = n if topn == 0 else min(n, topn)
        for r, k in enumerate(ranked):
            discount[k] = 1.0 / math.log2(2.0 + r) if r < cut else 0.0
        ideal = sorted((gains[k] for k in idx), reverse=True)
        idcg = sum(ideal[r] / math.log2(2.0 + r) for r in range(cut))
        for k in idx:
            inv_ideal[k] = 1.0 / idcg if idcg > 0 else 0.0
        offset += n
    return PairWeights(np.array(gains), np.array(discount), np.array(inv_ideal))


def reference_forward(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None, *,
                      sigma: float, topn: int, gain: str) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths)
    _check_args(lab, sigma, topn, gain)
    w = _reference_weights(flat, lab, lens, topn, gain)
    out = np.zeros(lens.size)
    offset = 0
    for s, n in enumerate(lens):
        total, pairs = 0.0, 0
        for i in range(offset, offset + n):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                total += _pair_weight(w, hi, lo) * softplus(sigma * (float(flat[lo]) - float(flat[hi])))
                pairs += 1
        out[s] = total / pairs if pairs else 0.0
        offset += n
    return out.astype(x.dtype)


def reference_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                       lengths: np.ndarray | None = None, *, sigma: float, topn: int, gain: str) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    _check_args(lab, sigma, topn, gain)
    w = _reference_weights(flat, lab, lens, topn, gain)
    dx = np.zeros(flat.size)
    offset = 0
    for s, n in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + n):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                lam = sigma * _pair_weight(w, hi, lo) * sigmoid(sigma * (float(flat[lo]) - float(flat[hi])))
                dx[hi] -= lam * float(g[s])
                dx[lo] += lam * float(g[s])
                pairs += 1
        if pairs:
            dx[offset:offset + n] /= pairs
        offset += n
    return dx.reshape(x.shape).astype(x.dtype)


def reference_gradient_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                                direction: np.ndarray, lengths: np.ndarray | None = None, *, sigma: float,
                                topn: int, gain: str) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = prepare_second_order(scores, labels, loss_grad, direction, lengths)
    _check_args(lab, sigma, topn, gain)
    w = _reference_weights(flat, lab, lens, topn, gain)
    hv = np.zeros(flat.size)
    gg = np.zeros(lens.size)
    offset = 0
    for s, n in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + n):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                wp = _pair_weight(w, hi, lo)
                sig = sigmoid(sigma * (float(flat[lo]) - float(flat[hi])))
                curv = sigma * sigma * wp * sig * (1.0 - sig)
                hv[i] += curv * (float(v[i]) - float(v[j]))
                hv[j] += curv * (float(v[j]) - float(v[i]))
                gg[s] += sigma * wp * sig * (float(v[lo]) - float(v[hi]))
                pairs += 1
        if pairs:
            hv[offset:offset + n] *= float(g[s]) / pairs
            gg[s] /= pairs
        offset += n
    return hv.reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CPU kernels: the weighted pair loops of ops.pair_loops -------------------------------------------
# the float64 copy of the labels of a call (its plan, which holds it, never outlives the call)
_LABEL_SCRATCH = KeptScratch(64 << 20)


def forward_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None, *, sigma: float,
                topn: int, gain: str) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths, label_scratch=_LABEL_SCRATCH.float64)
    _check_args(lab, sigma, topn, gain)
    plan = plan_sessions(_scaled(flat, sigma), lab, lens, working_precision(x.dtype), full_rows=True)
    weights = weights_for_plan(flat, lab, lens, plan, topn=topn, gain=gain)
    sums, pairs = logistic_forward(plan, weights)
    return np.divide(sums, pairs, out=np.zeros(lens.size), where=pairs > 0).astype(x.dtype)


def forward_with_unit_gradient_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None, *,
                                   sigma: float, topn: int, gain: str) -> FusedForward:
    """(Y, the gradient for Y_grad = 1, the sessions with a pair) with one validation, one set of weights (one
    sort per session) and one plan: the fused kernel of the torch path."""
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths, label_scratch=_LABEL_SCRATCH.float64)
    _check_args(lab, sigma, topn, gain)
    plan = plan_sessions(_scaled(flat, sigma), lab, lens, working_precision(x.dtype), full_rows=True)
    weights = weights_for_plan(flat, lab, lens, plan, topn=topn, gain=gain)
    sums, pairs, slope = logistic_forward_and_gradient(plan, weights)
    with_pairs = pairs > 0
    scale = np.divide(sigma, pairs, out=np.zeros(lens.size), where=with_pairs)
    out = np.divide(sums, pairs, out=np.zeros(lens.size), where=with_pairs)
    return FusedForward(out.astype(x.dtype), times_session_values(slope, scale, lens).reshape(x.shape), with_pairs)


def gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray, lengths: np.ndarray | None = None,
                 *, sigma: float, topn: int, gain: str) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad, label_scratch=_LABEL_SCRATCH.float64)
    _check_args(lab, sigma, topn, gain)
    plan = plan_sessions(_scaled(flat, sigma), lab, lens, working_precision(x.dtype), full_rows=True)
    weights = weights_for_plan(flat, lab, lens, plan, topn=topn, gain=gain)
    slope, pairs = logistic_gradient(plan, weights)
    scale = np.divide(sigma * g.astype(np.float64), pairs, out=np.zeros(lens.size), where=pairs > 0)
    return times_session_values(slope, scale, lens).reshape(x.shape).astype(x.dtype)


def gradient_gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray, direction: np.ndarray,
                          lengths: np.ndarray | None = None, *, sigma: float, topn: int,
                          gain: str) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = prepare_second_order(scores, labels, loss_grad, direction, lengths)
    _check_args(lab, sigma, topn, gain)
    weights = lambdarank_weights(flat, lab, lens, topn=topn, gain=gain)
    hv, dot, pairs = logistic_second_order(_scaled(flat, sigma), lab, lens, v, weights)
    scale = np.divide(sigma * sigma * g.astype(np.float64), pairs, out=np.zeros(lens.size), where=pairs > 0)
    gg = np.divide(sigma * dot, pairs, out=np.zeros(lens.size), where=pairs > 0)
    return times_session_values(hv, scale, lens).reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CUDA kernels: weights by torch sorts on the device, pairs by the Triton loops ---------------------
forward_cuda: Any = None
gradient_cuda: Any = None


def _ranks_within_sessions(values: Any, sessions: CudaSessions) -> Any:
    """0-based rank of each item in its session by ``values`` descending (ties and NaN as np.argsort(-v))."""
    import torch

    by_value = torch.argsort(-values, stable=True)
    order = by_value[torch.argsort(sessions.session[by_value], stable=True)]
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks - sessions.start


def lambdarank_weights_cuda(sessions: CudaSessions, *, topn: int, gain: str) -> tuple[Any, Any, Any, Any]:
    """(gains, discounts, inverse ideal DCG per item, label-range violations), float64 on the device."""
    import torch

    lab = sessions.labels
    gains = torch.exp2(lab) - 1.0 if gain == "exp2" else lab.clone()
    cut = torch.where(sessions.end - sessions.start < topn, sessions.end - sessions.start,
                      torch.full_like(sessions.start, topn)) if topn else sessions.end - sessions.start
    rank = _ranks_within_sessions(sessions.flat.to(torch.float64), sessions)
    discount = torch.where(rank < cut, 1.0 / torch.log2(rank.to(torch.float64) + 2.0), 0.0)
    ideal_rank = _ranks_within_sessions(gains, sessions)
    ideal = torch.where(ideal_rank < cut, gains / torch.log2(ideal_rank.to(torch.float64) + 2.0), 0.0)
    idcg = session_sums(ideal, sessions)
    inv = torch.where(idcg > 0, 1.0 / torch.where(idcg > 0, idcg, 1.0), 0.0)[sessions.session]
    limit = _MAX_EXP2_LABEL if gain == "exp2" else float("inf")
    out_of_range = ((lab < 0) | (lab > limit)).sum()
    return gains, discount, inv, out_of_range


def _check_cuda_labels(bad: Any, out_of_range: Any, gain: str) -> None:
    """One host synchronisation for both label checks of a call."""
    import torch

    counts = torch.stack([bad.to(torch.int64).reshape(()), out_of_range.to(torch.int64)]).cpu()
    raise_if_bad_labels(counts[0])
    if int(counts[1]):
        limit = f" and <= {_MAX_EXP2_LABEL} for gain='exp2' (use gain='linear')" if gain == "exp2" else ""
        msg = f"labels must be non-negative relevance grades{limit}; {int(counts[1])} are not"
        raise ValueError(msg)


if HAS_TRITON:

    def _scaled_scores(sessions: CudaSessions, sigma: float) -> Any:
        import torch

        work = torch.float64 if sessions.flat.dtype == torch.float64 else torch.float32
        return (sessions.flat.to(work) * sigma).contiguous()

    def forward_cuda(scores: Any, labels: Any, lengths: Any = None, *, sigma: float, topn: int,  # type: ignore[no-redef]
                     gain: str) -> Any:
        _check_args(np.zeros(0), sigma, topn, gain)
        sessions = prepare_sessions_cuda(scores, labels, lengths)
        gains, discount, inv, out_of_range = lambdarank_weights_cuda(sessions, topn=topn, gain=gain)
        values, counts, bad = pair_rows(sessions, loss=LOGISTIC, forward=True, weights=(gains, discount),
                                        scores=_scaled_scores(sessions, sigma))
        loss, _ = session_mean(sessions, values * inv, counts, pairs_counted_twice=False)
        _check_cuda_labels(bad, out_of_range, gain)
        return loss.to(scores.dtype)

    def gradient_cuda(scores: Any, labels: Any, loss_grad: Any, lengths: Any = None, *,  # type: ignore[no-redef]
                      sigma: float, topn: int, gain: str) -> Any:
        _check_args(np.zeros(0), sigma, topn, gain)
        sessions = prepare_sessions_cuda(scores, labels, lengths)
        check_loss_grad(loss_grad, sessions)
        gains, discount, inv, out_of_range = lambdarank_weights_cuda(sessions, topn=topn, gain=gain)
        values, counts, bad = pair_rows(sessions, loss=LOGISTIC, forward=False, weights=(gains, discount),
                                        scores=_scaled_scores(sessions, sigma))
        _, pairs = session_mean(sessions, values, counts, pairs_counted_twice=True)
        out = scale_rows(sessions, values * inv, pairs, loss_grad, factor=sigma)
        _check_cuda_labels(bad, out_of_range, gain)
        return out


# ---- gradient definitions -----------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    inputs: list[Any] = [I(0), I(1), GO(0)] + ([I(2)] if len(op.inputs) == 3 else [])
    return [gradient_def(op, "LambdaRankLossGradient", inputs, [GI(0)])]


def _second_order_maker(op: OperatorDef) -> list[OperatorDef]:
    inputs: list[Any] = [I(0), I(1), I(2), GO(0)] + ([I(3)] if len(op.inputs) == 4 else [])
    return [gradient_def(op, "LambdaRankLossGradientGradient", inputs, [GI(0), GI(2)])]


def _third_order_maker(op: OperatorDef) -> list[OperatorDef]:
    # linear in X_grad_grad, as PairWiseLoss's (ops.pairwise_loss._third_order_maker)
    lengths: list[Any] = [I(4)] if len(op.inputs) == 5 else []
    scratch = f"{op.outputs[1]}_unused_part"
    return [gradient_def(op, "LambdaRankLossGradientGradient", [I(0), I(1), I(2), GO(0), *lengths], [GI(3), scratch]),
            gradient_def(op, "LambdaRankLossGradient", [I(0), I(1), GO(1), *lengths], [GI(3)])]


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
def lambdarank_loss(scores: npt.ArrayLike, labels: npt.ArrayLike, lengths: npt.ArrayLike | None = None, *,
                    sigma: float = 1.0, topn: int = 0, gain: str = "exp2") -> np.ndarray:
    r"""LambdaRank loss per session: the pairwise logistic loss, each pair weighted by its |ΔNDCG|.

    .. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} |\Delta\text{NDCG}_{hi,lo}|\,
              \log\bigl(1 + e^{-\sigma (x_{hi} - x_{lo})}\bigr)

    Args:
        scores: Scores, shape (N,) or (N, 1), float16/32/64.
        labels: Relevance grades, shape (N,) or (N, 1), non-negative; pairs closer than 2^-23 are ties.
        lengths: Session sizes, 1-D non-negative integers summing to N. None: one session.
        sigma: Scale of the score difference.
        topn: Only pairs with an item in the current top ``topn`` carry weight; 0: all pairs.
        gain: ``"exp2"`` (2^label - 1) or ``"linear"`` (label).

    Returns:
        Shape (S,) (or (1,) without ``lengths``), dtype of ``scores``.

    Examples:
        >>> import numpy as np
        >>> lambdarank_loss(np.array([0.0, 1.0, 2.0]), np.array([2, 1, 0]))   # the worst ranking
        array([0.36895673])
        >>> lambdarank_loss(np.array([2.0, 1.0, 0.0]), np.array([2, 1, 0]))   # the best one: smaller
        array([0.04247199])
    """
    resolved = SCHEMA.resolve_args({"sigma": sigma, "topn": topn, "gain": gain})
    return forward_cpu(scores, labels, lengths, **resolved)


def lambdarank_loss_gradient(scores: npt.ArrayLike, labels: npt.ArrayLike, loss_grad: npt.ArrayLike,
                             lengths: npt.ArrayLike | None = None, *, sigma: float = 1.0, topn: int = 0,
                             gain: str = "exp2") -> np.ndarray:
    """Gradient of :func:`lambdarank_loss` with respect to ``scores`` (the lambdas), weights held constant."""
    resolved = GRADIENT_SCHEMA.resolve_args({"sigma": sigma, "topn": topn, "gain": gain})
    return gradient_cpu(scores, labels, loss_grad, lengths, **resolved)
