"""The fused Numba CPU kernels (and the Triton ones, interpreted on CPU) against their float64 references.

The generic suite (tests/test_operators.py) already compares every registered kernel with its reference on
small draws; these tests aim at what the fast kernels add: the parallel paths (chunks, row-split sessions),
the fast exp-free path of PairWiseLoss and its exact fallback, fused label validation, dtypes and layouts.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairloss.ops import margin_ranking as mrc
from pairloss.ops import pair_loops
from pairloss.ops import pairwise_hinge as ph
from pairloss.ops import pairwise_loss as pwl

FLOAT_DTYPES = [np.float16, np.float32, np.float64]
TOL = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-12}
HAS_TRITON = importlib.util.find_spec("triton") is not None


# ---- MarginRankingCriterion ---------------------------------------------------------------------------
@st.composite
def mrc_inputs(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.sampled_from([0, 1, 7, 1000]))
    x1 = rng.standard_normal(n) * 2
    x2 = rng.standard_normal(n) * 2
    # a quarter of the pairs sit exactly on the kink (dist == 0)
    margin = draw(st.sampled_from([1.0, 0.5, 0.0, -0.25]))
    y = rng.choice(np.array([-1, 1]), size=n)
    kink = rng.random(n) < 0.25
    x2[kink] = x1[kink] + y[kink] * margin
    g = rng.standard_normal(n)
    return x1, x2, y, g, np.float64(margin)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f16", "f32", "f64"])
@given(case=mrc_inputs(), y_dtype=st.sampled_from([np.int32, np.int64, np.int8, np.float32, np.float64]))
def test_mrc_kernels_match_reference(dtype: type, case: tuple, y_dtype: type) -> None:
    x1, x2, y, g, margin = case
    x1, x2, y, g = x1.astype(dtype), x2.astype(dtype), y.astype(y_dtype), g.astype(dtype)
    out = mrc.forward_cpu(x1, x2, y, margin=margin)
    ref = mrc.reference_forward(x1, x2, y, margin=margin)
    assert out.dtype == ref.dtype == dtype
    # float64 arithmetic in both: identical, kink decisions included
    np.testing.assert_array_equal(out, ref)
    d1, d2 = mrc.gradient_cpu(x1, x2, y, g, margin=margin)
    r1, r2 = mrc.reference_gradient(x1, x2, y, g, margin=margin)
    np.testing.assert_array_equal(d1, r1)
    np.testing.assert_array_equal(d2, r2)


def test_mrc_parallel_loop_matches_reference() -> None:
    # beyond the serial cut-off the loop runs in parallel, over an odd length
    rng = np.random.default_rng(3)
    n = 3 * mrc._SERIAL_BELOW + 5
    x1, x2 = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    x2[::7] = x1[::7] + 1.0  # on the kink for y = +1, margin 1
    y = rng.choice(np.array([-1, 1], np.int32), size=n)
    g = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(mrc.forward_cpu(x1, x2, y, margin=1.0), mrc.reference_forward(x1, x2, y, margin=1.0))
    for fast, ref in zip(mrc.gradient_cpu(x1, x2, y, g, margin=1.0),
                         mrc.reference_gradient(x1, x2, y, g, margin=1.0), strict=True):
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("n", [5, 100_000])
def test_mrc_nan_distance_stays_nan_and_passes_the_gradient(n: int) -> None:
    x1 = np.zeros(n, np.float32)
    x1[3] = np.nan
    x2 = np.zeros(n, np.float32)
    y = np.ones(n, np.int32)
    out = mrc.forward_cpu(x1, x2, y, margin=1.0)
    assert np.isnan(out[3]) and np.isnan(out).sum() == 1
    d1, d2 = mrc.gradient_cpu(x1, x2, y, np.full(n, 2.0, np.float32), margin=1.0)
    assert d1[3] == -2.0 and d2[3] == 2.0


@pytest.mark.parametrize("n", [6, 100_000])
def test_mrc_fused_label_check_raises_like_prepare(n: int) -> None:
    x = np.zeros(n)
    y = np.ones(n, np.int32)
    y[-1] = 0
    with pytest.raises(ValueError, match=r"Y must contain only -1 and \+1.*\[0\]"):
        mrc.forward_cpu(x, x, y, margin=1.0)
    with pytest.raises(ValueError, match=r"Y must contain only -1 and \+1"):
        mrc.gradient_cpu(x, x, y.astype(np.float64) * 0.5, x, margin=1.0)


def test_mrc_accepts_strided_and_mixed_dtype_inputs() -> None:
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((40, 6))[:, ::2]  # not contiguous
    x2 = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.choice(np.array([-1.0, 1.0]), size=(40, 3))
    g = rng.standard_normal((40, 3)).astype(np.float16)
    np.testing.assert_array_equal(mrc.forward_cpu(x1, x2, y, margin=0.3),
                                  mrc.reference_forward(x1, x2, y, margin=0.3))
    for fast, ref in zip(mrc.gradient_cpu(x1, x2, y, g, margin=0.3),
                         mrc.reference_gradient(x1, x2, y, g, margin=0.3), strict=True):
        assert fast.dtype == ref.dtype and fast.shape == ref.shape
        np.testing.assert_array_equal(fast, ref)


# ---- PairWiseLoss -------------------------------------------------------------------------------------
@st.composite
def session_inputs(draw: st.DrawFn, *, max_sessions: int = 40, max_len: int = 30) -> tuple[np.ndarray, ...]:
    """Many sessions, among them empty, one-item and all-tied ones; labels may differ by < 2^-23."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lengths = rng.integers(0, max_len + 1, size=draw(st.integers(0, max_sessions)))
    lengths[rng.random(lengths.size) < 0.1] = 0
    lengths[rng.random(lengths.size) < 0.1] = 1
    n = int(lengths.sum())
    labels = rng.integers(0, draw(st.integers(1, 5)), size=n).astype(np.float64)
    if draw(st.booleans()):  # near-ties: equal within the absolute tolerance 2^-23
        labels += rng.choice([0.0, 2.0**-25, 2.0**-22], size=n)
    scale = draw(st.sampled_from([0.1, 3.0, 40.0]))
    scores = rng.standard_normal(n) * scale
    loss_grad = rng.standard_normal(lengths.size)
    return scores, labels, lengths.astype(np.int32), loss_grad


@pytest.mark.usefixtures("pair_walk")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f16", "f32", "f64"])
@given(case=session_inputs())
def test_pairwise_kernels_match_reference(dtype: type, case: tuple) -> None:
    scores, labels, lengths, g = case
    scores = scores.astype(dtype)
    out = pwl.forward_cpu(scores, labels, lengths)
    ref = pwl.reference_forward(scores, labels, lengths)
    assert out.dtype == ref.dtype == dtype and out.shape == ref.shape
    np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), rtol=TOL[dtype], atol=TOL[dtype])
    grad = pwl.gradient_cpu(scores, labels, g.astype(dtype), lengths)
    grad_ref = pwl.reference_gradient(scores, labels, g.astype(dtype), lengths)
    assert grad.dtype == dtype and grad.shape == scores.shape
    np.testing.assert_allclose(grad.astype(np.float64), grad_ref.astype(np.float64),
                               rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.usefixtures("planned_walk")
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the parallel kernels need two threads")
@given(case=session_inputs())
def test_small_inputs_take_the_serial_twin_with_identical_results(case: tuple) -> None:
    # small inputs skip the parallel launch; forcing the parallel kernels must not change a single bit
    scores, labels, lengths, g = case
    serial = (pwl.forward_cpu(scores, labels, lengths), pwl.gradient_cpu(scores, labels, g, lengths),
              ph.forward_cpu(scores, labels, lengths, margin=0.5),
              ph.gradient_cpu(scores, labels, g, lengths, margin=0.5))
    before = numba.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_loops, "_PARALLEL_PAIRS", 0)
        mp.setattr(ph, "_SERIAL_ITEMS", 0)
        numba.set_num_threads(2)
        try:
            parallel = (pwl.forward_cpu(scores, labels, lengths), pwl.gradient_cpu(scores, labels, g, lengths),
                        ph.forward_cpu(scores, labels, lengths, margin=0.5),
                        ph.gradient_cpu(scores, labels, g, lengths, margin=0.5))
        finally:
            numba.set_num_threads(before)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pairwise_one_large_session_split_over_rows_matches_reference() -> None:
    rng = np.random.default_rng(1)
    n = 700  # one session: the work is split over row ranges of several tasks
    scores = rng.standard_normal(n) * 2
    labels = rng.integers(0, 5, n)
    np.testing.assert_allclose(pwl.forward_cpu(scores, labels), pwl.reference_forward(scores, labels), rtol=1e-12)
    g = np.array([0.7])
    np.testing.assert_allclose(pwl.gradient_cpu(scores, labels, g), pwl.reference_gradient(scores, labels, g),
                               rtol=1e-11, atol=1e-16)


@pytest.mark.usefixtures("planned_walk")
def test_pairwise_result_does_not_depend_on_thread_count() -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 300, 9)
    scores = rng.standard_normal(lengths.sum())
    labels = rng.integers(0, 3, lengths.sum())
    g = rng.standard_normal(lengths.size)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = pwl.forward_cpu(scores, labels, lengths), pwl.gradient_cpu(scores, labels, g, lengths)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = pwl.forward_cpu(scores, labels, lengths), pwl.gradient_cpu(scores, labels, g, lengths)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("pair_walk")
@pytest.mark.parametrize("scale", [1e30, 1e300])
def test_pairwise_gradient_has_no_nan_for_huge_scores(scale: float) -> None:
    # spans beyond the fast path's exp range take the exact per-pair formulas
    scores = np.array([1.0, -1.0, 0.5, -0.25, 2.0]) * scale
    labels = np.array([0, 1, 2, 1, 0])
    g = np.array([1.5])
    loss = pwl.forward_cpu(scores, labels)
    grad = pwl.gradient_cpu(scores, labels, g)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, pwl.reference_forward(scores, labels), rtol=1e-12)
    np.testing.assert_allclose(grad, pwl.reference_gradient(scores, labels, g), rtol=1e-12)


@pytest.mark.usefixtures("pair_walk")
def test_pairwise_fast_and_exact_paths_agree_at_the_span_limit() -> None:
    half = pair_loops.FAST_SPAN[np.dtype(np.float64)] / 2
    labels = np.array([0, 1, 2, 0, 1, 2])
    inside = np.array([-half, half, 0.0, 1.0, -3.0, 2.5])  # span == the limit: fast path
    outside = inside.copy()
    outside[1] = np.nextafter(half, np.inf)  # just beyond: exact path
    for scores in (inside, outside):
        np.testing.assert_allclose(pwl.forward_cpu(scores, labels), pwl.reference_forward(scores, labels),
                                   rtol=1e-12)
        np.testing.assert_allclose(pwl.gradient_cpu(scores, labels, np.ones(1)),
                                   pwl.reference_gradient(scores, labels, np.ones(1)), rtol=1e-12, atol=1e-300)


@pytest.mark.usefixtures("pair_walk")
def test_pairwise_nan_and_inf_scores_behave_as_the_reference() -> None:
    labels = np.array([0, 1, 2, 0])
    for bad in (np.nan, np.inf, -np.inf):
        scores = np.array([0.5, bad, -1.0, 2.0])
        # NaN where the reference has NaN, and the same numbers elsewhere
        np.testing.assert_allclose(pwl.forward_cpu(scores, labels), pwl.reference_forward(scores, labels),
                                   rtol=1e-14)
        np.testing.assert_allclose(pwl.gradient_cpu(scores, labels, np.ones(1)),
                                   pwl.reference_gradient(scores, labels, np.ones(1)), rtol=1e-14)


def _plan_of(lengths: list[int]) -> object:
    lens = np.asarray(lengths, np.int64)
    n = int(lens.sum())
    return pair_loops.plan_sessions(np.zeros(n), np.zeros(n), lens, np.dtype(np.float64), full_rows=True)


def test_calls_of_up_to_direct_pairs_pairs_take_the_direct_walk() -> None:
    assert pair_loops.DIRECT_PAIRS == 4096  # 91 items have 4,095 pairs, 92 items 4,186
    for lengths in ([91], [91, 2], [0, 1, 1, 91], [64] * 2, [10] * 91, [], [0, 1]):
        assert isinstance(_plan_of(lengths), pair_loops.DirectPlan), lengths
    for lengths in ([92], [91, 3], [10] * 92, [4097, 0]):
        assert isinstance(_plan_of(lengths), pair_loops.SessionPlan), lengths


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1), spread=st.sampled_from([1e-3, 1.0, 30.0, 400.0, 1e30]),
       lambdarank=st.booleans())
def test_direct_and_planned_walks_agree(dtype: type, seed: int, spread: float, lambdarank: bool) -> None:
    # the same losses and gradients, LambdaRank's weights included, whichever walk a call takes; the direct
    # walk works in float64 whatever the scores' dtype, the planned one in float32 for float16/float32
    from pairloss.ops import lambdarank as lr

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 25, rng.integers(1, 10))
    n = int(lengths.sum())
    big = float(np.finfo(dtype).max) / 4  # 1e30 in float16 is its largest values, not inf
    scores = np.clip(rng.standard_normal(n) * spread, -big, big).astype(dtype)
    labels = rng.integers(0, 4, n).astype(np.float64)
    g = rng.standard_normal(lengths.size).astype(dtype)
    args = {"sigma": 1.5, "topn": int(rng.integers(0, 6)), "gain": "exp2"} if lambdarank else {}
    mod = lr if lambdarank else pwl

    def run() -> tuple[np.ndarray, ...]:
        fused_y, unit, _ = mod.forward_with_unit_gradient_cpu(scores, labels, lengths, **args)
        return (mod.forward_cpu(scores, labels, lengths, **args), mod.gradient_cpu(scores, labels, g, lengths, **args),
                fused_y, unit)

    direct = run()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_loops, "DIRECT_PAIRS", -1)
        planned = run()
    tol = 1e-12 if dtype == np.float64 else TOL[np.float32] if dtype == np.float32 else 2e-3
    for k, (a, b) in enumerate(zip(direct, planned, strict=True)):
        assert a.dtype == b.dtype and (k == 3 or a.dtype == dtype)  # the unit gradient stays float64
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)
    # one pass serves the forward and the fused call: their losses agree to the bit
    np.testing.assert_array_equal(direct[0], direct[2])


@pytest.mark.parametrize(("precision", "rtol"), [(np.float32, 2.5e-7), (np.float64, 4e-16)])
def test_log1p_series_is_accurate_on_the_unit_interval(precision: type, rtol: float) -> None:
    dtype = np.dtype(precision)
    coef = tuple(dtype.type(1.0 / (2 * k + 1)) for k in range(pair_loops._SERIES_TERMS[dtype]))
    tiny = 1e-35 if precision is np.float32 else 1e-300  # the smallest q the fast path meets
    q = np.concatenate([np.geomspace(tiny, 1.0, 2000), np.linspace(0.0, 1.0, 2001)[1:]]).astype(dtype)
    w_min = dtype.type(pair_loops._W_MIN[dtype])
    got = np.array([pair_loops._log1p_ratio(v, dtype.type(1.0), coef, w_min) for v in q])
    np.testing.assert_allclose(got, np.log1p(q.astype(np.float64)), rtol=rtol)


@pytest.mark.usefixtures("planned_walk")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1))
def test_diagonal_chunks_and_rows_agree_with_the_reference(dtype: type, seed: int) -> None:
    # session sizes around the small-session limit and row lengths of every residue mod 8 (LLVM's vector
    # loops and their remainders), cut into many small chunks: the diagonal and row walks against float64
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 2, 7, 8, 9, 15, 16, 17, pair_loops.SMALL_SESSION, pair_loops.SMALL_SESSION + 1, 40, 63, 64, 65]
    lengths = rng.permutation(np.array(sizes * 2))
    n = int(lengths.sum())
    scores = (rng.standard_normal(n) * 2).astype(dtype)
    labels = rng.integers(0, 4, n)
    g = rng.standard_normal(lengths.size)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_loops, "CHUNK_ITEMS", 50)
        np.testing.assert_allclose(pwl.forward_cpu(scores, labels, lengths),
                                   pwl.reference_forward(scores, labels, lengths), rtol=tol, atol=tol)
        np.testing.assert_allclose(pwl.gradient_cpu(scores, labels, g.astype(dtype), lengths),
                                   pwl.reference_gradient(scores, labels, g.astype(dtype), lengths), rtol=tol, atol=tol)


_LABEL_KINDS = {
    "grades": lambda rng, n: rng.integers(0, 5, n).astype(np.float64),
    "grades above the counting range": lambda rng, n: rng.integers(60, 70, n).astype(np.float64),
    "negative and fractional": lambda rng, n: rng.integers(-3, 3, n) * 0.5,
    "near ties": lambda rng, n: rng.integers(0, 3, n) * pair_loops.FLT_EPSILON * rng.choice([0.5, 1.0, 1.5], n),
    "all tied": lambda rng, n: np.full(n, 2.0),
}


@pytest.mark.parametrize("kind", list(_LABEL_KINDS))
@given(seed=st.integers(0, 2**32 - 1))
def test_sorted_rows_know_each_places_partners(kind: str, seed: int) -> None:
    # The row sessions' walk order sorts each session by label, and lower_end / higher_start bound the
    # places at least FLT_EPSILON below / above each place's label (the reference's tie rule), whichever sort
    # (counting for grades below 64, merge sort otherwise) the session took
    rng = np.random.default_rng(seed)
    lengths = rng.choice([0, 1, 5, pair_loops.SMALL_SESSION + 1, 40, 70], rng.integers(1, 6))
    n = int(lengths.sum())
    labels = _LABEL_KINDS[kind](rng, n)
    plan = pair_loops.plan_sessions(rng.standard_normal(n), labels, lengths, np.dtype(np.float64), full_rows=True)
    if isinstance(plan, pair_loops.DirectPlan):
        return
    offsets = plan.offsets
    for s in np.flatnonzero(lengths > pair_loops.SMALL_SESSION):
        a, b = offsets[s], offsets[s + 1]
        order = plan.order[a:b]
        assert sorted(order) == list(range(b - a))
        walk = labels[a + order]
        assert np.all(np.diff(walk) >= 0)
        for k in range(b - a):
            below = np.flatnonzero(walk[k] - walk >= pair_loops.FLT_EPSILON)
            above = np.flatnonzero(walk - walk[k] >= pair_loops.FLT_EPSILON)
            assert list(below) == list(range(plan.lower_end[a + k]))
            assert list(above) == list(range(plan.higher_start[a + k], b - a))
    for s in np.flatnonzero((lengths <= pair_loops.SMALL_SESSION) | ~plan.fast):  # every other item stays put
        a, b = offsets[s], offsets[s + 1]
        assert list(plan.order[a:b]) == list(range(b - a))


@pytest.mark.usefixtures("planned_walk")
@pytest.mark.parametrize("kind", list(_LABEL_KINDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1), lambdarank=st.booleans())
def test_sorted_rows_agree_with_the_reference(kind: str, dtype: type, seed: int, lambdarank: bool) -> None:
    # row sessions of every label kind, beside diagonal and one-item sessions, against the float64 references
    from pairloss.ops import lambdarank as lr

    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.array([0, 1, 9, pair_loops.SMALL_SESSION + 1, 50, 77]))
    n = int(lengths.sum())
    scores = (rng.standard_normal(n) * 3).astype(dtype)
    labels = _LABEL_KINDS[kind](rng, n)
    g = rng.standard_normal(lengths.size).astype(dtype)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    ones = np.ones(lengths.size)
    if lambdarank:  # NDCG gains need labels >= 0
        labels = labels - min(0.0, labels.min())
        args = {"sigma": 1.0, "topn": int(rng.integers(0, 12)), "gain": "linear"}
        got = (lr.forward_cpu(scores, labels, lengths, **args), lr.gradient_cpu(scores, labels, g, lengths, **args),
               *lr.forward_with_unit_gradient_cpu(scores, labels, lengths, **args)[:2])
        want = (lr.reference_forward(scores, labels, lengths, **args),
                lr.reference_gradient(scores, labels, g, lengths, **args),
                lr.reference_forward(scores, labels, lengths, **args),
                lr.reference_gradient(scores, labels, ones, lengths, **args))
    else:  # the registry's forward and gradient ops, and the fused call of the torch path (one visit a pair)
        got = (pwl.forward_cpu(scores, labels, lengths), pwl.gradient_cpu(scores, labels, g, lengths),
               *pwl.forward_with_unit_gradient_cpu(scores, labels, lengths)[:2])
        want = (pwl.reference_forward(scores, labels, lengths), pwl.reference_gradient(scores, labels, g, lengths),
                pwl.reference_forward(scores, labels, lengths), pwl.reference_gradient(scores, labels, ones, lengths))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.usefixtures("planned_walk")
def test_int64_walk_positions_give_the_same_results() -> None:
    # a session of 2^31 items or more keeps its walk positions in int64: the same loops, the same numbers
    rng = np.random.default_rng(7)
    lengths = np.array([50, 3, 120])
    n = int(lengths.sum())
    scores, labels = rng.standard_normal(n), rng.integers(0, 4, n)
    g = rng.standard_normal(lengths.size)

    def run() -> tuple[np.ndarray, ...]:
        return (pwl.forward_cpu(scores, labels, lengths), pwl.gradient_cpu(scores, labels, g, lengths),
                *pwl.forward_with_unit_gradient_cpu(scores, labels, lengths)[:2])

    narrow = run()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_loops, "_INT32_PLACES", 0)
        plan = pair_loops.plan_sessions(scores, labels.astype(np.float64), lengths, np.dtype(np.float64),
                                        full_rows=True)
        assert plan.order.dtype == np.int64
        wide = run()
    for a, b in zip(narrow, wide, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("planned_walk")
def test_fused_call_walks_long_sessions_by_rows_and_matches_the_reference() -> None:
    # a sorted session longer than FUSED_ITEMS takes the row walk inside the fused loop
    rng = np.random.default_rng(5)
    lengths = np.array([pair_loops.FUSED_ITEMS + 3, 40, pair_loops.FUSED_ITEMS])
    n = int(lengths.sum())
    scores = rng.standard_normal(n).astype(np.float32)
    labels = rng.integers(0, 5, n)
    loss, unit, _ = pwl.forward_with_unit_gradient_cpu(scores, labels, lengths)
    np.testing.assert_allclose(loss, pwl.reference_forward(scores, labels, lengths), rtol=1e-6)
    np.testing.assert_allclose(unit, pwl.reference_gradient(scores, labels, np.ones(3), lengths), rtol=1e-5,
                               atol=1e-9)


@pytest.mark.usefixtures("planned_walk")
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the parallel kernels need two threads")
def test_fused_call_does_not_depend_on_how_tasks_cut_the_rows() -> None:
    # sessions of up to FUSED_ITEMS items stay whole in one task, so whichever tasks the thread count makes,
    # every session takes the same walk and every bit of the result is the same
    rng = np.random.default_rng(6)
    lengths = np.concatenate([rng.integers(0, 300, 12), [pair_loops.FUSED_ITEMS + 1, 700]])
    n = int(lengths.sum())
    scores = rng.standard_normal(n)
    labels = rng.integers(0, 4, n)
    before = numba.get_num_threads()
    results = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_loops, "_PARALLEL_PAIRS", 0)
        numba.set_num_threads(2)
        try:
            for tasks_per_thread in (1, 3, 16):
                mp.setattr(pair_loops, "_TASKS_PER_THREAD", tasks_per_thread)
                results.append(pwl.forward_with_unit_gradient_cpu(scores, labels, lengths))
        finally:
            numba.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


# ---- Triton kernels on CPU (TRITON_INTERPRET=1) -------------------------------------------------------
_INTERPRETED_CHECK = textwrap.dedent("""
    import numpy as np, torch
    from pairloss.ops import lambdarank as lr, margin_ranking as mrc, negative as neg
    from pairloss.ops import pairwise_hinge as ph, pairwise_loss as pwl
    rng = np.random.default_rng(0)
    lengths = np.array([0, 1, 5, 40, 3, 70, 2, 17], np.int64)  # small and large tiles, empty and 1-item
    labels = rng.integers(0, 4, lengths.sum()).astype(np.float32)
    labels[10:14] = 2.0  # a tied block
    g = rng.standard_normal(lengths.size)
    T = torch.from_numpy
    ops = ((pwl, {}), (ph, {"margin": 0.5}), (lr, {"sigma": 1.3, "topn": 5, "gain": "exp2"}))
    for dtype, tol in ((np.float16, 2e-3), (np.float32, 1e-6), (np.float64, 1e-12)):
        x = (rng.standard_normal(lengths.sum()) * 3).astype(dtype)
        for mod, kw in ops:
            out = mod.forward_cuda(T(x), T(labels), T(lengths), **kw).numpy()
            assert out.dtype == dtype
            np.testing.assert_allclose(out.astype(float), mod.reference_forward(x, labels, lengths, **kw).astype(float),
                                       rtol=tol, atol=tol)
            grad = mod.gradient_cuda(T(x), T(labels), T(g.astype(dtype)), T(lengths), **kw).numpy()
            ref = mod.reference_gradient(x, labels, g.astype(dtype), lengths, **kw)
            np.testing.assert_allclose(grad.astype(float), ref.astype(float), rtol=tol, atol=tol)
    x = rng.standard_normal(9)
    assert pwl.forward_cuda(T(x), T(np.zeros(9))).item() == 0.0  # all tied
    try:
        pwl.forward_cuda(T(x), T(np.full(9, np.inf)))
        raise AssertionError("infinite labels not caught")
    except ValueError:
        pass
    x1 = rng.standard_normal(5000).astype(np.float32)
    x2 = x1 - 0.5
    y = rng.choice(np.array([-1, 1], np.int32), 5000)
    # the same float32 arithmetic on both devices: equal, the many kinks (dist == 0) included
    assert np.array_equal(mrc.forward_cuda(T(x1), T(x2), T(y), margin=0.5).numpy(),
                          mrc.forward_cpu(x1, x2, y, margin=0.5))
    for fast, cpu in zip(mrc.gradient_cuda(T(x1), T(x2), T(y), T(x1), margin=0.5),
                         mrc.gradient_cpu(x1, x2, y, x1, margin=0.5)):
        assert np.array_equal(fast.numpy(), cpu)
    try:
        mrc.forward_cuda(T(x1), T(x2[:10]), T(y), margin=0.5)
        raise AssertionError("shape mismatch not caught")
    except ValueError:
        pass
    assert np.array_equal(neg.negative_cuda(T(x1)).numpy(), -x1)
    print("triton-interpreted-ok")
""")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install pairloss[gpu])")
def test_triton_kernels_interpreted_on_cpu_match_references() -> None:
    # TRITON_INTERPRET is read when a kernel is decorated, so the check runs in a fresh interpreter
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", _INTERPRETED_CHECK], env=env, cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "triton-interpreted-ok" in result.stdout


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install pairloss[gpu])")
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
def test_triton_kernels_compile_for_sm90() -> None:
    # no GPU needed: Triton lowers to PTX and cubin for a named target with its bundled ptxas
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pairloss.ops import negative, pair_loops_cuda

    target = GPUTarget("cuda", 90, 32)
    kernel = pair_loops_cuda._pair_rows_kernel
    base = {"lab_ptr": "*fp64", "start_ptr": "*i64", "end_ptr": "*i64", "gain_ptr": "*fp64", "disc_ptr": "*fp64",
            "val_ptr": "*fp64", "cnt_ptr": "*i32", "bad_ptr": "*i32", "n": "i32", "eps": "fp32",
            "margin_bits": "i64", "LOSS": "constexpr", "FORWARD": "constexpr", "WEIGHTED": "constexpr",
            "IS_F64": "constexpr", "BLOCK_ROWS": "constexpr", "BLOCK_COLS": "constexpr"}
    for loss, forward, weighted, x in ((0, True, False, "*fp32"), (0, False, True, "*bf16"), (1, True, False, "*fp64"),
                                       (1, False, False, "*fp16")):
        sig = {**base, "x_ptr": x}
        consts = {"LOSS": loss, "FORWARD": forward, "WEIGHTED": weighted, "IS_F64": x == "*fp64" or loss == 1,
                  "BLOCK_ROWS": 64, "BLOCK_COLS": 64}
        src = ASTSource(kernel, {p: sig[p] for p in kernel.arg_names}, consts)
        assert "cubin" in triton.compile(src, target=target).asm
    margin_kernels = [
        (mrc._forward_kernel, {"x1_ptr": "*fp32", "x2_ptr": "*fp16", "y_ptr": "*i32", "out_ptr": "*fp32"}),
        (mrc._gradient_kernel, {"x1_ptr": "*fp64", "x2_ptr": "*fp64", "y_ptr": "*i64", "g_ptr": "*fp64",
                                "d1_ptr": "*fp64", "d2_ptr": "*fp64"}),
    ]
    for (kernel, sig), is_f64 in zip(margin_kernels, (False, True), strict=True):
        full = {**sig, "n": "i32", "bad_ptr": "*i32", "margin_arg": "i64" if is_f64 else "fp32",
                "IS_F64": "constexpr", "BLOCK": "constexpr"}
        src = ASTSource(kernel, {p: full[p] for p in kernel.arg_names}, {"IS_F64": is_f64, "BLOCK": 1024})
        assert "cubin" in triton.compile(src, target=target).asm
    src = ASTSource(negative._negative_kernel, {"x_ptr": "*i32", "y_ptr": "*i32", "n": "i32", "BLOCK": "constexpr"},
                    {"BLOCK": 1024})
    assert "cubin" in triton.compile(src, target=target).asm


# ---- the sessions a mean averages over ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint8, np.bool_, np.float16, np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1))
def test_sessions_with_pairs_follows_its_definition(dtype: type, seed: int) -> None:
    from pairloss._checks import FLT_EPSILON
    from pairloss.ops.sessions import sessions_with_pairs

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, rng.integers(0, 12))
    n = int(lengths.sum())
    labels = rng.integers(0, 2 if dtype == np.bool_ else rng.integers(1, 4), n).astype(dtype)
    if dtype == np.float32 and n:
        labels[rng.integers(0, n)] += np.float32(FLT_EPSILON / 4)  # a near-tie still ties
    column = labels[:, None] if rng.random() < 0.5 else labels
    starts = np.cumsum(lengths) - lengths
    want = [len(set(labels[a:a + k].astype(np.float64).tolist())) > 1
            and np.ptp(labels[a:a + k].astype(np.float64)) >= FLT_EPSILON for a, k in zip(starts, lengths)]
    got = sessions_with_pairs(column, lengths.astype(np.int64))
    assert got.dtype == np.bool_ and got.tolist() == want


@pytest.mark.parametrize("lens", [[], [0], [3, 0, 5, 1], list(range(50))])
def test_session_offsets_are_the_running_sum_from_zero(lens: list[int]) -> None:
    from pairloss.ops.sessions import session_offsets

    given = np.array(lens, np.int64)
    offsets = session_offsets(given)
    assert offsets.dtype == np.int64
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(given)]))


@pytest.mark.parametrize("given", [np.int64, np.int32, np.float32, np.float16, np.longdouble, np.bool_])
def test_labels_converted_into_scratch_are_the_fresh_conversion(given: type) -> None:
    from pairloss._checks import as_session_labels
    from pairloss.ops.sessions import KeptScratch

    labels = np.array([0, 1, 3, 1, 0]).astype(given)
    scratch = KeptScratch(1 << 20)
    kept = as_session_labels(labels, 5, scratch=scratch.float64)
    assert kept.dtype == np.float64 and kept.shape == (5,)
    assert np.shares_memory(kept, scratch.take(0))
    np.testing.assert_array_equal(kept, as_session_labels(labels, 5))
    wide = np.array([0.0, 2.0])  # float64 labels are used as given: no copy, scratch untouched
    used = as_session_labels(wide, 2, scratch=scratch.float64)
    assert np.shares_memory(used, wide) and not np.shares_memory(used, scratch.take(0))


def test_kept_scratch_is_reused_up_to_its_limit() -> None:
    from pairloss.ops.sessions import KeptScratch

    scratch = KeptScratch(1024)
    first = scratch.take(100)
    assert scratch.take(50) is first and scratch.float64(12).base is not None
    larger = scratch.take(1000)
    assert larger.size >= 1000 and scratch.take(10) is larger
    assert scratch.take(4096) is not scratch.take(4096)  # beyond the limit: fresh every time


@pytest.mark.parametrize("op", ["PairWiseLoss", "LambdaRankLoss"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_calls_sharing_the_label_scratch_each_give_their_own_result(op: str, dtype: type) -> None:
    # the labels' float64 copy lives in memory kept between calls: a later call (here a smaller one, then one
    # that needs a larger block) must not change what an earlier one returns, and the results are those of
    # labels in fresh memory
    from pairloss import registry

    fused = registry.fused_gradient(op)
    assert fused is not None
    kw = {} if op == "PairWiseLoss" else {"sigma": 1.0, "topn": 10, "gain": "exp2"}
    rng = np.random.default_rng(37)
    calls = []
    for n, sessions in ((10, 700), (30, 50), (200, 60)):
        calls.append((rng.standard_normal(n * sessions).astype(dtype), rng.integers(0, 5, n * sessions),
                      np.full(sessions, n)))
    first = [fused.forward(*call, **kw) for call in calls]
    again = fused.forward(*calls[0], **kw)
    for a, b in zip(again, first[0], strict=True):
        np.testing.assert_array_equal(a, b)
    import pairloss.ops.lambdarank as lr
    import pairloss.ops.pairwise_loss as pl

    module = pl if op == "PairWiseLoss" else lr
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_LABEL_SCRATCH", type("Fresh", (), {"float64": None})())  # fresh memory
        for call, kept in zip(calls, first, strict=True):
            for a, b in zip(fused.forward(*call, **kw), kept, strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", ["PairWiseLoss", "PairWiseHingeLoss", "LambdaRankLoss"])
@given(seed=st.integers(0, 2**32 - 1), label_kind=st.sampled_from(["grades", "near_ties", "float32", "tied"]),
       sizes=st.lists(st.integers(0, 60), min_size=0, max_size=6), repeat=st.sampled_from([1, 8]))
def test_fused_forward_counts_the_sessions_a_mean_averages(op: str, seed: int, label_kind: str,
                                                           sizes: list[int], repeat: int) -> None:
    # the torch front end's reduction="mean" divides by the fused kernel's count of sessions with a pair:
    # it must be the count from the labels (sessions_with_pairs), empty, one-item, all-tied and
    # 2^-23-apart sessions included, whichever path (lanes: 8 sessions of a size, rows, sorted) a session took
    from pairloss import registry
    from pairloss.ops.sessions import sessions_with_pairs

    rng = np.random.default_rng(seed)
    lengths = np.tile(np.array(sizes, dtype=np.int64), repeat)
    n = int(lengths.sum())
    scores = rng.standard_normal(n)
    if label_kind == "grades":
        labels: np.ndarray = rng.integers(0, 3, n)
    elif label_kind == "near_ties":  # steps of 2^-24 and 2^-23: ties and pairs at the tie rule's edge
        labels = 1.0 + rng.integers(0, 3, n) * 2.0**-24
    elif label_kind == "float32":
        labels = rng.random(n).astype(np.float32)
    else:
        labels = np.full(n, 2.0)
    fused = registry.fused_gradient(op)
    assert fused is not None
    kw = {"margin": 1.0} if op == "PairWiseHingeLoss" else {}
    if op == "LambdaRankLoss":
        kw = {"sigma": 1.0, "topn": 0, "gain": "linear"}
    result = fused.forward(scores, labels, lengths, **kw)
    assert result.counted is not None and result.counted.dtype == np.bool_
    np.testing.assert_array_equal(result.counted, sessions_with_pairs(labels, lengths))
