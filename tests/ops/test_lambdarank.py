"""LambdaRankLoss: the weights by hand, the definition as |ΔNDCG|, edge cases and errors.

The generic suites (tests/test_operators.py) compare its kernels with the float64 reference, its gradient
with finite differences (the weights are constant between rank changes) and its second derivatives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairloss.ops import lambdarank as lr
from pairloss.ops import pairwise_loss as pwl

# every case on both walks of the pair loops (small inputs would otherwise never reach the planned one)
pytestmark = pytest.mark.usefixtures("pair_walk")


def _ndcg(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    gains = 2.0 ** labels - 1
    dcg = sum(gains[k] / math.log2(2 + r) for r, k in enumerate(order))
    ideal = sum(g / math.log2(2 + r) for r, g in enumerate(sorted(gains, reverse=True)))
    return dcg / ideal


def test_weights_are_the_ndcg_change_of_swapping_the_pair() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(7)
    labels = rng.integers(0, 4, 7).astype(float)
    w = lr.lambdarank_weights(scores, labels, np.array([7]), topn=0, gain="exp2")
    for i in range(7):
        for j in range(i):
            swapped = scores.copy()
            swapped[[i, j]] = swapped[[j, i]]
            delta = abs(_ndcg(swapped, labels) - _ndcg(scores, labels))
            got = abs(w.gain[i] - w.gain[j]) * abs(w.discount[i] - w.discount[j]) * w.inv_ideal[i]
            assert got == pytest.approx(delta, rel=1e-12, abs=1e-15)


def test_hand_computed_value() -> None:
    # labels (2, 1, 0) ranked worst-first by scores (0, 1, 2): ranks 3, 2, 1
    scores, labels = np.array([0.0, 1.0, 2.0]), np.array([2, 1, 0])
    gains = np.array([3.0, 1.0, 0.0])
    disc = 1 / np.log2(np.array([4.0, 3.0, 2.0]))
    idcg = 3.0 / np.log2(2) + 1.0 / np.log2(3)
    sp = lambda z: math.log1p(math.exp(z))
    pairs = [(0, 1), (0, 2), (1, 2)]  # (hi, lo)
    want = sum(abs(gains[h] - gains[lo]) * abs(disc[h] - disc[lo]) / idcg * sp(scores[lo] - scores[h])
               for h, lo in pairs) / 3
    assert lr.lambdarank_loss(scores, labels)[0] == pytest.approx(want, rel=1e-14)


def test_linear_gain_and_truncation() -> None:
    scores, labels = np.array([3.0, 2.0, 1.0, 0.0]), np.array([0, 1, 0, 2])
    # topn=1: only pairs with the top item (score 3, label 0) carry weight
    w = lr.lambdarank_weights(scores, labels.astype(float), np.array([4]), topn=1, gain="linear")
    np.testing.assert_allclose(w.discount, [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(w.gain, labels)
    assert w.inv_ideal[0] == pytest.approx(1 / 2.0)  # ideal top-1: gain 2
    top1 = lr.lambdarank_loss(scores, labels, gain="linear", topn=1)
    # pairs (top item, other): |G| |D| / IDCG@1 with D = (1, 0, 0, 0); 3 of the 5 discordant pairs count
    sp = lambda z: math.log1p(math.exp(z))
    want = (1 / 2 * sp(3.0 - 2.0) + 2 / 2 * sp(3.0 - 0.0)) / 5  # (hi=1, lo=0), (hi=3, lo=0); label 0 ties
    assert top1[0] == pytest.approx(want, rel=1e-14)


def test_sigma_scales_the_differences() -> None:
    scores, labels = np.array([0.3, -0.2, 1.0]), np.array([1, 0, 2])
    g = np.ones(1)
    # the weights depend only on the ranking, which sigma does not change
    np.testing.assert_allclose(lr.lambdarank_loss(scores, labels, sigma=2.0),
                               lr.reference_forward(scores, labels, sigma=2.0, topn=0, gain="exp2"), rtol=1e-14)
    np.testing.assert_allclose(lr.lambdarank_loss_gradient(scores, labels, g, sigma=2.0),
                               lr.reference_gradient(scores, labels, g, sigma=2.0, topn=0, gain="exp2"), rtol=1e-13)


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_kernels_match_reference_on_many_sessions(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 45, rng.integers(1, 12))
    n = int(lengths.sum())
    scores = (rng.standard_normal(n) * 2).astype(dtype)
    labels = rng.integers(0, 5, n)
    g = rng.standard_normal(lengths.size).astype(dtype)
    tol = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-12}[dtype]
    for topn in (0, 5):
        kw = {"sigma": 1.0, "topn": topn, "gain": "exp2"}
        np.testing.assert_allclose(lr.forward_cpu(scores, labels, lengths, **kw).astype(float),
                                   lr.reference_forward(scores, labels, lengths, **kw).astype(float),
                                   rtol=tol, atol=tol)
        np.testing.assert_allclose(lr.gradient_cpu(scores, labels, g, lengths, **kw).astype(float),
                                   lr.reference_gradient(scores, labels, g, lengths, **kw).astype(float),
                                   rtol=tol, atol=tol)


@given(seed=st.integers(0, 2**32 - 1), topn=st.sampled_from([0, 1, 3, 30]),
       gain=st.sampled_from(["exp2", "linear"]), integer_labels=st.booleans())
def test_weights_match_their_definition_with_ties_and_nan_scores(seed: int, topn: int, gain: str,
                                                                 integer_labels: bool) -> None:
    # both sides of the counting-rank limit, scores tied on a coarse grid (stable order decides), with and
    # without NaN scores, which rank last
    rng = np.random.default_rng(seed)
    lengths = rng.choice(np.array([0, 1, 2, 17, lr._COUNT_MAX, lr._COUNT_MAX + 1, 300]), size=rng.integers(1, 6))
    n = int(lengths.sum())
    if rng.random() < 0.5:
        scores = rng.integers(-3, 4, n).astype(np.float64)
    else:  # distinct scores (the one-comparison count) or a few repeated ones (the count again with ties)
        scores = rng.standard_normal(n)
        if n and rng.random() < 0.5:
            scores[rng.integers(0, n, 3)] = scores[rng.integers(0, n)]
    if n and rng.random() < 0.3:  # infinite scores: the count pads sessions with -inf, which must never count
        scores[rng.integers(0, n, 3)] = rng.choice(np.array([np.inf, -np.inf]), 3)
    if rng.random() < 0.5:  # sessions without a NaN take the counting rank's loops without the NaN rules
        scores[rng.random(n) < 0.1] = np.nan
    # integer grades take the count per label for the ideal DCG, other labels a sort
    labels = rng.integers(0, 5, n).astype(np.float64) if integer_labels else rng.integers(0, 9, n) / 2.0
    got = lr.lambdarank_weights(scores, labels, lengths, topn=topn, gain=gain)
    want = lr._reference_weights(scores, labels, lengths, topn, gain)
    np.testing.assert_array_equal(got.gain, want.gain)
    np.testing.assert_array_equal(got.discount, want.discount)
    np.testing.assert_allclose(got.inv_ideal, want.inv_ideal, rtol=1e-15)


def test_float32_and_float16_scores_rank_as_their_float64_values() -> None:
    rng = np.random.default_rng(5)
    lengths = np.array([3, 40, lr._COUNT_MAX + 7, 1])
    labels = rng.integers(0, 5, lengths.sum()).astype(np.float64)
    for dtype in (np.float32, np.float16):
        scores = rng.standard_normal(lengths.sum()).astype(dtype)
        scores[::9] = scores[1]  # ties, broken by input order
        got = lr.lambdarank_weights(scores, labels, lengths, topn=0, gain="exp2")
        want = lr._reference_weights(scores.astype(np.float64), labels, lengths, 0, "exp2")
        np.testing.assert_array_equal(got.discount, want.discount)


def test_graded_labels_are_recognised_in_one_pass() -> None:
    assert lr._grade_levels(np.array([0.0, 3.0, 1.0])) == 4
    assert lr._grade_levels(np.array([], np.float64)) == 0
    for bad in ([0.0, 1.5], [-1.0, 2.0], [0.0, float(lr._MAX_LEVELS)], [0.0, np.nan]):
        assert lr._grade_levels(np.array(bad)) == 0


def test_ideal_dcg_beyond_the_table_of_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lr, "_IDEAL_TABLE", 12)  # 5 grades: the table holds ranks 0 and 1, later ones divide
    rng = np.random.default_rng(8)
    lengths = np.array([1, 7, 40, 200])
    labels = rng.integers(0, 5, lengths.sum()).astype(np.float64)
    labels[:5] = 4.0  # every grade present
    scores = rng.standard_normal(lengths.sum())
    for topn in (0, 3):
        got = lr.lambdarank_weights(scores, labels, lengths, topn=topn, gain="exp2")
        want = lr._reference_weights(scores, labels, lengths, topn, "exp2")
        np.testing.assert_array_equal(got.inv_ideal, want.inv_ideal)
        np.testing.assert_array_equal(got.discount, want.discount)


def test_ideal_dcg_by_label_counts_equals_the_sorted_one() -> None:
    rng = np.random.default_rng(2)
    lengths = np.array([5, 0, 70, 1, 200])
    labels = rng.integers(0, 31, lengths.sum()).astype(np.float64)
    scores = rng.standard_normal(lengths.sum())
    for gain in ("exp2", "linear"):
        assert lr._level_gains(labels, gain).size == 31
        by_count = lr.lambdarank_weights(scores, labels, lengths, topn=10, gain=gain)
        by_sort = lr.lambdarank_weights(scores, labels + 1e-9, lengths, topn=10, gain=gain)  # not integers
        assert lr._level_gains(labels + 1e-9, gain).size == 0
        np.testing.assert_allclose(by_count.inv_ideal, by_sort.inv_ideal, rtol=1e-8)
        np.testing.assert_array_equal(by_count.inv_ideal, lr._reference_weights(scores, labels, lengths, 10,
                                                                                gain).inv_ideal)


def test_empty_one_item_and_all_tied_sessions_give_zero() -> None:
    scores = np.array([1.0, 2.0, 0.5, -1.0])
    labels = np.array([3, 1, 1, 1])
    lengths = np.array([0, 1, 3])
    np.testing.assert_array_equal(lr.lambdarank_loss(scores, labels, lengths), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(lr.lambdarank_loss_gradient(scores, labels, np.ones(3), lengths), np.zeros(4))
    assert lr.lambdarank_loss(np.zeros(0), np.zeros(0), np.zeros(2, np.int64)).shape == (2,)
    # all labels 0: IDCG is 0 and nothing is learned
    assert lr.lambdarank_loss(np.array([1.0, 2.0]), np.array([0, 0]))[0] == 0.0


def test_huge_scores_stay_finite() -> None:
    scores = np.array([1e30, -1e30, 5.0, 1e300])
    labels = np.array([0, 2, 1, 3])
    loss = lr.lambdarank_loss(scores, labels)
    grad = lr.lambdarank_loss_gradient(scores, labels, np.ones(1))
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, lr.reference_forward(scores, labels, sigma=1.0, topn=0, gain="exp2"),
                               rtol=1e-12)


def test_with_unit_weights_it_would_be_pairwise_loss() -> None:
    # a check of the shared pair engine: weights of 1 reduce LambdaRank's sum to PairWiseLoss's
    from pairloss.ops.pair_loops import PairWeights, logistic_forward, plan_sessions

    rng = np.random.default_rng(3)
    lengths = np.array([5, 40, 3])
    scores, labels = rng.standard_normal(48), rng.integers(0, 3, 48).astype(float)
    # |G_i - G_j| = 1 needs distinct gains per pair; use indicator weights on a 2-level label instead
    labels = (labels > 0).astype(float)
    ones = PairWeights(labels, np.ones(48), np.ones(48))  # |G_i - G_j| = 1 on discordant pairs, |D_i - D_j| = 0
    plan = plan_sessions(scores, labels, lengths, np.dtype(np.float64), full_rows=False)
    sums, pairs = logistic_forward(plan, ones)
    np.testing.assert_array_equal(sums, np.zeros(3))  # equal discounts: zero weight
    plain, _ = logistic_forward(plan)
    np.testing.assert_allclose(plain / np.maximum(pairs, 1), pwl.forward_cpu(scores, labels, lengths), rtol=1e-13)


@pytest.mark.parametrize(("kwargs", "labels", "message"), [
    ({"gain": "cubic"}, [1, 0], "gain must be one of"),
    ({"topn": -1}, [1, 0], "topn must be >= 0"),
    ({"sigma": 0.0}, [1, 0], "sigma must be a positive"),
    ({"sigma": float("inf")}, [1, 0], "sigma must be a positive|must be finite"),
    ({}, [-1, 0], "labels must be non-negative"),
    ({}, [1024, 0], r"gain='exp2' needs labels <= 1023"),
])
def test_bad_arguments_raise(kwargs: dict, labels: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lr.lambdarank_loss(np.zeros(2), np.array(labels), **kwargs)


def test_linear_gain_accepts_large_labels() -> None:
    assert np.isfinite(lr.lambdarank_loss(np.array([0.0, 1.0]), np.array([5000, 0]), gain="linear")).all()
