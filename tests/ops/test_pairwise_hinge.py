"""PairWiseHingeLoss: hand values, the O(n log n) kernel against the O(n^2) reference, gradients, edge cases."""

from __future__ import annotations

import inspect

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pairloss
from pairloss import registry
from pairloss.ops import pairwise_hinge as ph
from pairloss.ops.sessions import KeptScratch
from pairloss.registry import Net, OperatorDef


def brute_force(scores: np.ndarray, labels: np.ndarray, margin: float) -> tuple[float, np.ndarray]:
    """One session with an n x n broadcast (independent of both implementations): (loss, d loss/d scores)."""
    x = scores.astype(np.float64)
    dl = labels[:, None] - labels[None, :]  # row i above column j where dl > 0
    pairs = dl >= 2**-23
    h = margin - (x[:, None] - x[None, :])
    active = pairs & ~(h < 0)
    n_pairs = pairs.sum()
    if not n_pairs:
        return 0.0, np.zeros_like(x)
    loss = np.where(active, h, 0.0).sum() / n_pairs
    grad = (active.sum(axis=0) - active.sum(axis=1)) / n_pairs
    return float(loss), grad


# ---- hand-computed values -----------------------------------------------------------------------------
def test_hand_computed_values() -> None:
    # labels 2 > 1 > 0, scores 2, 1.5, 0: pairs (0,1) h = 1 - 0.5 = 0.5, (0,2) h = -1, (1,2) h = -0.5
    scores, labels = np.array([2.0, 1.5, 0.0]), np.array([2, 1, 0])
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels), [0.5 / 3])
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss_gradient(scores, labels, np.array([1.0])),
                               [-1 / 3, 1 / 3, 0.0])
    # a larger margin makes every pair active: (1 + 2 - 0.5 ... ) with margin 3: 2.5 + 1 + 1.5
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels, margin=3.0), [5.0 / 3])
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss_gradient(scores, labels, np.array([3.0]), margin=3.0),
                               [-2.0, 0.0, 2.0])


def test_reversed_scores_give_margin_plus_the_gap() -> None:
    # lo scored 4 above hi: max(0, 1 + 4) = 5
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(np.array([0.0, 4.0]), np.array([1, 0])), [5.0])


def test_gradient_is_passed_at_the_kink() -> None:
    # s_hi - s_lo == margin exactly: loss 0, gradient passed (MarginRankingCriterion's dist >= 0 rule)
    scores, labels = np.array([1.0, 0.0]), np.array([1, 0])
    assert pairloss.pairwise_hinge_loss(scores, labels)[0] == 0.0
    np.testing.assert_array_equal(pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1)), [-1.0, 1.0])
    # just past the kink: inactive
    scores[0] = np.nextafter(1.0, 2.0)
    np.testing.assert_array_equal(pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1)), [0.0, 0.0])


def test_hinge_equals_margin_ranking_criterion_over_all_discordant_pairs() -> None:
    rng = np.random.default_rng(5)
    scores, labels = rng.standard_normal(30), rng.integers(0, 4, 30)
    i, j = np.nonzero(labels[:, None] > labels[None, :])
    mrc = pairloss.margin_ranking_criterion(scores[i], scores[j], np.ones(i.size), margin=0.7)
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels, margin=0.7), [mrc.mean()], rtol=1e-13)


def test_sessions_are_averaged_separately() -> None:
    scores = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    labels = np.array([1, 0, 2, 1, 0])
    # session 1: one pair, h = 1; session 2: pairs (2,3) h = 0, (2,4) h = 0, (3,4) h = 1 -> 1/3
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels, np.array([2, 3])), [1.0, 1 / 3])


# ---- the O(n log n) kernel against the O(n^2) reference ------------------------------------------------
@st.composite
def hinge_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Sessions on both sides of the pair-loop/sorting switch, with duplicate scores and exact hinge hits."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_sessions = draw(st.integers(0, 6))
    lengths = rng.choice(np.array([0, 1, 2, 10, ph._GRADED_MIN - 1, ph._GRADED_MIN, ph._DIRECT_MAX, ph._LANES_MAX,
                                   ph._LANES_MAX + 1, ph._ROWS_MAX, ph._ROWS_MAX + 1, 300]), size=n_sessions)
    if draw(st.booleans()):  # every size _LANES_MIN times: the small ones go side by side
        lengths = np.repeat(lengths, ph._LANES_MIN)
    n = int(lengths.sum())
    kind = draw(st.sampled_from(["grid", "normal", "wide"]))
    if kind == "grid":  # scores on a grid of 1/4: ties in score and s_hi - s_lo == margin all over
        scores = rng.integers(-8, 9, n) / 4.0
    elif kind == "normal":
        scores = rng.standard_normal(n)
    else:
        scores = rng.standard_normal(n) * 1e3
    label_kind = draw(st.sampled_from(["grades", "binary", "continuous", "near_ties", "all_tied", "every_grade",
                                       "past_the_grades", "negative_grades"]))
    if label_kind == "grades":
        labels = rng.integers(0, 5, n).astype(np.float64)
    elif label_kind == "every_grade":  # the integer-grade paths at their widest (grades 0 .. _GRADES - 1)
        labels = rng.integers(0, ph._GRADES, n).astype(np.float64)
    elif label_kind == "past_the_grades":  # integers, some too large for the grade paths: the label sort
        labels = rng.integers(ph._GRADES - 8, ph._GRADES + 8, n).astype(np.float64)
    elif label_kind == "negative_grades":
        labels = rng.integers(-3, 3, n).astype(np.float64)
    elif label_kind == "binary":
        labels = rng.integers(0, 2, n).astype(np.float64)
    elif label_kind == "continuous":
        labels = rng.standard_normal(n)
    elif label_kind == "near_ties":  # distinct labels closer than 2^-23: "tied" is not transitive
        labels = rng.integers(0, 3, n) + rng.choice([0.0, 2.0**-25], size=n)
    else:
        labels = np.full(n, 3.0)
    margin = draw(st.sampled_from([1.0, 0.5, 0.25, 0.0, -0.5]))
    loss_grad = rng.standard_normal(lengths.size)
    return scores, labels, lengths.astype(np.int64), loss_grad, margin


@given(case=hinge_cases())
def test_fast_kernel_matches_reference(case: tuple) -> None:
    scores, labels, lengths, g, margin = case
    fast = ph.forward_cpu(scores, labels, lengths, margin=margin)
    ref = ph.reference_forward(scores, labels, lengths, margin=margin)
    atol = 1e-15 * max(1.0, float(np.abs(scores).max(initial=0.0)))
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=atol)
    # the kernel's gradient is exact pair counts times g / |P|; the reference adds +-g one pair at a time,
    # so where the counts cancel it may keep ~1e-20 of rounding
    np.testing.assert_allclose(ph.gradient_cpu(scores, labels, g, lengths, margin=margin),
                               ph.reference_gradient(scores, labels, g, lengths, margin=margin),
                               rtol=1e-12, atol=1e-15 * float(np.abs(g).max(initial=0.0)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
def test_dtypes_round_once_from_float64(dtype: type) -> None:
    rng = np.random.default_rng(7)
    lengths = np.array([300, 5, 0, 80])
    scores = rng.standard_normal(lengths.sum()).astype(dtype)
    labels = rng.integers(0, 4, lengths.sum()).astype(np.int16)
    g = rng.standard_normal(lengths.size).astype(dtype)
    out = ph.forward_cpu(scores, labels, lengths, margin=1.0)
    grad = ph.gradient_cpu(scores, labels, g, lengths, margin=1.0)
    assert out.dtype == grad.dtype == dtype and grad.shape == scores.shape
    np.testing.assert_allclose(out, ph.reference_forward(scores, labels, lengths, margin=1.0), rtol=1e-3)
    np.testing.assert_allclose(grad, ph.reference_gradient(scores, labels, g, lengths, margin=1.0), rtol=1e-3,
                               atol=1e-12)


def _small_sessions(rng: np.random.Generator, label_kind: str, scores_kind: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sessions on both sides of the side-by-side path's rules, in shuffled order: one size in more than two
    blocks of _LANES (the last one partial), _LANES_MIN sessions of _LANES_MAX and of _GRADED_MIN items
    (side by side), _LANES_MIN - 1 of 7 items (rows), and every size up to _LANES_MAX + 1 a few times,
    empty and one-item sessions among them."""
    lengths = np.concatenate([np.full(2 * ph._LANES + 7, 10), np.full(ph._LANES_MIN, ph._LANES_MAX),
                              np.full(ph._LANES_MIN, ph._GRADED_MIN), np.full(ph._LANES_MIN - 1, 7),
                              rng.choice(np.setdiff1d(np.arange(ph._LANES_MAX + 2), [7]), 150)])
    lengths = rng.permutation(lengths)
    n = int(lengths.sum())
    if scores_kind == "grid":  # equal scores and h == 0 exactly
        scores = rng.integers(-8, 9, n) / 4.0
    elif scores_kind == "huge":  # differences that overflow to +-inf: h = +inf (active) or -inf
        scores = rng.choice([-1.5e308, -1.0, 0.0, 1.0, 1.5e308], n)
    else:
        scores = rng.standard_normal(n)
    if label_kind == "grades":
        labels = rng.integers(0, 5, n).astype(np.float64)
    elif label_kind == "continuous":
        labels = rng.standard_normal(n)
    else:  # distinct labels closer than 2^-23, and exactly 2^-23 apart
        labels = rng.integers(0, 2, n) + rng.choice([0.0, 2.0**-25, 2.0**-23], size=n)
    return scores, labels, lengths


@pytest.mark.parametrize("scores_kind", ["grid", "normal", "huge"])
@pytest.mark.parametrize("label_kind", ["grades", "continuous", "near_ties"])
def test_small_sessions_side_by_side_match_reference_and_separate_calls(label_kind: str, scores_kind: str) -> None:
    rng = np.random.default_rng(17)
    scores, labels, lengths = _small_sessions(rng, label_kind, scores_kind)
    g = rng.standard_normal(lengths.size)
    out = ph.forward_cpu(scores, labels, lengths, margin=1.0)
    grad = ph.gradient_cpu(scores, labels, g, lengths, margin=1.0)
    np.testing.assert_allclose(out, ph.reference_forward(scores, labels, lengths, margin=1.0), rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(grad, ph.reference_gradient(scores, labels, g, lengths, margin=1.0), rtol=1e-12,
                               atol=1e-15)
    grouped, _, rest = ph._lane_groups(lengths, np.zeros(lengths.size, np.bool_))
    assert np.array_equal(np.sort(np.concatenate([grouped, rest])), np.arange(lengths.size))
    laned = np.isin(np.arange(lengths.size), grouped)
    assert laned[np.isin(lengths, [10, ph._LANES_MAX, ph._GRADED_MIN])].all() and not laned[lengths == 7].any()
    # a session's lane does the same arithmetic in the same order whatever shares its block
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for s in rng.choice(np.flatnonzero(lengths == 10), 12, replace=False):
        part = slice(starts[s], starts[s + 1])
        alone = np.tile(scores[part], ph._LANES_MIN), np.tile(labels[part], ph._LANES_MIN)
        np.testing.assert_array_equal(ph.forward_cpu(*alone, np.full(ph._LANES_MIN, 10), margin=1.0),
                                      np.full(ph._LANES_MIN, out[s]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
def test_small_sessions_on_threads_are_the_serial_loop_bit_for_bit(dtype: type) -> None:
    rng = np.random.default_rng(23)
    scores, labels, lengths = _small_sessions(rng, "grades", "normal")
    scores = np.tile(scores, 8).astype(dtype)  # past _SERIAL_ITEMS: the call goes to the threads
    labels, lengths = np.tile(labels, 8), np.tile(lengths, 8)
    assert scores.size >= ph._SERIAL_ITEMS
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            results.append(ph.forward_with_unit_gradient_cpu(scores, labels, lengths, margin=1.0))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(results[0][0], ph.reference_forward(scores, labels, lengths, margin=1.0),
                               rtol=1e-3 if dtype == np.float16 else 1e-6)


def _large_sessions_from(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Sessions of ``size`` items and more take the large-session paths, on the threads (as if no core
    were busy), in calls of any size."""
    monkeypatch.setattr(ph, "_PARALLEL_MIN", size)
    monkeypatch.setattr(ph, "_GRADED_PARALLEL_MIN", size)
    monkeypatch.setattr(ph, "_SERIAL_ITEMS", 0)
    monkeypatch.setattr(ph, "cores_free_for", lambda threads: True)


def test_large_session_on_two_threads_matches_the_serial_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    lengths = np.array([400, 700])
    scores = rng.integers(-20, 20, lengths.sum()) / 8.0
    labels = rng.integers(0, 5, lengths.sum())
    g = np.array([0.5, -2.0])
    def run() -> tuple[np.ndarray, np.ndarray]:
        return (ph.forward_cpu(scores, labels, lengths, margin=1.0),
                ph.gradient_cpu(scores, labels, g, lengths, margin=1.0))

    serial = run()
    _large_sessions_from(monkeypatch, 300)  # both sessions now take the two-thread path
    parallel = run()
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(parallel[0], ph.reference_forward(scores, labels, lengths, margin=1.0), rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scores_kind", ["grid", "normal", "equal", "sign"])
@pytest.mark.parametrize("n", [301, 1000, 4097])
def test_graded_large_session_is_the_sessions_loop_bit_for_bit(
        n: int, scores_kind: str, dtype: type, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # _graded_big_session (on two threads: its sort, its table and its sweep in two halves) against the
    # sessions loop: odd sizes, ties across the split, equal scores (no byte pass moves anything) and
    # scores of both signs must give the same bits
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {threads} Numba threads")
    rng = np.random.default_rng(n)
    scores = {"grid": rng.integers(-40, 40, n) / 8.0, "normal": rng.standard_normal(n), "equal": np.full(n, 0.25),
              "sign": rng.choice([-1.0, 1.0], n) * rng.integers(0, 3, n) / 4.0}[scores_kind].astype(dtype)
    labels = rng.integers(0, 7, n)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        serial = ph.forward_with_unit_gradient_cpu(scores, labels, None, margin=0.5)
        _large_sessions_from(monkeypatch, 300)
        if n == 1000:  # a fresh block, too
            monkeypatch.setattr(ph, "_SESSION_SCRATCH", KeptScratch(0))
        calls = []
        real = ph._graded_big_session
        monkeypatch.setattr(ph, "_graded_big_session", lambda *a: calls.append(1) or real(*a))
        parallel = ph.forward_with_unit_gradient_cpu(scores, labels, None, margin=0.5)
    finally:
        numba.set_num_threads(before)
    assert calls, "the session did not take _graded_big_session"
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
    if n <= 1000:  # the O(n^2) reference takes 7 s at 4097 items; the serial path is tested against it elsewhere
        np.testing.assert_allclose(serial[0], ph.reference_forward(scores.astype(np.float64), labels, margin=0.5),
                                   rtol=1e-6 if dtype == np.float32 else 1e-12)


def test_large_sessions_stay_on_one_thread_when_a_core_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    # with another process on the cores a large session runs serially (its steps each wait at a barrier),
    # with the same numbers
    if numba.get_num_threads() < 2:
        pytest.skip("needs 2 Numba threads")
    rng = np.random.default_rng(5)
    n = 2000
    scores = rng.standard_normal(2 * n)
    labels = np.concatenate([rng.integers(0, 5, n), rng.standard_normal(n)])  # one graded, one not
    lengths = np.array([n, n])
    serial = ph.forward_with_unit_gradient_cpu(scores, labels, lengths, margin=0.5)
    _large_sessions_from(monkeypatch, 1000)
    seen: list[tuple[str, bool]] = []
    graded, other = ph._graded_big_session, ph._big_session
    monkeypatch.setattr(ph, "_graded_big_session", lambda *a: seen.append(("graded", a[-1])) or graded(*a))
    monkeypatch.setattr(ph, "_big_session", lambda *a: seen.append(("other", True)) or other(*a))
    for free in (True, False):
        seen.clear()
        monkeypatch.setattr(ph, "cores_free_for", lambda threads, free=free: free)
        got = ph.forward_with_unit_gradient_cpu(scores, labels, lengths, margin=0.5)
        assert seen == ([("graded", True), ("other", True)] if free else [("graded", False)])
        for a, b in zip(serial, got, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("step", [2.0**-24, 0.75 * 2.0**-23, 2.0**-23, 1e-7])
def test_non_transitive_ties_in_a_sorted_session_match_reference(step: float) -> None:
    # neighbours tie (|dl| < 2^-23) while items two steps apart do not: ranks alone would be wrong
    rng = np.random.default_rng(12)
    n = 240
    labels = 1.0 + rng.integers(0, 12, n) * step
    scores = rng.integers(-6, 7, n) / 4.0
    g = np.array([1.3])
    np.testing.assert_allclose(ph.forward_cpu(scores, labels, margin=0.5),
                               ph.reference_forward(scores, labels, margin=0.5), rtol=1e-12)
    np.testing.assert_allclose(ph.gradient_cpu(scores, labels, g, margin=0.5),
                               ph.reference_gradient(scores, labels, g, margin=0.5), rtol=1e-12, atol=1e-15)


def test_float32_continuous_labels_with_near_ties_match_brute_force() -> None:
    rng = np.random.default_rng(13)
    n = 4000
    labels = rng.standard_normal(n).astype(np.float32)  # many neighbours closer than 2^-23
    scores = rng.standard_normal(n)
    loss, grad = brute_force(scores, labels.astype(np.float64), 1.0)
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels), [loss], rtol=1e-12)
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1)), grad,
                               rtol=1e-12, atol=1e-300)


def test_large_single_session_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    scores = np.round(rng.standard_normal(n) * 8) / 8  # many duplicates and exact hinge hits
    labels = rng.integers(0, 5, n)
    loss, grad = brute_force(scores, labels.astype(np.float64), 1.0)
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels), [loss], rtol=1e-12)
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1)), grad,
                               rtol=1e-12, atol=1e-300)


def test_radix_argsort_orders_signed_zeros_subnormals_and_extremes() -> None:
    values = np.array([0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 1.0, -1.0, 0.5, 0.5, 2.0**-1074 * 3])
    n = values.size
    keys, kbuf = np.empty(n), np.empty(n)
    idx, ibuf = np.empty(n, np.int32), np.empty(n, np.int32)
    assert ph._radix_argsort(values, keys, kbuf, idx, ibuf, np.empty((8, 256), np.int64))
    np.testing.assert_array_equal(keys, np.sort(values))
    np.testing.assert_array_equal(values[idx], keys)
    assert not ph._radix_argsort(np.array([1.0, np.nan]), keys[:2], kbuf[:2], idx[:2], ibuf[:2],
                                 np.empty((8, 256), np.int64))


def test_radix_argsort32_orders_signed_zeros_subnormals_and_extremes() -> None:
    tiny = np.float32(1e-45)  # the smallest float32 subnormal
    values32 = np.array([0.0, -0.0, tiny, -tiny, 3.4e38, -3.4e38, 1.0, -1.0, 0.5, 0.5, 3 * tiny, -0.0],
                        dtype=np.float32)
    n = values32.size
    values = values32.astype(np.float64)
    keys, idx = np.empty(n), np.empty(n, np.int32)
    ph._radix_argsort32(values32.view(np.uint32), values, keys, idx, np.empty(n, np.uint64), np.empty(n, np.uint64),
                        np.empty((8, 256), np.int64))
    np.testing.assert_array_equal(keys, np.sort(values))
    np.testing.assert_array_equal(values[idx], keys)
    assert sorted(idx.tolist()) == list(range(n))
    assert idx[list(keys).index(0.5):][:2].tolist() == [8, 9]  # equal keys keep their input order (stable)


@pytest.mark.parametrize("scores_kind", ["grid", "normal", "wide"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["f16", "f32"])
def test_narrow_scores_count_the_same_pairs_as_their_float64_values(dtype: type, scores_kind: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # float32 and float16 scores sort as 32-bit keys (_radix_argsort32): the same active pairs as the same
    # numbers in float64 (64-bit keys), on every sorted path (the two-thread one included)
    rng = np.random.default_rng(21)
    lengths = np.array([ph._ROWS_MAX + 1, 1000, 0, 600, 3])
    n = int(lengths.sum())
    scores = {"grid": rng.integers(-16, 17, n) / 4.0, "normal": rng.standard_normal(n),
              "wide": rng.standard_normal(n) * 1e3}[scores_kind].astype(dtype)
    labels = rng.integers(0, 5, n).astype(np.float64)
    start = int(lengths[:3].sum())
    labels[start:start + 600] = rng.standard_normal(600)  # one session's labels are not grades: the label sort
    for parallel_min in (ph._PARALLEL_MIN, 500):  # 500: the long sessions take _big_session when threads allow
        _large_sessions_from(monkeypatch, parallel_min)
        loss, unit, _ = ph.forward_with_unit_gradient_cpu(scores, labels, lengths, margin=0.75)
        wide_loss, wide_unit, _ = ph.forward_with_unit_gradient_cpu(scores.astype(np.float64), labels, lengths,
                                                                 margin=0.75)
        np.testing.assert_array_equal(unit, wide_unit)
        np.testing.assert_allclose(loss, wide_loss.astype(dtype), rtol=1e-3 if dtype == np.float16 else 1e-6)
        np.testing.assert_allclose(
            wide_loss, ph.reference_forward(scores.astype(np.float64), labels, lengths, margin=0.75), rtol=1e-12)


@pytest.mark.parametrize("label_step", [1.0, 0.5], ids=["grades", "fractional"])
@pytest.mark.parametrize("n", [2, 10, ph._GRADED_MIN + 6, 100, ph._ROWS_MAX + 44, 5000])
def test_float32_scores_are_compared_by_their_float64_difference(n: int, label_step: float,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # float32 scores reach the kernels as float32: every path must take x_hi - x_lo in float64, as the
    # reference does. Here fl32(x_hi - x_lo) = 1 (a tie rounded to even) makes the pair active at margin 1,
    # while the float64 difference 1 + 2^-24 leaves it inactive: loss and gradient 0
    hi, lo = np.float32(1 + 2**-23), np.float32(2**-24)
    assert np.float32(hi - lo) == 1.0 and float(hi) - float(lo) > 1.0
    scores = np.where(np.arange(n) % 2 == 0, hi, lo).astype(np.float32)
    labels = (np.arange(n) % 2 == 0) * label_step
    for parallel_min in (ph._PARALLEL_MIN, 1000):  # 1000: the longest session takes _big_session
        _large_sessions_from(monkeypatch, parallel_min)
        loss, unit, _ = ph.forward_with_unit_gradient_cpu(scores, labels, None, margin=1.0)
        np.testing.assert_array_equal(loss, [0.0])
        np.testing.assert_array_equal(unit, np.zeros(n))


# ---- gradient against finite differences --------------------------------------------------------------
@given(seed=st.integers(0, 2**32 - 1), margin=st.sampled_from([1.0, 0.3]))
def test_gradient_matches_finite_differences(seed: int, margin: float) -> None:
    rng = np.random.default_rng(seed)
    lengths = np.array([3, 60, 0, 7])  # the pair rows; the sorted path is checked against brute force above
    scores = rng.standard_normal(lengths.sum()) * 2
    labels = rng.integers(0, 3, lengths.sum())
    # keep every pair at least 1e-3 away from its kink, where the loss is not differentiable
    for _ in range(50):
        h = margin - (scores[:, None] - scores[None, :])
        near = (np.abs(h) < 1e-3).any(axis=1)
        if not near.any():
            break
        scores[near] += rng.uniform(0.01, 0.02, near.sum())
    weights = rng.standard_normal(lengths.size)
    objective = lambda x: float(weights @ ph.forward_cpu(x, labels, lengths, margin=margin))
    analytic = ph.gradient_cpu(scores, labels, weights, lengths, margin=margin)
    step = 1e-6
    numeric = np.empty_like(scores)
    for k in range(scores.size):
        plus, minus = scores.copy(), scores.copy()
        plus[k] += step
        minus[k] -= step
        numeric[k] = (objective(plus) - objective(minus)) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# ---- edge cases ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [[0, 1, 0], [1, 1, 1], [0, 0]])
def test_empty_and_one_item_sessions_contribute_zero(lengths: list[int]) -> None:
    n = sum(lengths)
    x = np.arange(n, dtype=np.float64)
    np.testing.assert_array_equal(pairloss.pairwise_hinge_loss(x, np.arange(n), np.array(lengths)),
                                  np.zeros(len(lengths)))
    np.testing.assert_array_equal(
        pairloss.pairwise_hinge_loss_gradient(x, np.arange(n), np.ones(len(lengths)), np.array(lengths)),
        np.zeros(n))


@pytest.mark.parametrize("n", [5, 200])
def test_loss_is_zero_when_all_labels_tie(n: int) -> None:
    scores = np.random.default_rng(0).standard_normal(n)
    labels = np.ones(n) + np.where(np.arange(n) % 2, 2.0**-25, 0.0)  # within 2^-23 of each other
    assert pairloss.pairwise_hinge_loss(scores, labels)[0] == 0.0
    assert not pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1)).any()


def test_empty_input_without_lengths_is_one_zero() -> None:
    np.testing.assert_array_equal(pairloss.pairwise_hinge_loss(np.zeros(0), np.zeros(0)), [0.0])
    assert pairloss.pairwise_hinge_loss_gradient(np.zeros((0, 1)), np.zeros(0), np.ones(1)).shape == (0, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n", [6, 50_000])
def test_non_finite_scores_raise_without_an_n_squared_detour(n: int, bad: float) -> None:
    # one non-finite score used to send a whole session to the O(n^2) pair loop (n = 5e4: 20 s); the
    # O(n log n) algorithm needs ordered scores, so the op says what is wrong instead
    scores = np.linspace(0.0, 1.0, n)
    scores[2] = bad
    labels = np.arange(n) % 3
    for call in (lambda: pairloss.pairwise_hinge_loss(scores, labels),
                 lambda: pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1)),
                 lambda: ph.reference_forward(scores, labels, margin=1.0)):
        with pytest.raises(ValueError, match=r"scores must be finite; got NaN or inf at positions \[2\]"):
            call()


def test_gradient_has_no_nan_for_scores_of_1e30() -> None:
    scores = np.array([1e30, -1e30, 0.0, 1e30, 3.0] * 20)
    labels = np.arange(100) % 4
    g = pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(1))
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, ph.reference_gradient(scores, labels, np.ones(1), margin=1.0), rtol=1e-12)
    np.testing.assert_allclose(pairloss.pairwise_hinge_loss(scores, labels),
                               ph.reference_forward(scores, labels, margin=1.0), rtol=1e-12)


@pytest.mark.parametrize("label_kind", ["grades", "continuous"])
@pytest.mark.parametrize("n", [10, 100, 600])
def test_scores_near_the_float64_limit_give_the_reference_not_nan(n: int, label_kind: str) -> None:
    # h = margin - (x_hi - x_lo) overflows to +inf for an active pair 3e308 apart: the loss is +inf, as
    # the reference's, and the sessions without such a pair stay finite
    rng = np.random.default_rng(n)
    scores = np.concatenate([rng.choice([-1.5e308, -1.0, 0.0, 1.0, 1.5e308], n), rng.choice([-1e307, 1e307], n)])
    labels = rng.integers(0, 4, 2 * n) if label_kind == "grades" else rng.standard_normal(2 * n)
    lengths = np.array([n, n])
    out = ph.forward_cpu(scores, labels, lengths, margin=1.0)
    ref = ph.reference_forward(scores, labels, lengths, margin=1.0)
    assert out[0] == ref[0] == np.inf
    np.testing.assert_allclose(out[1], ref[1], rtol=1e-12)
    g = np.ones(2)
    np.testing.assert_allclose(ph.gradient_cpu(scores, labels, g, lengths, margin=1.0),
                               ph.reference_gradient(scores, labels, g, lengths, margin=1.0), rtol=1e-12)


def test_lengths_split_equals_separate_calls() -> None:
    rng = np.random.default_rng(9)
    lengths = [70, 3, 0, 120]
    scores, labels = rng.standard_normal(sum(lengths)), rng.integers(0, 3, sum(lengths))
    joint = pairloss.pairwise_hinge_loss(scores, labels, np.array(lengths), margin=0.5)
    bounds = np.cumsum([0, *lengths])
    separate = [pairloss.pairwise_hinge_loss(scores[a:b], labels[a:b], margin=0.5)[0]
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    np.testing.assert_array_equal(joint, separate)


# ---- schema, registry, errors -------------------------------------------------------------------------
def test_schema_declares_margin_once() -> None:
    s = registry.schema("PairWiseHingeLoss")
    assert s.get_arg("margin").default == 1.0 and s.get_arg("margin").doc
    for fn in (pairloss.pairwise_hinge_loss, pairloss.pairwise_hinge_loss_gradient):
        assert inspect.signature(fn).parameters["margin"].default == s.get_arg("margin").default
    assert registry.schema("PairWiseHingeLossGradient").is_gradient_op
    assert s.infer_shapes([((7, 1), np.dtype(np.float32)), ((7,), np.dtype(np.int32)), ((3,), np.dtype(np.int32))]) \
        == [((3,), np.dtype(np.float32))]
    assert not s.inplace


@pytest.mark.parametrize("with_lengths", [False, True])
def test_gradient_maker_forwards_margin_and_lengths(with_lengths: bool) -> None:
    inputs = ("X", "label", "lengths") if with_lengths else ("X", "label")
    op = OperatorDef("PairWiseHingeLoss", inputs, ("Y",), {"margin": 0.25})
    (grad,) = registry.get_gradient_defs(op)
    assert grad.type == "PairWiseHingeLossGradient"
    assert grad.inputs == ("X", "label", "Y_grad") + (("lengths",) if with_lengths else ())
    assert grad.outputs == ("X_grad",) and grad.args == {"margin": 0.25}


def test_net_backward_matches_the_gradient_function() -> None:
    rng = np.random.default_rng(4)
    scores, labels, lengths = rng.standard_normal(90), rng.integers(0, 3, 90), np.array([60, 30])
    net = Net()
    net.PairWiseHingeLoss(["X", "label", "lengths"], ["Y"], margin=0.5)
    grads = net.add_gradient_operators(["Y"])
    ws = net.run({"X": scores, "label": labels, "lengths": lengths})
    np.testing.assert_allclose(
        ws[grads["X"]], pairloss.pairwise_hinge_loss_gradient(scores, labels, np.ones(2), lengths, margin=0.5))


def test_errors_name_the_argument() -> None:
    x = np.zeros(4)
    with pytest.raises(ValueError, match="lengths must sum to the number of scores N=4"):
        pairloss.pairwise_hinge_loss(x, np.zeros(4), np.array([1, 2]))
    with pytest.raises(ValueError, match="labels must be finite; got NaN or inf"):
        pairloss.pairwise_hinge_loss(x, np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(TypeError, match="scores must be a float16, float32 or float64 array"):
        pairloss.pairwise_hinge_loss(np.zeros(4, np.int64), np.zeros(4))
    with pytest.raises(ValueError, match="loss_grad must have one entry per session"):
        pairloss.pairwise_hinge_loss_gradient(x, np.zeros(4), np.ones(2))
    with pytest.raises(ValueError, match="argument 'margin' must be finite"):
        pairloss.pairwise_hinge_loss(x, np.zeros(4), margin=float("inf"))
    with pytest.raises(ValueError, match="unknown argument"):
        registry.run("PairWiseHingeLoss", x, np.zeros(4), scale=2.0)


def test_calls_sharing_the_label_scratch_each_give_their_own_result() -> None:
    # the labels' float64 copy lives in memory kept between calls: a later call must not see an earlier
    # call's labels, and nothing returned may alias that memory
    rng = np.random.default_rng(31)
    scores, lengths = rng.standard_normal(600), np.full(60, 10)
    first, second = rng.integers(0, 5, 600), rng.integers(0, 3, 200)
    y1, unit1, _ = ph.forward_with_unit_gradient_cpu(scores, first, lengths, margin=1.0)
    y2, unit2, _ = ph.forward_with_unit_gradient_cpu(scores[:200], second, lengths[:20], margin=1.0)
    again = ph.forward_with_unit_gradient_cpu(scores, first, lengths, margin=1.0)
    np.testing.assert_array_equal(again[0], y1)
    np.testing.assert_array_equal(again[1], unit1)
    np.testing.assert_allclose(y2, ph.reference_forward(scores[:200], second, lengths[:20], margin=1.0), rtol=1e-12)
    assert not np.shares_memory(unit1, unit2) and not np.shares_memory(y1, unit2)
