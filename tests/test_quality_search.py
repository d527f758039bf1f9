"""benchmarks/quality_search.py: the query-level normalisations and the ListNet loss its BENCHMARKS rows used."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from pairloss.ltr.data import RankingDataset

NAN = float("nan")


@pytest.fixture(scope="module")
def search() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_search.py"
    spec = importlib.util.spec_from_file_location("quality_search", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data() -> RankingDataset:
    features = np.array([[3, NAN], [1, 5], [2, 5],  # query 0: feature 1 constant where present
                         [10, NAN], [40, NAN]], dtype=np.float32)  # query 1: feature 1 never present
    return RankingDataset(features, np.array([0, 1, 2, 0, 1]), np.array([0, 0, 0, 1, 1]), np.array([3, 2]))


def test_query_normalisations_work_per_query_and_keep_missing(search: ModuleType) -> None:
    data = _data()
    np.testing.assert_allclose(search.query_normalised(data, "minmax").features,
                               [[1, NAN], [0, 0], [0.5, 0], [0, NAN], [1, NAN]])
    np.testing.assert_allclose(search.query_normalised(data, "divmax").features,
                               [[1, NAN], [1 / 3, 1], [2 / 3, 1], [0.25, NAN], [1, NAN]], rtol=1e-6)
    np.testing.assert_allclose(search.query_normalised(data, "rank").features,
                               [[1, NAN], [1 / 3, 0.5], [2 / 3, 1], [0.5, NAN], [1, NAN]], rtol=1e-6)
    both = search.query_normalised(data, "raw+count").features
    np.testing.assert_allclose(both[:, :2], data.features)
    np.testing.assert_allclose(both[:, 2:], np.log1p([[3, 2]] * 3 + [[2, 0]] * 2), rtol=1e-6)
    assert search.query_normalised(data, "none") is data
    with pytest.raises(ValueError, match="mode must be one of"):
        search.query_normalised(data, "zscore")


def test_listnet_loss_matches_a_per_session_softmax_cross_entropy(search: ModuleType) -> None:
    scores = torch.tensor([0.3, -1.0, 2.0, 0.5, 0.1], dtype=torch.float64, requires_grad=True)
    labels, lengths = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0]), torch.tensor([3, 2])
    expected = []
    for s, lab in ((scores[:3], labels[:3]), (scores[3:], labels[3:])):
        gain = 2.0 ** lab.double() - 1
        expected.append(-(gain / gain.sum() * torch.log_softmax(s, 0)).sum())
    got = search.listnet_loss(scores, labels, lengths)
    torch.testing.assert_close(got, torch.stack(expected).mean())
