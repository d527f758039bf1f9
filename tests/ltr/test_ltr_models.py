"""Tests of pairloss.ltr.models: scorers, the standardiser and the factory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from pairloss.ltr.models import MODELS, LinearScorer, MLPScorer, Scorer, Standardizer, make_model


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("linear", {}),
        ("mlp", {}),
        ("mlp", {"hidden": (), "dropout": 0.0}),
        ("mlp", {"hidden": [8], "dropout": 0.2, "activation": "tanh"}),
    ],
)
def test_scorers_map_items_to_scores(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = make_model(name, 5, **kwargs)
    assert isinstance(model, Scorer) and isinstance(model, MODELS[name])
    x = torch.randn(7, 5)
    out = model(x)
    assert out.shape == (7,) and out.dtype == torch.float32
    assert model(torch.zeros(0, 5)).shape == (0,)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # float64 input is accepted and cast to the model's dtype.
    model.eval()
    torch.testing.assert_close(model(x.double()), model(x))


def test_standardizer_fit_and_constant_columns() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    x[:, 2] = 7.0  # constant column: centred, not divided by ~0
    st = Standardizer(4).fit(x)
    z = st(torch.from_numpy(x))
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(0, unbiased=False).numpy(), 1.0, atol=1e-5)
    assert st.std[2] == 1.0 and torch.all(z[:, 2] == 0)
    fresh = Standardizer(4)
    torch.testing.assert_close(fresh(torch.from_numpy(x)), torch.from_numpy(x))  # identity until fitted
    assert Standardizer(4).fit(torch.from_numpy(x)).mean.allclose(st.mean)
    with pytest.raises(ValueError, match=r"features must have shape \(n_items >= 1, 4\)"):
        st.fit(np.zeros((3, 5)))


def test_standardizer_is_saved_with_the_model() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=(100, 6)).astype(np.float32)
    torch.manual_seed(0)
    model = MLPScorer(6, hidden=(4,)).fit_standardizer(x)
    state = model.state_dict()
    assert {"standardizer.mean", "standardizer.std"} <= set(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    clone = MLPScorer(6, hidden=(4,))
    clone.load_state_dict(torch.load(buf, weights_only=True))
    xt = torch.from_numpy(x)
    torch.testing.assert_close(clone(xt), model(xt))


def test_linear_scorer_is_linear_in_standardized_features() -> None:
    model = LinearScorer(3, bias=False)
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    x = torch.tensor([[1.0, 1.0, 2.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(model(x), torch.tensor([0.0, -2.0]))


def test_dropout_is_off_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = MLPScorer(4, hidden=(16,), dropout=0.5).eval()
    x = torch.randn(10, 4)
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: make_model("tree", 3), ValueError, "unknown model 'tree'; valid models: linear, mlp"),
        (lambda: make_model(3, 3), TypeError, "name must be a str"),
        (lambda: make_model("linear", 3, hidden=(4,)), TypeError, r"make_model\('linear'\).*hidden"),
        (lambda: LinearScorer(0), ValueError, "n_features must be >= 1"),
        (lambda: LinearScorer(2.0), TypeError, "n_features must be an int"),
        (lambda: MLPScorer(3, hidden=(4, 0)), ValueError, "hidden must hold positive ints"),
        (lambda: MLPScorer(3, hidden=4), TypeError, "hidden must be a sequence"),
        (lambda: MLPScorer(3, dropout=1.0), ValueError, r"dropout must be a float in \[0, 1\)"),
        (lambda: MLPScorer(3, activation="swish"), ValueError, "activation must be one of"),
        (lambda: LinearScorer(3)(torch.zeros(2, 4)), ValueError, r"features must have shape \(N, 3\); got \(2, 4\)"),
        (lambda: LinearScorer(3)(np.zeros((2, 3))), TypeError, "features must be a torch.Tensor"),
        (lambda: LinearScorer(3)(torch.zeros(2, 3, dtype=torch.int64)), TypeError, "floating tensor"),
    ],
)
def test_bad_arguments(call, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()
