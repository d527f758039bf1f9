"""Tests of pairloss.ltr.data: RankingDataset and the SVMlight / LightGBM / LETOR loaders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pairloss.ltr.data import RankingDataset, load, load_fold, load_lightgbm, load_svmlight


def make_ds(lengths: list[int], n_features: int = 3, seed: int = 0) -> RankingDataset:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    qids = np.repeat(np.arange(100, 100 + len(lengths)), lengths)
    return RankingDataset(rng.normal(size=(n, n_features)), rng.integers(0, 5, size=n), qids, np.array(lengths))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------
# RankingDataset


def test_dataset_coerces_dtypes_and_derives_offsets() -> None:
    ds = make_ds([2, 1, 3])
    assert ds.features.dtype == np.float32 and ds.features.shape == (6, 3)
    assert ds.labels.dtype == np.float32
    assert ds.lengths.dtype == np.int64
    assert (ds.n_items, ds.n_sessions, ds.n_features) == (6, 3, 3)
    np.testing.assert_array_equal(ds.session_offsets, [0, 2, 3, 6])
    np.testing.assert_array_equal(ds.session_ids, [0, 0, 1, 2, 2, 2])
    assert "n_sessions=3" in repr(ds)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"labels": np.zeros(5)}, ValueError, "labels"),
        ({"features": np.zeros(6)}, ValueError, "features must be a 2-D"),
        ({"features": np.array([["a"] * 3] * 6)}, TypeError, "features must be a numeric"),
        ({"lengths": np.array([2, 4, 1])}, ValueError, "sum to"),
        ({"lengths": np.array([2, 0, 4])}, ValueError, "lengths must be >= 1"),
        ({"lengths": np.array([2.0, 1.0, 3.0])}, TypeError, "lengths must hold integers"),
        ({"qids": np.array([1, 1, 2, 3, 3, 4])}, ValueError, "qids must be constant inside a session"),
        ({"qids": np.zeros(5)}, ValueError, "qids must be a 1-D array of length 6"),
        ({"features": np.full((6, 3), np.inf)}, ValueError, r"features must be finite or NaN \(missing\); row 0"),
        ({"labels": np.array([0, 1, np.inf, 0, 0, 0])}, ValueError, "labels must be finite"),
    ],
)
def test_dataset_rejects_bad_input(kwargs: dict, exc: type[Exception], match: str) -> None:
    args = {
        "features": np.zeros((6, 3)),
        "labels": np.zeros(6),
        "qids": np.array([1, 1, 2, 3, 3, 3]),
        "lengths": np.array([2, 1, 3]),
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        RankingDataset(**args)


def test_from_qids_builds_runs_and_rejects_split_sessions() -> None:
    ds = RankingDataset.from_qids(np.zeros((5, 2)), np.zeros(5), [7, 7, 3, 9, 9])
    np.testing.assert_array_equal(ds.lengths, [2, 1, 2])
    with pytest.raises(ValueError, match="qid 7 appears in two separate blocks"):
        RankingDataset.from_qids(np.zeros((4, 2)), np.zeros(4), [7, 3, 7, 7])


def test_subset_selects_whole_sessions_in_given_order() -> None:
    ds = make_ds([2, 1, 3])
    sub = ds.subset([2, 0, 2])
    np.testing.assert_array_equal(sub.lengths, [3, 2, 3])
    np.testing.assert_array_equal(sub.features[:3], ds.features[3:6])
    np.testing.assert_array_equal(sub.features[3:5], ds.features[0:2])
    np.testing.assert_array_equal(sub.qids, [102] * 3 + [100] * 2 + [102] * 3)
    mask = ds.subset(np.array([True, False, True]))
    np.testing.assert_array_equal(mask.lengths, [2, 3])
    empty = ds.subset([])
    assert empty.n_items == 0 and empty.n_sessions == 0 and empty.n_features == 3


@pytest.mark.parametrize(
    ("indices", "exc", "match"),
    [
        ([3], ValueError, r"\[0, 3\)"),
        ([-1], ValueError, r"\[0, 3\)"),
        ([0.5], TypeError, "integers"),
        (np.array([True, False]), ValueError, "boolean mask"),
    ],
)
def test_subset_rejects_bad_indices(indices: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make_ds([2, 1, 3]).subset(indices)


def test_split_is_by_whole_sessions_and_deterministic() -> None:
    ds = make_ds([3, 1, 4, 2, 5, 2, 2, 1, 3, 2])
    train, valid = ds.split(0.3, seed=1)
    assert valid.n_sessions == 3 and train.n_sessions == 7
    assert set(train.qids.tolist()).isdisjoint(valid.qids.tolist())
    assert sorted(set(train.qids.tolist()) | set(valid.qids.tolist())) == sorted(set(ds.qids.tolist()))
    assert train.n_items + valid.n_items == ds.n_items
    # Sessions stay intact: each part's session sizes match the original sizes of its qids.
    size_of = dict(zip(ds.qids[ds.session_offsets[:-1]].tolist(), ds.lengths.tolist(), strict=True))
    for part in (train, valid):
        for q, n in zip(part.qids[part.session_offsets[:-1]].tolist(), part.lengths.tolist(), strict=True):
            assert size_of[q] == n
    again, _ = ds.split(0.3, seed=1)
    np.testing.assert_array_equal(again.qids, train.qids)
    other, _ = ds.split(0.3, seed=2)
    assert not np.array_equal(other.qids, train.qids)
    # Rounding never empties a side.
    tiny_train, tiny_valid = make_ds([1, 1]).split(0.01)
    assert tiny_train.n_sessions == 1 and tiny_valid.n_sessions == 1


@pytest.mark.parametrize(("fraction", "exc"), [(0.0, ValueError), (1.0, ValueError), ("0.2", TypeError)])
def test_split_rejects_bad_fraction(fraction: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="valid_fraction"):
        make_ds([2, 2]).split(fraction)  # type: ignore[arg-type]


def test_split_needs_two_sessions() -> None:
    with pytest.raises(ValueError, match="at least 2 sessions"):
        make_ds([4]).split(0.5)


def _assert_whole_sessions(ds: RankingDataset, batches: list[RankingDataset]) -> list[int]:
    """Checks every batch holds whole sessions of ds; returns the qids in visiting order."""
    size_of = dict(zip(ds.qids[ds.session_offsets[:-1]].tolist(), ds.lengths.tolist(), strict=True))
    visited = []
    for batch in batches:
        for q, n in zip(batch.qids[batch.session_offsets[:-1]].tolist(), batch.lengths.tolist(), strict=True):
            assert size_of[q] == n
            visited.append(q)
    return visited


def test_iter_batches_by_item_budget_never_splits_sessions() -> None:
    ds = make_ds([3, 1, 4, 2, 9, 2, 2, 1, 3, 2])
    batches = list(ds.iter_batches(max_items=5))
    visited = _assert_whole_sessions(ds, batches)
    assert visited == ds.qids[ds.session_offsets[:-1]].tolist()
    for batch in batches:
        # A session larger than the budget (9 items) is kept whole in a batch of its own.
        assert batch.n_items <= 5 or batch.n_sessions == 1
    np.testing.assert_array_equal(np.concatenate([b.features for b in batches]), ds.features)
    assert [b.n_items for b in batches] == [4, 4, 2, 9, 5, 5]


def test_iter_batches_by_session_count_and_shuffle() -> None:
    ds = make_ds([3, 1, 4, 2, 5, 2, 2, 1, 3, 2])
    batches = list(ds.iter_batches(sessions_per_batch=4))
    assert [b.n_sessions for b in batches] == [4, 4, 2]
    shuffled = list(ds.iter_batches(sessions_per_batch=3, shuffle=True, seed=5))
    visited = _assert_whole_sessions(ds, shuffled)
    assert sorted(visited) == sorted(ds.qids[ds.session_offsets[:-1]].tolist())
    assert visited != sorted(visited)
    again = _assert_whole_sessions(ds, list(ds.iter_batches(sessions_per_batch=3, shuffle=True, seed=5)))
    assert again == visited


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({}, ValueError),
        ({"max_items": 4, "sessions_per_batch": 2}, ValueError),
        ({"max_items": 0}, ValueError),
        ({"sessions_per_batch": 2.5}, TypeError),
    ],
)
def test_iter_batches_rejects_bad_sizes(kwargs: dict, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"max_items|sessions_per_batch"):
        list(make_ds([2, 2]).iter_batches(**kwargs))


def test_shard_partitions_sessions() -> None:
    ds = make_ds([3, 1, 4, 2, 5, 2, 2, 1, 3, 2])
    shards = [ds.shard(r, 3) for r in range(3)]
    qid_sets = [set(s.qids.tolist()) for s in shards]
    assert set().union(*qid_sets) == set(ds.qids.tolist())
    assert sum(len(q) for q in qid_sets) == ds.n_sessions
    assert [s.n_sessions for s in shards] == [4, 3, 3]
    even = [ds.shard(r, 3, drop_remainder=True).n_sessions for r in range(3)]
    assert even == [3, 3, 3]
    assert ds.shard(0, 1).n_items == ds.n_items
    with pytest.raises(ValueError, match="rank must be in"):
        ds.shard(3, 3)
    with pytest.raises(ValueError, match="world_size"):
        ds.shard(0, 0)


# ------------------------------------------------------------------------------------------------
# SVMlight / LETOR


SVM_TEXT = """# header comment
2 qid:10 1:0.5 3:1.5 # trailing comment
0 qid:10 2:-1

1 qid:4 1:2
"""


def test_load_svmlight_parses_sessions_and_features(tmp_path: Path) -> None:
    ds = load_svmlight(write(tmp_path, "a.txt", SVM_TEXT))
    assert ds.features.shape == (3, 4)  # zero-based: indices 1..3 -> columns 1..3, column 0 unused
    assert np.isnan(ds.features[:, 0]).all()  # absent: missing
    np.testing.assert_allclose(ds.features[0], [np.nan, 0.5, np.nan, 1.5])
    zeros = load_svmlight(tmp_path / "a.txt", absent="zero")
    np.testing.assert_array_equal(zeros.features[:, 0], 0)
    np.testing.assert_allclose(zeros.features[0], [0, 0.5, 0, 1.5])
    np.testing.assert_array_equal(ds.labels, [2, 0, 1])
    np.testing.assert_array_equal(ds.qids, [10, 10, 4])
    np.testing.assert_array_equal(ds.lengths, [2, 1])
    one_based = load_svmlight(tmp_path / "a.txt", zero_based=False)
    np.testing.assert_allclose(one_based.features[0], [0.5, np.nan, 1.5])


def test_load_svmlight_rejects_other_feature_counts_without_padding(tmp_path: Path) -> None:
    # A narrower file is not zero-padded: a 3-feature file scored by a 301-feature model gave a
    # plausible NDCG of 0.93 before (issue 9); both widths are named.
    path = write(tmp_path, "a.txt", SVM_TEXT)
    assert load_svmlight(path, n_features=4).n_features == 4
    with pytest.raises(ValueError, match=r"a\.txt has 4 feature columns \(feature indices 0\.\.3\) but 7 were"):
        load_svmlight(path, n_features=7)
    with pytest.raises(ValueError, match=r"a\.txt has 4 feature columns .* but 3 were expected"):
        load_svmlight(path, n_features=3)


def test_load_svmlight_reads_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write(SVM_TEXT)
    np.testing.assert_array_equal(load_svmlight(path).lengths, [2, 1])


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("x qid:1 1:1", "label 'x' is not a number"),
        ("1 qid:1 1:1 3", "malformed feature '3'"),
        ("1 qid:1 1:abc", "feature value in '1:abc' is not a number"),
        ("1 qid:1 a:1", "feature index in 'a:1' is not an integer"),
        ("1 qid:1 3:1 2:1", "strictly increasing; 2 follows 3"),
        ("1 qid:1 2:1 2:1", "strictly increasing"),
        ("1 qid:1 -1:1", "out of range"),
        ("1 qid:x 1:1", "malformed query id 'qid:x'"),
        ("1 qid:1 99999999999:1", "too large"),
    ],
)
def test_load_svmlight_reports_file_and_line_of_malformed_input(tmp_path: Path, bad_line: str, match: str) -> None:
    path = write(tmp_path, "bad.txt", f"# comment\n1 qid:1 1:1\n\n{bad_line}\n0 qid:2 1:1\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 4: .*" + match):
        load_svmlight(path)


def test_load_svmlight_index_zero_with_one_based(tmp_path: Path) -> None:
    path = write(tmp_path, "z.txt", "1 qid:1 1:1\n0 qid:1 0:1\n")
    with pytest.raises(ValueError, match=r"z\.txt, line 2: feature index 0 .*start at 1"):
        load_svmlight(path, zero_based=False)


def test_load_svmlight_missing_qid(tmp_path: Path) -> None:
    path = write(tmp_path, "m.txt", "1 qid:1 1:1\n# c\n0 1:1\n")
    with pytest.raises(ValueError, match=r"m\.txt, line 3: missing 'qid:<integer>'"):
        load_svmlight(path)
    none = write(tmp_path, "n.txt", "1 1:1\n0 1:1\n")
    with pytest.raises(ValueError, match=r"n\.txt, line 1: missing 'qid.*n\.txt\.query' beside it"):
        load_svmlight(none)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   \n"])
def test_load_svmlight_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty.txt", text)
    with pytest.raises(ValueError, match=r"empty\.txt: file has no data rows"):
        load_svmlight(path)


def test_load_svmlight_infinite_feature_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inf.txt", "1 qid:1 1:1\n0 qid:1 1:nan\n0 qid:1 1:-inf\n")
    with pytest.raises(ValueError, match=r"inf\.txt, line 3: a feature value is infinite"):
        load_svmlight(path)


def test_load_svmlight_noncontiguous_qids(tmp_path: Path) -> None:
    path = write(tmp_path, "nc.txt", "# x\n1 qid:1 1:1\n0 qid:2 1:2\n2 qid:1 1:3\n0 qid:3 1:4\n")
    with pytest.raises(ValueError, match=r"nc\.txt: qid 1 appears in two separate blocks \(lines 2 and 4\)"):
        load_svmlight(path)
    grouped = load_svmlight(path, noncontiguous_qids="group")
    np.testing.assert_array_equal(grouped.qids, [1, 1, 2, 3])
    np.testing.assert_array_equal(grouped.features[:, 1], [1, 3, 2, 4])
    np.testing.assert_array_equal(grouped.lengths, [2, 1, 1])


def test_load_svmlight_argument_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", SVM_TEXT)
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        load_svmlight(tmp_path / "nope.txt")
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        load_svmlight(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_features must be a positive int"):
        load_svmlight(path, n_features=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero_based must be"):
        load_svmlight(path, zero_based="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noncontiguous_qids must be"):
        load_svmlight(path, noncontiguous_qids="merge")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# LightGBM


def test_load_lightgbm_uses_group_file(tmp_path: Path) -> None:
    path = write(tmp_path, "r.train", "1 0:1 2:3\n0 1:1\n2 2:2\n")
    write(tmp_path, "r.train.query", "2\n\n1\n")
    ds = load_lightgbm(path)
    np.testing.assert_array_equal(ds.lengths, [2, 1])
    np.testing.assert_array_equal(ds.qids, [0, 0, 1])
    nan = np.nan  # absent features are missing
    np.testing.assert_allclose(ds.features, [[1, nan, 3], [nan, 1, nan], [nan, nan, 2]])
    np.testing.assert_allclose(load_lightgbm(path, absent="zero").features, [[1, 0, 3], [0, 1, 0], [0, 0, 2]])
    groups = write(tmp_path, "other.groups", "1\n2\n")
    np.testing.assert_array_equal(load_lightgbm(path, groups).lengths, [1, 2])


def test_load_lightgbm_group_sum_mismatch_names_both_files(tmp_path: Path) -> None:
    path = write(tmp_path, "r.train", "1 0:1\n0 1:1\n2 2:2\n")
    write(tmp_path, "r.train.query", "2\n2\n")
    with pytest.raises(ValueError, match=r"r\.train\.query sum to 4 .*/r\.train has 3 data rows"):
        load_lightgbm(path)


@pytest.mark.parametrize(
    ("query_text", "match"),
    [
        ("2\nabc\n", r"line 2: expected one integer"),
        ("3\n0\n", r"line 2: group size 0 is out of range: sizes must be >= 1"),
        ("1\n9\n", r"line 2: group size 9 is out of range: .*has 3 data rows"),
        ("\n", "holds no group sizes"),
    ],
)
def test_load_lightgbm_bad_group_file(tmp_path: Path, query_text: str, match: str) -> None:
    path = write(tmp_path, "r.train", "1 0:1\n0 1:1\n2 2:2\n")
    write(tmp_path, "r.train.query", query_text)
    with pytest.raises(ValueError, match=r"r\.train\.query.*" + match):
        load_lightgbm(path)


def test_load_lightgbm_missing_group_file_and_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "r.train", "1 0:1\n0 1:1 0:2\n")
    with pytest.raises(FileNotFoundError, match=r"r\.train\.query"):
        load_lightgbm(path)
    write(tmp_path, "r.train.query", "2\n")
    with pytest.raises(ValueError, match=r"r\.train, line 2: .*strictly increasing"):
        load_lightgbm(path)


# ------------------------------------------------------------------------------------------------
# load() dispatch and LETOR folds


def test_load_dispatches_on_query_file(tmp_path: Path) -> None:
    lgb = write(tmp_path, "d.txt", "1 0:1\n0 1:1\n")
    write(tmp_path, "d.txt.query", "2\n")
    svm = write(tmp_path, "e.txt", "1 qid:5 0:1\n0 qid:6 1:1\n")
    assert isinstance(load(lgb), RankingDataset)
    np.testing.assert_array_equal(load(lgb).lengths, [2])  # type: ignore[union-attr]
    np.testing.assert_array_equal(load(svm).qids, [5, 6])  # type: ignore[union-attr]


def test_load_test_file_against_train_feature_count(tmp_path: Path) -> None:
    train = load(write(tmp_path, "train.txt", "1 qid:1 0:1 4:1\n0 qid:1 1:1\n"))
    assert isinstance(train, RankingDataset) and train.n_features == 5
    same = load(write(tmp_path, "t0.txt", "1 qid:1 0:1 4:0\n"), n_features=train.n_features)
    assert same.n_features == 5  # type: ignore[union-attr]  # an explicit 0 states the width
    with pytest.raises(ValueError, match=r"t1\.txt has 1 feature columns .* but 5 were expected"):
        load(write(tmp_path, "t1.txt", "1 qid:1 0:1\n"), n_features=train.n_features)
    with pytest.raises(ValueError, match=r"t2\.txt has 7 feature columns .* but 5 were expected"):
        load(write(tmp_path, "t2.txt", "1 qid:1 6:1\n"), n_features=train.n_features)


def test_load_fold_directory(tmp_path: Path) -> None:
    fold = tmp_path / "Fold1"
    fold.mkdir()
    write(fold, "train.txt", "2 qid:1 1:1 5:2\n0 qid:1 2:1\n1 qid:2 1:1\n")
    write(fold, "vali.txt", "1 qid:3 1:1 5:0\n0 qid:3 2:1\n")
    write(fold, "test.txt", "1 qid:4 3:1 5:0\n")
    parts = load(fold)
    assert isinstance(parts, dict) and list(parts) == ["train", "vali", "test"]
    assert {p.n_features for p in parts.values()} == {6}
    write(fold, "test.txt", "1 qid:4 9:1\n")
    with pytest.raises(ValueError, match=r"test\.txt has 10 feature columns .* but 6 were expected"):
        load_fold(fold)
    (fold / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="not a LETOR fold"):
        load(fold)


# ------------------------------------------------------------------------------------------------
# The real LightGBM example data (skipped when ../shared is absent)


def test_lightgbm_example_data(lightgbm_rank_dir: Path) -> None:
    train = load(lightgbm_rank_dir / "rank.train")
    assert isinstance(train, RankingDataset)
    assert (train.n_items, train.n_sessions) == (3005, 201)
    query = np.loadtxt(lightgbm_rank_dir / "rank.train.query", dtype=np.int64)
    np.testing.assert_array_equal(train.lengths, query)
    assert set(np.unique(train.labels).tolist()) <= {0, 1, 2, 3, 4}
    test = load(lightgbm_rank_dir / "rank.test", n_features=train.n_features)
    assert isinstance(test, RankingDataset)
    assert (test.n_items, test.n_sessions, test.n_features) == (768, 50, train.n_features)
    # First row of rank.train is "0 10:0.89 11:0.75 ...": zero-based indices are the columns.
    assert train.labels[0] == 0
    np.testing.assert_allclose(train.features[0, 10:12], [0.89, 0.75], rtol=1e-6)
    with pytest.raises(ValueError, match=r"rank\.test has 301 feature columns .* but 100 were expected"):
        load(lightgbm_rank_dir / "rank.test", n_features=100)
