"""Tests of the generated default data set (pairloss.ltr._toy_data)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from pairloss.ltr import make_toy_dataset
from pairloss.ltr.metrics import evaluate


def test_deterministic_and_seed_dependent() -> None:
    a = make_toy_dataset(seed=3)
    b = make_toy_dataset(seed=3)
    c = make_toy_dataset(seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.features, y.features)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.lengths, y.lengths)
    assert not np.array_equal(a[0].features[:10], c[0].features[:10])


def test_shape_labels_and_awkward_sessions() -> None:
    start = time.perf_counter()
    train, valid, test = make_toy_dataset(n_queries=400, docs_per_query=20, n_features=10)
    assert time.perf_counter() - start < 1.0
    assert train.n_sessions + valid.n_sessions + test.n_sessions == 400
    assert valid.n_sessions == test.n_sessions == 60
    assert {d.n_features for d in (train, valid, test)} == {10}
    qid_sets = [set(d.qids.tolist()) for d in (train, valid, test)]
    assert not (qid_sets[0] & qid_sets[1] or qid_sets[0] & qid_sets[2] or qid_sets[1] & qid_sets[2])
    labels = np.concatenate([d.labels for d in (train, valid, test)])
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}
    assert np.mean(labels == 0) > np.mean(labels == 4)  # skewed towards irrelevant, like LETOR
    assert (train.lengths == 1).sum() >= 3
    assert train.lengths.min() == 1 and train.lengths.max() > 20
    starts = train.session_offsets[:-1]
    tied = np.minimum.reduceat(train.labels, starts) == np.maximum.reduceat(train.labels, starts)
    assert (tied & (train.lengths > 1)).sum() >= 3


def test_a_linear_model_learns_it() -> None:
    train, _, test = make_toy_dataset()
    scores = LinearRegression().fit(train.features, train.labels).predict(test.features)
    learned = evaluate(scores, test.labels, test.lengths, ["ndcg@10"], exclude_all_equal=True)["ndcg@10"]
    noise = np.random.default_rng(0).normal(size=test.n_items)
    chance = evaluate(noise, test.labels, test.lengths, ["ndcg@10"], exclude_all_equal=True)["ndcg@10"]
    assert learned > 0.85 and chance < 0.6


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_queries": 2}, ValueError, "n_queries must be >= 3"),
        ({"n_features": 1}, ValueError, "n_features must be >= 2"),
        ({"docs_per_query": 2.5}, TypeError, "docs_per_query must be an int"),
        ({"valid_fraction": 0.6, "test_fraction": 0.5}, ValueError, "valid_fraction \\+ test_fraction"),
        ({"valid_fraction": 1.5}, ValueError, "valid_fraction must be in"),
        ({"noise": -1}, ValueError, "noise must be"),
        ({"n_queries": 3, "valid_fraction": 0.5, "test_fraction": 0.4}, ValueError, "too small"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make_toy_dataset(**kwargs)
