"""Tests of pairloss.ltr.metrics: hand-computed cases, a slow reference, and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from pairloss.ltr import metrics as M
from pairloss.ltr.metrics import (
    evaluate,
    mean_average_precision,
    mrr,
    ndcg_at,
    pairwise_accuracy,
    parse_metric,
)

LOG2_3 = math.log2(3)

# ------------------------------------------------------------------------------------------------
# Obviously-correct reference: one session at a time, sorted() with an explicit key.


def ref_ranked(scores: list[float], labels: list[float], ties: str) -> list[float]:
    keys = {
        "pessimistic": lambda i: (-scores[i], labels[i], i),
        "optimistic": lambda i: (-scores[i], -labels[i], i),
        "stable": lambda i: (-scores[i], i),
    }
    return [labels[i] for i in sorted(range(len(scores)), key=keys[ties])]


def ref_dcg(ranked: list[float], k: int | None, gain: str) -> float:
    g = (lambda v: 2.0**v - 1.0) if gain == "exp2" else (lambda v: v)
    return sum(g(v) / math.log2(r + 2) for r, v in enumerate(ranked[: k if k is not None else len(ranked)]))


def ref_session(kind: str, scores, labels, *, k=None, gain="exp2", ties="pessimistic", thr=1.0) -> float | None:
    """Metric of one session; None means 'no relevant item' (the no_relevant rule applies)."""
    ranked = ref_ranked(scores, labels, ties)
    kk = len(ranked) if k is None else k
    if kind == "ndcg":
        idcg = ref_dcg(sorted(labels, reverse=True), k, gain)
        return None if idcg == 0 else ref_dcg(ranked, k, gain) / idcg
    if kind == "map":
        n_rel = sum(v >= thr for v in labels)
        if n_rel == 0:
            return None
        hits, total = 0, 0.0
        for r, v in enumerate(ranked[:kk]):
            if v >= thr:
                hits += 1
                total += hits / (r + 1)
        return total / (n_rel if k is None else min(n_rel, k))
    if kind == "mrr":
        for r, v in enumerate(ranked):
            if v >= thr:
                return 1.0 / (r + 1) if r < kk else 0.0
        return None
    raise AssertionError(kind)


def ref_metric(kind, scores, labels, lengths, *, no_relevant="skip", exclude_all_equal=False, **kw):
    per, start = [], 0
    for n in lengths:
        s, y = list(scores[start : start + n]), list(labels[start : start + n])
        start += n
        value = ref_session(kind, s, y, **kw)
        if value is None:
            value = {"skip": math.nan, "zero": 0.0, "one": 1.0}[no_relevant]
        if exclude_all_equal and len(set(y)) <= 1:
            value = math.nan
        per.append(value)
    kept = [v for v in per if not math.isnan(v)]
    return per, (sum(kept) / len(kept) if kept else math.nan)


def ref_pairwise(scores, labels, lengths, ties="pessimistic"):
    per, start, tot_c, tot_d = [], 0, 0, 0
    for n in lengths:
        ranked = ref_ranked(list(scores[start : start + n]), list(labels[start : start + n]), ties)
        start += n
        c = sum(ranked[a] > ranked[b] for a in range(n) for b in range(a + 1, n))
        d = sum(ranked[a] != ranked[b] for a in range(n) for b in range(a + 1, n))
        per.append(c / d if d else math.nan)
        tot_c += c
        tot_d += d
    return per, tot_c, tot_d


# ------------------------------------------------------------------------------------------------
# Hand-computed values


def test_ndcg_hand_computed() -> None:
    scores, labels = [0.1, 0.9, 0.5], [0, 1, 2]
    # Ranked labels: 1, 2, 0.
    dcg_lin = 1 + 2 / LOG2_3
    idcg_lin = 2 + 1 / LOG2_3
    assert ndcg_at(scores, labels, None, None, gain="linear") == pytest.approx(dcg_lin / idcg_lin)
    dcg_exp = 1 + 3 / LOG2_3
    idcg_exp = 3 + 1 / LOG2_3
    assert ndcg_at(scores, labels, None, None) == pytest.approx(dcg_exp / idcg_exp)
    assert ndcg_at(scores, labels, None, 1) == pytest.approx(1 / 3)
    assert ndcg_at(scores, labels, None, 10) == pytest.approx(dcg_exp / idcg_exp)  # k > n: full list
    assert ndcg_at([3, 2, 1], [2, 1, 0], None, 2) == 1.0


def test_ties_rules_on_a_constant_scorer() -> None:
    labels = [2, 0, 1]  # stable order is neither best nor worst
    flat = [0.5, 0.5, 0.5]
    worst = (0 + 1 / LOG2_3 + 3 / 2) / (3 + 1 / LOG2_3)
    best = 1.0
    stable = (3 + 0 + 1 / 2) / (3 + 1 / LOG2_3)
    assert ndcg_at(flat, labels, None, None) == pytest.approx(worst)
    assert ndcg_at(flat, labels, None, None, ties="optimistic") == pytest.approx(best)
    assert ndcg_at(flat, labels, None, None, ties="stable") == pytest.approx(stable)
    # Ties only matter inside a group of equal scores.
    assert ndcg_at([9.0, 0.5, 0.5], [0, 2, 1], None, None) == pytest.approx((0 + 1 / LOG2_3 + 3 / 2) / (3 + 1 / LOG2_3))
    assert pairwise_accuracy(flat, labels, None) == 0.0
    assert pairwise_accuracy(flat, labels, None, ties="optimistic") == 1.0
    assert pairwise_accuracy(flat, labels, None, ties="stable") == pytest.approx(2 / 3)


def test_no_relevant_and_all_equal_rules() -> None:
    scores = [1.0, 2.0, 1.0, 2.0, 3.0, 1.0, 2.0, 5.0]
    labels = [0, 0, 1, 1, 0, 1, 2, 3]
    lengths = [2, 2, 1, 3]  # all-zero, all-equal (1s), single item (0), normal
    normal = ndcg_at([1.0, 2.0, 5.0], [1, 2, 3], None, None)
    per = ndcg_at(scores, labels, lengths, None, per_query=True)
    np.testing.assert_allclose(per, [np.nan, 1.0, np.nan, normal])
    assert ndcg_at(scores, labels, lengths, None) == pytest.approx((1 + normal) / 2)
    assert ndcg_at(scores, labels, lengths, None, no_relevant="zero") == pytest.approx((1 + normal) / 4)
    assert ndcg_at(scores, labels, lengths, None, no_relevant="one") == pytest.approx((3 + normal) / 4)
    per_ex = ndcg_at(scores, labels, lengths, None, no_relevant="one", exclude_all_equal=True, per_query=True)
    np.testing.assert_allclose(per_ex, [np.nan, np.nan, np.nan, normal])
    # Nothing left: NaN, not an exception.
    assert math.isnan(ndcg_at([1.0, 2.0], [0, 0], None, 5))


def test_map_mrr_hand_computed() -> None:
    scores, labels = [5, 4, 3, 2, 1], [0, 2, 0, 1, 1]
    # Relevant (>= 1) at ranks 2, 4, 5: precisions 1/2, 2/4, 3/5.
    assert mean_average_precision(scores, labels, None) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert mean_average_precision(scores, labels, None, k=2) == pytest.approx((1 / 2) / 2)
    assert mean_average_precision(scores, labels, None, relevance_threshold=2) == pytest.approx(1 / 2)
    assert mrr(scores, labels, None) == pytest.approx(1 / 2)
    assert mrr(scores, labels, None, k=1) == 0.0
    assert mrr(scores, labels, None, relevance_threshold=3) != mrr(scores, labels, None)
    assert math.isnan(mrr(scores, labels, None, relevance_threshold=3))
    assert mrr(scores, labels, None, relevance_threshold=3, no_relevant="zero") == 0.0
    two = mrr([1, 2, 3, 3, 2, 1], [1, 0, 0, 0, 0, 1], [3, 3], per_query=True)
    np.testing.assert_allclose(two, [1 / 3, 1 / 3])


def test_pairwise_accuracy_hand_computed() -> None:
    # Session 1 ranked labels [2, 0, 1]: pairs (2,0) ok, (2,1) ok, (0,1) wrong -> 2/3.
    # Session 2 ranked labels [1, 1, 0]: pairs (1,0) ok twice, tie pair ignored -> 2/2.
    scores = [0.3, 0.2, 0.1, 3.0, 2.0, 1.0, 7.0]
    labels = [2, 0, 1, 1, 1, 0, 4]
    lengths = [3, 3, 1]
    np.testing.assert_allclose(pairwise_accuracy(scores, labels, lengths, per_query=True), [2 / 3, 1.0, np.nan])
    assert pairwise_accuracy(scores, labels, lengths) == pytest.approx((2 / 3 + 1) / 2)
    assert pairwise_accuracy(scores, labels, lengths, average="pair") == pytest.approx(4 / 5)


# ------------------------------------------------------------------------------------------------
# Against the slow reference (property-based)


@st.composite
def sessions(draw):
    lengths = draw(st.lists(st.integers(0, 7), min_size=1, max_size=6))
    n = sum(lengths)
    # Few distinct score values so ties are common; labels graded 0..3.
    scores = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.5]), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 3).map(float), min_size=n, max_size=n))
    return scores, labels, lengths


OPTIONS = st.fixed_dictionaries(
    {
        "ties": st.sampled_from(["pessimistic", "optimistic", "stable"]),
        "no_relevant": st.sampled_from(["skip", "zero", "one"]),
        "exclude_all_equal": st.booleans(),
        "k": st.sampled_from([None, 1, 2, 5]),
    }
)


@settings(max_examples=150, deadline=None)
@given(sessions(), OPTIONS, st.sampled_from(["exp2", "linear"]), st.sampled_from([1.0, 2.0]))
def test_matches_reference(data, opts, gain, thr) -> None:
    scores, labels, lengths = data
    common = {"ties": opts["ties"], "no_relevant": opts["no_relevant"], "exclude_all_equal": opts["exclude_all_equal"]}
    exp_per, exp_mean = ref_metric("ndcg", scores, labels, lengths, k=opts["k"], gain=gain, **common)
    got_per = ndcg_at(scores, labels, lengths, opts["k"], gain=gain, per_query=True, **common)
    np.testing.assert_allclose(got_per, exp_per, rtol=1e-12, atol=1e-12)
    got_mean = ndcg_at(scores, labels, lengths, opts["k"], gain=gain, **common)
    np.testing.assert_allclose(got_mean, exp_mean, rtol=1e-12)

    for kind, fn in (("map", mean_average_precision), ("mrr", mrr)):
        exp_per, exp_mean = ref_metric(kind, scores, labels, lengths, k=opts["k"], thr=thr, **common)
        got_per = fn(scores, labels, lengths, k=opts["k"], relevance_threshold=thr, per_query=True, **common)
        np.testing.assert_allclose(got_per, exp_per, rtol=1e-12, atol=1e-12, err_msg=kind)
        got_mean = fn(scores, labels, lengths, k=opts["k"], relevance_threshold=thr, **common)
        np.testing.assert_allclose(got_mean, exp_mean, rtol=1e-12, err_msg=kind)

    exp_pair, c, d = ref_pairwise(scores, labels, lengths, opts["ties"])
    got_pair = pairwise_accuracy(scores, labels, lengths, ties=opts["ties"], per_query=True)
    np.testing.assert_allclose(got_pair, exp_pair, rtol=1e-12)
    pooled = pairwise_accuracy(scores, labels, lengths, ties=opts["ties"], average="pair")
    np.testing.assert_allclose(pooled, c / d if d else math.nan)


@settings(max_examples=60, deadline=None)
@given(sessions(), st.sampled_from(["pessimistic", "optimistic", "stable"]))
def test_metric_bounds_and_ideal_ranking(data, ties) -> None:
    _, labels, lengths = data
    per = ndcg_at(labels, labels, lengths, 3, ties=ties, per_query=True)  # scoring by the label is ideal
    assert np.all(np.isnan(per) | np.isclose(per, 1.0))
    random = np.random.default_rng(0).normal(size=len(labels))
    values = ndcg_at(random, labels, lengths, None, per_query=True)
    kept = values[~np.isnan(values)]
    assert np.all((kept >= 0) & (kept <= 1 + 1e-12))


def test_pair_counts_blocking_paths_agree() -> None:
    rng = np.random.default_rng(3)
    lengths = np.array([0, 1, 2, 5, 40, 7, 300, 3, 3, 3])
    n = int(lengths.sum())
    ranked = M._rank(rng.normal(size=n), rng.integers(0, 4, size=n), lengths, "pessimistic")
    default = M._pair_counts(ranked)
    tiny = M._pair_counts(ranked, block=64)  # forces the row-band path for the long sessions
    medium = M._pair_counts(ranked, block=2000)
    for got in (tiny, medium):
        np.testing.assert_array_equal(got[0], default[0])
        np.testing.assert_array_equal(got[1], default[1])
    labels = ranked.labels[ranked.offsets[6] : ranked.offsets[7]]
    expected = sum(labels[a] > labels[b] for a in range(300) for b in range(a + 1, 300))
    assert default[0][6] == expected


# ------------------------------------------------------------------------------------------------
# Against scikit-learn's ndcg_score (linear gain, no ties, IDCG-0 sessions scored 0)


@pytest.mark.parametrize("k", [None, 1, 3, 5])
def test_matches_sklearn_ndcg_score(k: int | None) -> None:
    rng = np.random.default_rng(11)
    n_sessions, width = 40, 8
    y = rng.integers(0, 4, size=(n_sessions, width)).astype(float)
    y[0] = 0  # an all-irrelevant session
    s = rng.normal(size=(n_sessions, width))
    expected = ndcg_score(y, s, k=k)
    got = ndcg_at(s.ravel(), y.ravel(), [width] * n_sessions, k, gain="linear", no_relevant="zero")
    assert got == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# evaluate() and name parsing


def test_evaluate_matches_individual_metrics() -> None:
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 12, size=30)
    n = int(lengths.sum())
    scores, labels = rng.normal(size=n), rng.integers(0, 5, size=n)
    names = ["ndcg@10", "NDCG@5", "ndcg", "map", "map@3", "mrr", "mrr@2", "pairwise_accuracy"]
    out = evaluate(scores, labels, lengths, names, exclude_all_equal=True)
    assert list(out) == names
    assert out["ndcg@10"] == ndcg_at(scores, labels, lengths, 10, exclude_all_equal=True)
    assert out["NDCG@5"] == ndcg_at(scores, labels, lengths, 5, exclude_all_equal=True)
    assert out["ndcg"] == ndcg_at(scores, labels, lengths, None, exclude_all_equal=True)
    assert out["map@3"] == mean_average_precision(scores, labels, lengths, k=3, exclude_all_equal=True)
    assert out["mrr@2"] == mrr(scores, labels, lengths, k=2, exclude_all_equal=True)
    assert out["pairwise_accuracy"] == pairwise_accuracy(scores, labels, lengths)
    per = evaluate(scores, labels, lengths, "map", per_query=True)
    assert list(per) == ["map"] and per["map"].shape == (30,)
    assert list(evaluate(scores, labels, lengths)) == ["ndcg@10", "map", "mrr"]


def test_parse_metric() -> None:
    assert parse_metric(" nDCG@3 ") == ("ndcg", 3)
    assert parse_metric("map") == ("map", None)
    assert parse_metric("pairwise_accuracy") == ("pairwise_accuracy", None)
    for bad in ["ndcg@0", "ndcg@", "ndcg@x", "precision@5", "ndcg10"]:
        with pytest.raises(ValueError, match=r"ndcg@k.*pairwise_accuracy|cutoff k must be >= 1"):
            parse_metric(bad)
    with pytest.raises(TypeError, match="metric name must be a str"):
        parse_metric(10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown metric 'recall'; valid metrics: ndcg, ndcg@k, map"):
        evaluate([1.0], [1.0], None, ["ndcg@10", "recall"])


def test_accepts_torch_tensors_and_zero_length_sessions() -> None:
    scores = torch.tensor([0.2, 0.1, 0.3], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 2.0])
    lengths = torch.tensor([0, 2, 0, 1])
    per = ndcg_at(scores, labels, lengths, None, per_query=True)
    np.testing.assert_allclose(per, [np.nan, 1.0, np.nan, 1.0])


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: ndcg_at([1, 2], [1], None, 3), ValueError, "labels must have the same shape"),
        (lambda: ndcg_at([[1, 2]], [[1, 2]], None, 3), ValueError, "scores must be a 1-D"),
        (lambda: ndcg_at([1, np.nan], [1, 0], None, 3), ValueError, "scores must not contain NaN"),
        (lambda: ndcg_at([1, 2], [1, np.inf], None, 3), ValueError, "labels must be finite"),
        (lambda: ndcg_at([1, 2], [1, 0], [3], 3), ValueError, "lengths must sum to the number of items 2"),
        (lambda: ndcg_at([1, 2], [1, 0], [1.0, 1.0], 3), TypeError, "lengths must hold integers"),
        (lambda: ndcg_at([1, 2], [1, 0], [3, -1], 3), ValueError, "lengths must be >= 0"),
        (lambda: ndcg_at([1, 2], [1, -1], None, 3), ValueError, "labels >= 0"),
        (lambda: ndcg_at([1, 2], [1, 0], None, 0), ValueError, "k must be >= 1"),
        (lambda: ndcg_at([1, 2], [1, 0], None, True), TypeError, "k must be a positive int"),
        (lambda: ndcg_at([1, 2], [1, 0], None, 3, gain="log"), ValueError, "gain must be one of"),
        (lambda: ndcg_at([1, 2], [1, 0], None, 3, ties="random"), ValueError, "ties must be one of"),
        (lambda: mrr([1, 2], [1, 0], None, no_relevant="nan"), ValueError, "no_relevant must be one of"),
        (lambda: mrr([1, 2], [1, 0], None, relevance_threshold="1"), TypeError, "relevance_threshold"),
        (lambda: pairwise_accuracy([1, 2], [1, 0], None, average="micro"), ValueError, "average must be"),
        (lambda: ndcg_at(["a"], [1], None, 3), TypeError, "scores must be numeric"),
        (lambda: evaluate([1.0], [1.0], None, []), ValueError, "at least one metric"),
    ],
)
def test_bad_input_is_rejected(call, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()
