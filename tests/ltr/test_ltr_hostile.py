"""Hostile and careless input to the loaders, the metrics and the checkpoints (issue 9).

Every case must end in a correct result or a ``ValueError`` / ``FileNotFoundError`` whose message names
the file (never another exception, a crash, a hang or a silent wrong number). Hypothesis draws the
files: hostile tokens (NaN, inf, huge and negative indices, garbage), truncations at any byte, random
bytes, group sizes that overflow int64, and damaged or foreign checkpoints.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairloss.ltr import RankingDataset, TrainConfig, make_toy_dataset, train
from pairloss.ltr.checkpoint import FORMAT, load_model, read_checkpoint
from pairloss.ltr.data import MAX_DENSE_BYTES, load, load_lightgbm, load_svmlight
from pairloss.ltr.metrics import evaluate, ndcg_at

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WRAPPING_LENGTHS = [2**62] * 4  # their int64 sum is 0: with one more session of N they "sum" to N


def _check_dataset(ds: RankingDataset) -> None:
    assert ds.n_items == int(ds.lengths.sum()) and (ds.lengths >= 1).all()
    assert not np.isinf(ds.features).any() and np.isfinite(ds.labels).all()  # NaN: a missing value


def _load_or_reject(path: Path, **kwargs) -> RankingDataset | None:
    try:
        ds = load(path, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert path.name in message, message  # the message names the file
        return None
    assert isinstance(ds, RankingDataset)
    _check_dataset(ds)
    return ds


# --------------------------------------------------------------------------------------------------
# int64 wrap-around of session sizes (the reproducer of issue 9): a clear error, no segfault


def test_wrapping_lengths_are_rejected_by_the_dataset_and_the_metrics() -> None:
    n = 5
    for lengths in (np.array([*WRAPPING_LENGTHS, n], dtype=np.int64),
                    np.array([2**63 + 1, 2**63 - 1 + n], dtype=np.uint64)):
        assert int(lengths.sum()) == n  # numpy's sum wraps around: a sum check alone would pass
        with pytest.raises(ValueError, match="lengths must sum to the number of items 5"):
            RankingDataset(np.zeros((n, 2)), np.arange(n), np.zeros(n), lengths)
        with pytest.raises(ValueError, match="lengths must sum to the number of items 5"):
            evaluate(np.zeros(n), np.arange(n), lengths, ["ndcg@10", "map", "mrr", "pairwise_accuracy"])


def test_wrapping_group_sizes_in_a_query_file_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "rank.train"
    path.write_text("".join(f"{i % 3} 0:{i}\n" for i in range(5)))
    Path(f"{path}.query").write_text("".join(f"{n}\n" for n in [*WRAPPING_LENGTHS, 5]))
    with pytest.raises(ValueError, match=r"rank\.train\.query, line 1: group size 4611686018427387904 is out of range"):
        load_lightgbm(path)
    Path(f"{path}.query").write_text(f"{2**70}\n")  # beyond int64 altogether
    with pytest.raises(ValueError, match="out of range"):
        load_lightgbm(path)


@SETTINGS
@given(sizes=st.lists(st.integers(-(2**70), 2**70) | st.integers(-2, 8), min_size=1, max_size=6))
def test_any_group_sizes_load_or_fail_cleanly(tmp_path: Path, sizes: list[int]) -> None:
    path = tmp_path / "g.train"
    path.write_text("".join(f"{i % 3} 0:{i}\n" for i in range(7)))
    Path(f"{path}.query").write_text("".join(f"{n}\n" for n in sizes))
    ds = _load_or_reject(path)
    assert (ds is not None) == (all(n >= 1 for n in sizes) and sum(sizes) == 7)


@SETTINGS
@given(lengths=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=5))
def test_any_int64_lengths_give_a_metric_or_a_clear_error(lengths: list[int]) -> None:
    n = 6
    valid = all(x >= 0 for x in lengths) and sum(lengths) == n
    if not valid:
        with pytest.raises(ValueError, match="lengths"):
            ndcg_at(np.arange(n, dtype=float), np.arange(n) % 3, np.array(lengths, dtype=np.int64), 3)
        return
    value = ndcg_at(np.arange(n, dtype=float), np.arange(n) % 3, np.array(lengths, dtype=np.int64), 3)
    assert math.isnan(value) or 0 <= value <= 1


# --------------------------------------------------------------------------------------------------
# Data files: hostile tokens, huge indices, NaN/inf, truncation, random bytes

LABELS = st.sampled_from(["0", "1", "2", "4", "nan", "inf", "-inf", "1e400", "abc", "", "3.5"])
INDICES = st.sampled_from(["0", "1", "2", "7", "-1", "1000000000", str(2**31), str(2**40), "x"])
VALUES = st.sampled_from(["0.5", "-2", "0", "nan", "inf", "1e39", "y", ""])


@st.composite
def letor_lines(draw) -> str:
    lines = []
    for row in range(draw(st.integers(0, 6))):
        tokens = [draw(LABELS)]
        if draw(st.booleans()) or row < 2:
            tokens.append(f"qid:{draw(st.sampled_from(['1', '2', '1', 'q', '99999999999999999999']))}")
        tokens += [f"{draw(INDICES)}:{draw(VALUES)}" for _ in range(draw(st.integers(0, 3)))]
        lines.append(" ".join(tokens) + draw(st.sampled_from(["", " # comment", "#"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


@SETTINGS
@given(text=letor_lines())
def test_hostile_letor_lines_load_or_fail_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hostile.txt"
    path.write_text(text)
    ds = _load_or_reject(path)
    if ds is not None:
        assert ds.features.nbytes <= MAX_DENSE_BYTES


def test_one_huge_feature_index_fails_under_the_stated_memory_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    path.write_text("".join(f"{i % 3} qid:{i // 5} 1:0.5 {'1000000000:1' if i == 7 else '2:1'}\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"huge\.txt, line 8: feature index 1000000000 would make a dense 20 x "
                                         r"1000000001 float32 feature matrix of 74\.5 GiB, over the loader's limit"):
        load_svmlight(path)


@pytest.mark.parametrize("label", ["nan", "inf", "-inf", "1e400"])
def test_non_finite_labels_are_rejected_by_both_loaders(tmp_path: Path, label: str) -> None:
    svm = tmp_path / "n.txt"
    svm.write_text(f"1 qid:1 0:1\n{label} qid:1 0:2\n")
    with pytest.raises(ValueError, match=r"n\.txt, line 2: label is NaN or infinite"):
        load_svmlight(svm)
    lgb = tmp_path / "n.train"
    lgb.write_text(f"1 0:1\n{label} 0:2\n")
    Path(f"{lgb}.query").write_text("2\n")
    with pytest.raises(ValueError, match=r"n\.train, line 2: label is NaN or infinite"):
        load_lightgbm(lgb)


def _letor_bytes(n_rows: int = 300) -> bytes:
    rng = np.random.default_rng(1)
    return "".join(f"{rng.integers(0, 3)} qid:{i // 10} 0:{rng.random():.5f} 1:{rng.random():.5f}\n"
                   for i in range(n_rows)).encode()


@SETTINGS
@given(cut=st.floats(0.0, 1.0), compression=st.sampled_from(["", ".gz", ".bz2"]))
def test_truncated_files_load_or_fail_naming_the_file(tmp_path: Path, cut: float, compression: str) -> None:
    raw = _letor_bytes()
    packed = {"": raw, ".gz": gzip.compress(raw), ".bz2": bz2.compress(raw)}[compression]
    path = tmp_path / f"cut.txt{compression}"
    path.write_bytes(packed[: int(cut * len(packed))])
    ds = _load_or_reject(path)
    if ds is not None and compression:
        assert cut == 1.0 or ds.n_items == 300  # a compressed file that loads was not cut short


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    packed = gzip.compress(_letor_bytes())
    path = tmp_path / "train.txt.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"train\.txt\.gz: the compressed file is truncated or damaged"):
        load(path)


@SETTINGS
@given(blob=st.binary(max_size=300))
def test_random_bytes_fail_naming_the_file(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "blob.txt"
    path.write_bytes(blob)
    _load_or_reject(path)


# --------------------------------------------------------------------------------------------------
# Labels that overflow the exp2 gain


@pytest.mark.parametrize("labels", [[1500.0, 0.0, 1.0], [1023.0, 1023.0, 1023.0]])
def test_labels_overflowing_the_exp2_gain_are_a_clear_error(labels: list[float]) -> None:
    with pytest.raises(ValueError, match=r"exp2 gain.*--gain linear"):
        ndcg_at(np.zeros(3), labels, None, 3)
    assert 0 <= ndcg_at(np.zeros(3), labels, None, 3, gain="linear") <= 1


# --------------------------------------------------------------------------------------------------
# Checkpoints: truncated, random, empty, foreign, NaN


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> dict[str, bytes]:
    train_data, valid_data, _ = make_toy_dataset(n_queries=20, docs_per_query=5, n_features=3, seed=0)
    out = tmp_path_factory.mktemp("ckpt")
    train(TrainConfig(epochs=1, model="mlp", hidden=(4,)), train_data, valid_data, out, progress=False)
    return {"checkpoint": (out / "checkpoint.pt").read_bytes(), "best": (out / "best.pt").read_bytes()}


def _reject(path: Path, read) -> None:
    with pytest.raises(ValueError) as info:
        read(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@SETTINGS
@given(cut=st.floats(0.0, 0.999), which=st.sampled_from(["checkpoint", "best"]))
def test_truncated_checkpoints_are_rejected_naming_the_file(tmp_path: Path, checkpoint_bytes, cut: float,
                                                            which: str) -> None:
    blob = checkpoint_bytes[which]
    path = tmp_path / f"{which}.pt"
    path.write_bytes(blob[: int(cut * len(blob))])
    _reject(path, load_model)
    _reject(path, read_checkpoint)


@SETTINGS
@given(blob=st.binary(max_size=200))
def test_random_bytes_are_not_a_checkpoint(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(blob)
    _reject(path, load_model)
    _reject(path, read_checkpoint)


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "foreign",
    [[1, 2, 3], torch.zeros(3), {"config": {}, "model_state": {}}, {"format": FORMAT}, {"format": 1, "epoch": 3},
     {"config": {"lr": -1.0}, "model_state": {"standardizer.mean": torch.zeros(2)}},
     {"config": {"model": "linear"}, "model_state": {"standardizer.mean": torch.zeros(2), "linear.weight": "x"}}],
    ids=["list", "tensor", "empty-dicts", "bare-format", "old-format", "bad-config", "bad-weights"],
)
def test_foreign_torch_files_are_not_checkpoints(tmp_path: Path, foreign: object) -> None:
    path = tmp_path / "foreign.pt"
    path.write_bytes(_saved(foreign))
    _reject(path, load_model)
    _reject(path, read_checkpoint)


def test_checkpoints_with_nan_weights_are_rejected(tmp_path: Path, checkpoint_bytes) -> None:
    state = torch.load(io.BytesIO(checkpoint_bytes["best"]), weights_only=True)
    key = next(k for k in state["model_state"] if k.endswith("weight"))
    state["model_state"][key] = torch.full_like(state["model_state"][key], math.nan)
    path = tmp_path / "nan.pt"
    path.write_bytes(_saved(state))
    with pytest.raises(ValueError, match=rf"nan\.pt is a damaged checkpoint: it holds NaN or infinite weights in {key}"
                       ):
        load_model(path)


def test_empty_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt is empty"):
        load_model(path)
