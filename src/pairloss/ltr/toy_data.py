"""Deterministic synthetic learning-to-rank data, the default data set of the LTR toolkit.

Labels are graded 0..4 from a hidden utility that is mostly linear in the features (so a linear
scorer can learn it within seconds) plus a small interaction term and noise (so it cannot be
learned perfectly). The generator deliberately includes the awkward cases real data has: sessions
of a single item, sessions whose labels are all tied, and variable session sizes.
"""

from __future__ import annotations

import numpy as np

from .data import RankingDataset

__all__ = ["make_toy_dataset"]

# Cumulative label proportions: most items irrelevant, few perfect, as in LETOR collections.
_GRADE_QUANTILES = (0.45, 0.72, 0.88, 0.96)


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def _check_fraction(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float; got {type(value).__name__} {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value}")
    return float(value)


def make_toy_dataset(
    n_queries: int = 300,
    docs_per_query: int = 20,
    n_features: int = 16,
    *,
    seed: int = 0,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    noise: float = 0.5,
) -> tuple[RankingDataset, RankingDataset, RankingDataset]:
    """Generates ``(train, valid, test)`` ranking data, identical for identical arguments.

    Args:
        n_queries: Total number of sessions over the three splits (at least 3).
        docs_per_query: Mean session size; sizes vary uniformly in about ``[0.5, 1.5]`` times
            this. About 5% of sessions have a single item and another 5% have all labels tied.
        n_features: Number of features (at least 2); about a third of them carry no signal.
        seed: Random seed.
        valid_fraction: Fraction of sessions in the validation split.
        test_fraction: Fraction of sessions in the test split.
        noise: Standard deviation of the label noise relative to the signal (0 = deterministic).

    Returns:
        ``(train, valid, test)`` with disjoint qids; each split keeps ascending qid order. The
        validation and test splits get at least one session each.

    Example:
        >>> train, valid, test = make_toy_dataset(n_queries=30, docs_per_query=5)
        >>> train.n_sessions + valid.n_sessions + test.n_sessions
        30
    """
    n_queries = _check_int("n_queries", n_queries, 3)
    docs_per_query = _check_int("docs_per_query", docs_per_query, 1)
    n_features = _check_int("n_features", n_features, 2)
    valid_fraction = _check_fraction("valid_fraction", valid_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"valid_fraction + test_fraction must be < 1; got {valid_fraction} + {test_fraction}")
    if not isinstance(noise, int | float) or isinstance(noise, bool) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0; got {noise!r}")

    rng = np.random.default_rng(seed)
    low, high = max(1, docs_per_query // 2), max(1, docs_per_query + docs_per_query // 2)
    sizes = rng.integers(low, high + 1, size=n_queries)
    kind = rng.random(n_queries)
    single = kind < 0.05
    tied = (kind >= 0.05) & (kind < 0.10)
    sizes[single] = 1
    n_items = int(sizes.sum())
    session = np.repeat(np.arange(n_queries), sizes)

    # A per-query offset shared by its items makes raw feature values drift between queries, which
    # is why within-session comparison (and feature standardisation) matters.
    query_shift = rng.normal(0.0, 0.7, size=(n_queries, n_features))
    features = rng.normal(size=(n_items, n_features)) + query_shift[session]
    weights = rng.normal(size=n_features)
    weights[rng.permutation(n_features)[: n_features // 3]] = 0.0
    signal = features @ weights / np.sqrt(max(1, np.count_nonzero(weights)))
    utility = signal + 0.3 * np.tanh(features[:, 0] * features[:, 1]) + noise * rng.normal(size=n_items)
    thresholds = np.quantile(utility, _GRADE_QUANTILES)
    labels = np.digitize(utility, thresholds).astype(np.float32)
    tied_items = tied[session]
    labels[tied_items] = rng.integers(0, 5, size=n_queries)[session][tied_items]

    dataset = RankingDataset(features.astype(np.float32), labels, session.astype(np.int64), sizes.astype(np.int64))
    n_valid = max(1, round(valid_fraction * n_queries))
    n_test = max(1, round(test_fraction * n_queries))
    if n_valid + n_test >= n_queries:
        raise ValueError(
            f"n_queries={n_queries} is too small to leave training sessions after taking "
            f"{n_valid} validation and {n_test} test sessions"
        )
    perm = rng.permutation(n_queries)
    test_idx = np.sort(perm[:n_test])
    valid_idx = np.sort(perm[n_test : n_test + n_valid])
    train_idx = np.sort(perm[n_test + n_valid :])
    return dataset.subset(train_idx), dataset.subset(valid_idx), dataset.subset(test_idx)
