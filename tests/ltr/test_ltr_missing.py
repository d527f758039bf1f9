"""Missing values (NULL / nan / absent) from the file to the ONNX export, and the preprocessing around them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import pairloss.nn.functional as PF
from pairloss.ltr import RankingDataset, TrainConfig, load, load_lightgbm, load_model, load_svmlight, train
from pairloss.ltr.models import MissingValues, make_model, score_items, signed_log1p
from pairloss.ltr.objectives import loss_options

LETOR_AGG = """0 qid:7 1:NULL 2:3 3:nan
2 qid:7 1:1 2:NULL 3:0
1 qid:7 2:5 # 1 and 3 absent
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_null_nan_and_absent_features_load_as_missing(tmp_path: Path) -> None:
    ds = load_svmlight(write(tmp_path, "agg.txt", LETOR_AGG), zero_based=False)
    nan = np.nan
    np.testing.assert_array_equal(ds.features, [[nan, 3, nan], [1, nan, 0], [nan, 5, nan]])
    zeros = load_svmlight(tmp_path / "agg.txt", zero_based=False, absent="zero")
    np.testing.assert_array_equal(zeros.features, [[nan, 3, nan], [1, nan, 0], [0, 5, 0]])


def test_null_loads_from_gzip_and_lightgbm_files(tmp_path: Path) -> None:
    gz = tmp_path / "agg.txt.gz"
    gz.write_bytes(gzip.compress(LETOR_AGG.encode()))
    assert np.isnan(load_svmlight(gz, zero_based=False).features).sum() == 5
    lgb = write(tmp_path, "r.train", "1 0:NULL 1:2\n0 0:1 1:null\n")
    write(tmp_path, "r.train.query", "2\n")
    np.testing.assert_array_equal(np.isnan(load_lightgbm(lgb).features), [[True, False], [False, True]])


def test_a_bad_value_next_to_null_is_still_named(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.txt", "1 qid:1 1:NULL 2:1\n0 qid:1 1:NULLX 2:1\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2: feature value in '1:NULLX' is not a number"):
        load_svmlight(path)


def test_load_rejects_an_unknown_absent_rule(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absent must be 'missing' or 'zero'"):
        load(write(tmp_path, "a.txt", LETOR_AGG), absent="nan")  # type: ignore[arg-type]


@pytest.mark.parametrize(("rule", "expected"), [("mean", [2.0, 0.0]), ("max", [4.0, 0.0]), ("min", [0.0, 0.0])])
def test_fill_rules_use_present_training_values(rule: str, expected: list[float]) -> None:
    x = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.nan]])  # column 1 never present: 0
    missing = MissingValues(2, rule).fit(x)
    np.testing.assert_allclose(missing.fill.numpy(), expected)
    np.testing.assert_array_equal(missing.seen.numpy(), [1, 1])
    filled, indicators = missing(torch.tensor([[np.nan, 5.0]], dtype=torch.float32))
    np.testing.assert_allclose(filled.numpy(), [[expected[0], 5.0]])
    np.testing.assert_array_equal(indicators.numpy(), [[1, 0]])


def test_indicators_stay_off_for_features_never_missing_in_training() -> None:
    train_x = np.array([[1.0, np.nan], [2.0, 1.0], [4.0, 2.0]], dtype=np.float32)
    model = make_model("linear", 2, missing_indicators=True).fit_preprocessing(train_x)
    assert model.n_inputs == 4
    inputs = model.preprocess(torch.tensor([[np.nan, np.nan]]))
    np.testing.assert_array_equal(inputs[0, 2:].numpy(), [0, 1])  # column 0 was never missing: no signal
    assert torch.isfinite(inputs).all()


def test_signed_log1p_is_odd_and_monotone() -> None:
    x = torch.tensor([-100.0, -1.0, 0.0, 1.0, 100.0])
    y = signed_log1p(x)
    torch.testing.assert_close(y, -signed_log1p(-x))
    assert (y.diff() > 0).all() and y[2] == 0


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"transform": "log"}, ValueError, "transform must be one of none, log1p"),
    ({"missing_indicators": 1}, TypeError, "missing_indicators must be a bool"),
    ({"input_noise": -0.1}, ValueError, "input_noise must be a finite number >= 0"),
    ({"missing_fill": "median"}, ValueError, "fill must be one of mean, max, min"),
])
def test_scorer_options_are_checked(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make_model("mlp", 3, **kwargs)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"transform": "rank"}, ValueError, "transform must be one of"),
    ({"missing_fill": "zero"}, ValueError, "missing_fill must be one of"),
    ({"input_noise": -1.0}, ValueError, "input_noise must be >= 0"),
    ({"sigma": 0.0}, ValueError, "sigma must be > 0"),
    ({"topn": -1}, ValueError, "topn must be an int >= 0"),
    ({"missing_indicators": "yes"}, TypeError, "missing_indicators must be a bool"),
])
def test_config_checks_the_new_fields(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        TrainConfig(**kwargs)


def _missing_toy(seed: int = 0, n_sessions: int = 24) -> RankingDataset:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 9, n_sessions)
    n = int(lengths.sum())
    x = rng.exponential(50.0, (n, 5)).astype(np.float32)  # heavy-tailed, like LETOR ranks
    labels = np.clip((x[:, 0] < 30).astype(int) + (x[:, 1] < 20).astype(int), 0, 2)
    x[rng.random((n, 5)) < 0.3] = np.nan
    return RankingDataset(x, labels.astype(np.float32), np.repeat(np.arange(n_sessions), lengths), lengths)


PREPROCESSED = {"model": "mlp", "hidden": (8,), "transform": "log1p", "missing_indicators": True,
                "missing_fill": "max", "input_noise": 0.1, "epochs": 2, "sessions_per_batch": 8}


def test_preprocessing_round_trips_through_the_checkpoint(tmp_path: Path) -> None:
    data, valid = _missing_toy(0), _missing_toy(1, 8)
    result = train(TrainConfig(loss="lambdarank", **PREPROCESSED), data, valid, tmp_path / "run", progress=False)
    scores = score_items(result.model, valid.features)
    assert np.isfinite(scores).all() and np.unique(scores).size > 1
    loaded = load_model(tmp_path / "run" / "best.pt")
    assert loaded.transform == "log1p" and loaded.missing_indicators and loaded.missing.fill_rule == "max"
    np.testing.assert_array_equal(score_items(loaded, valid.features), scores)  # eval mode: no noise
    torch.testing.assert_close(loaded.missing.fill, result.model.missing.fill)


def test_onnx_export_scores_nan_features_like_torch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from pairloss.onnx import export_scorer

    data = _missing_toy(2)
    model = make_model("mlp", 5, hidden=(6,), transform="log1p", missing_indicators=True,
                       missing_fill="max").fit_preprocessing(data.features).eval()
    export_scorer(model, tmp_path / "s.onnx")
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"features": data.features})
    assert np.isnan(data.features).any() and np.isfinite(got).all()
    np.testing.assert_allclose(got, score_items(model, data.features), rtol=1e-5, atol=1e-5)


def test_lambdarank_training_passes_sigma_topn_and_gain(tmp_path: Path) -> None:
    config = TrainConfig(loss="lambdarank", sigma=2.0, topn=5, gain="linear", epochs=1)
    assert loss_options(config) == {"sigma": 2.0, "topn": 5, "gain": "linear"}
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return PF.lambdarank_loss(*args, **kwargs)

    result = train(config, _missing_toy(3), None, tmp_path / "run", progress=False, loss_fn=spy)
    assert calls[0] == {"sigma": 2.0, "topn": 5, "gain": "linear", "reduction": "mean"}
    assert np.isfinite(result.history[0]["train_loss"])
