"""PairWiseLoss: hand values, Caffe2's rank_loss_operator_test re-created, edge cases and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pairloss
from pairloss import registry
from tests.caffe2_checks import assert_gradient_checks, assert_reference_checks
from tests.strategies import sessions

# every case on both walks of the pair loops (small inputs would otherwise never reach the planned one)
pytestmark = pytest.mark.usefixtures("pair_walk")


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_hand_computed_values() -> None:
    # one pair, label 1 over 0, equal scores: log(1 + e^0) = log 2; gradient -+sigmoid(0)
    assert pairloss.pairwise_loss(np.array([0.0, 0.0]), np.array([1, 0]))[0] == pytest.approx(math.log(2))
    # hi scored 1 above lo: log(1 + e^-1); gradient on hi is -sigmoid(-1), on lo +sigmoid(-1)
    np.testing.assert_allclose(pairloss.pairwise_loss(np.array([1.0, 0.0]), np.array([1, 0])), [softplus(-1)])
    sig = 1 / (1 + math.e)
    np.testing.assert_allclose(
        pairloss.pairwise_loss_gradient(np.array([1.0, 0.0]), np.array([1, 0]), np.array([1.0])), [-sig, sig])
    # 3 items, labels 2 > 1 > 0 but scores reversed: mean of three pair losses
    scores, labels = np.array([0.0, 1.0, 2.0]), np.array([2, 1, 0])
    expected = (softplus(1) + softplus(2) + softplus(1)) / 3
    np.testing.assert_allclose(pairloss.pairwise_loss(scores, labels), [expected])


def test_sessions_are_averaged_separately_not_pooled() -> None:
    scores = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 5.0])
    labels = np.array([1, 0, 1, 0, 0, 0])
    lengths = np.array([2, 4])
    # session 2 has 3 pairs (item 0 over each of the other three), mean of softplus(0),(0),(5)
    np.testing.assert_allclose(pairloss.pairwise_loss(scores, labels, lengths),
                               [softplus(-1), (2 * math.log(2) + softplus(5)) / 3])


@pytest.mark.parametrize("lengths", [[0, 1, 0], [1, 1, 1]])
def test_empty_and_one_item_sessions_contribute_zero(lengths: list[int]) -> None:
    n = sum(lengths)
    out = pairloss.pairwise_loss(np.arange(n, dtype=np.float64), np.arange(n), np.array(lengths))
    np.testing.assert_array_equal(out, np.zeros(len(lengths)))
    grad = pairloss.pairwise_loss_gradient(np.arange(n, dtype=np.float64), np.arange(n), np.ones(len(lengths)),
                                           np.array(lengths))
    np.testing.assert_array_equal(grad, np.zeros(n))


def test_pairwise_loss_is_zero_when_all_labels_tie() -> None:
    scores = np.array([3.0, -1.0, 2.0], np.float32)
    labels = np.array([1.0, 1.0 + 2**-25, 1.0])  # differences below 2^-23 are ties
    assert pairloss.pairwise_loss(scores, labels)[0] == 0
    assert not pairloss.pairwise_loss_gradient(scores, labels, np.ones(1, np.float32)).any()
    labels[1] = 1.0 + 2**-22  # above the tolerance: a real preference
    assert pairloss.pairwise_loss(scores, labels)[0] > 0


def test_empty_batch_gives_one_zero_per_session() -> None:
    # a deliberate difference: Caffe2 returned shape (0,) for N == 0 whatever lengths said
    out = pairloss.pairwise_loss(np.zeros(0, np.float32), np.zeros(0), np.zeros(3, np.int32))
    assert out.shape == (3,) and out.dtype == np.float32 and not out.any()
    assert pairloss.pairwise_loss(np.zeros(0), np.zeros(0), np.zeros(0, np.int32)).shape == (0,)
    assert pairloss.pairwise_loss(np.zeros(0), np.zeros(0)).shape == (1,)


def test_gradient_has_no_nan_for_scores_of_1e30() -> None:
    scores = np.array([1e30, -1e30, 0.0, 3e29], np.float32)
    labels = np.array([0, 1, 2, 1])
    loss = pairloss.pairwise_loss(scores, labels)
    grad = pairloss.pairwise_loss_gradient(scores, labels, np.ones(1, np.float32))
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert loss[0] > 1e29  # the misordered pair costs about its score gap, not inf


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtypes_keep_the_score_dtype(dtype: type) -> None:
    scores = np.array([0.5, -0.25, 2.0], dtype)
    out = pairloss.pairwise_loss(scores, np.array([1, 0, 2]))
    grad = pairloss.pairwise_loss_gradient(scores, np.array([1, 0, 2]), np.ones(1, dtype))
    assert out.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(out, pairloss.pairwise_loss(scores.astype(np.float64), np.array([1, 0, 2])),
                               rtol=1e-3)


def test_column_scores_keep_their_shape_in_the_gradient() -> None:
    scores = np.array([[0.5], [-0.25]])
    grad = pairloss.pairwise_loss_gradient(scores, np.array([[1.0], [0.0]]), np.ones(1))
    assert grad.shape == (2, 1)


@given(case=sessions(max_sessions=5, max_len=6))
def test_lengths_split_equals_separate_calls(case: dict) -> None:
    """Metamorphic: one call over many sessions equals one call per session."""
    scores, labels, lengths = case["scores"], case["labels"], case["lengths"]
    together = pairloss.pairwise_loss(scores, labels, lengths)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    apart = [pairloss.pairwise_loss(scores[a:b], labels[a:b])[0] for a, b in zip(offsets[:-1], offsets[1:])]
    np.testing.assert_allclose(together, apart, rtol=1e-12, atol=1e-15)


@given(case=sessions(max_sessions=4, max_len=6))
def test_swapping_items_within_a_session_leaves_the_loss_unchanged(case: dict) -> None:
    scores, labels, lengths = case["scores"], case["labels"], case["lengths"]
    perm = np.arange(scores.size)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    rng = np.random.default_rng(0)
    for a, b in zip(offsets[:-1], offsets[1:]):
        perm[a:b] = a + rng.permutation(b - a)
    np.testing.assert_allclose(pairloss.pairwise_loss(scores[perm], labels[perm], lengths),
                               pairloss.pairwise_loss(scores, labels, lengths), rtol=1e-12, atol=1e-15)


# ---- rank_loss_operator_test.py, ported -----------------------------------------------------------------
two_items = st.lists(st.floats(0, 10, width=32), min_size=2, max_size=2)
two_labels = st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=2)


@given(x=two_items, label=two_labels)
def test_caffe2_pair_wise_loss_predictions(x: list[float], label: list[float]) -> None:
    X = np.array(x, np.float32).reshape(2, 1)
    lab = np.array(label, np.float32).reshape(2, 1)
    (output,) = registry.run("PairWiseLoss", X, lab)
    (new_output,) = registry.run("PairWiseLoss", X[::-1].copy(), lab[::-1].copy())
    if label[0] == label[1]:
        assert output[0] == 0
    else:
        sign = 1 if label[0] > label[1] else -1
        expected = math.log(1 + math.exp(sign * (X[1, 0] - X[0, 0])))
        assert output[0] == pytest.approx(expected, abs=1e-4)
        assert output[0] == pytest.approx(new_output[0], abs=1e-7)


@given(x=two_items, label=two_labels, dy=st.floats(1, 10, width=32))
def test_caffe2_pair_wise_loss_gradient(x: list[float], label: list[float], dy: float) -> None:
    X = np.array(x, np.float32).reshape(2, 1)
    lab = np.array(label, np.float32).reshape(2, 1)
    dY = np.array([dy], np.float32)
    (dx,) = registry.run("PairWiseLossGradient", X, lab, dY)
    if label[0] == label[1]:
        assert dx[0, 0] == 0
        return
    sign = 1 if label[0] > label[1] else -1
    expected = -dY[0] * sign / (1 + math.exp(sign * (X[0, 0] - X[1, 0])))
    assert float(dx[0, 0]) == pytest.approx(float(expected), abs=1e-2 * abs(float(dx[0, 0])) + 1e-12)
    assert dx[0, 0] == -dx[1, 0]
    delta = 1e-3
    up, down = X.copy(), X.copy()
    up[0] += delta
    down[0] -= delta
    (up_loss,) = registry.run("PairWiseLoss", up, lab)
    (down_loss,) = registry.run("PairWiseLoss", down, lab)
    np.testing.assert_allclose(dx[0, 0], 0.5 * dY[0] * (up_loss[0] - down_loss[0]) / delta, rtol=1e-2, atol=1e-2)


@given(n=st.integers(0, 10), k=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_caffe2_pair_wise_loss_batch(n: int, k: int, seed: int) -> None:
    rng = np.random.RandomState(seed)
    lengths = rng.randint(k, size=n).astype(np.int32) + 1
    X = rng.rand(int(sum(lengths))).astype(np.float32)
    label = rng.randint(k, size=int(sum(lengths))).astype(np.float32)

    def pair_wise_op(X: np.ndarray, label: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray]:
        def f(x: np.ndarray, y: np.ndarray) -> float:
            return math.log(1 + math.exp(y * x))

        def f_pairs(x: np.ndarray, lab: np.ndarray) -> float:
            val, count = 0.0, 0
            for i in range(x.size):
                for j in range(i):
                    if lab[i] == lab[j]:
                        continue
                    val += f(x[j] - x[i], 1 if lab[i] > lab[j] else -1)
                    count += 1
            return val / count if count else 0.0

        offsets = np.concatenate(([0], np.cumsum(lengths)))
        return (np.array([f_pairs(X[a:b], label[a:b]) for a, b in zip(offsets[:-1], offsets[1:])], np.float32),)

    assert_reference_checks("PairWiseLoss", [X, label, lengths], pair_wise_op)
    assert_gradient_checks("PairWiseLoss", [X, label, lengths], 0)


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("scores", "labels", "lengths", "error", "pattern"), [
    (np.zeros(3), np.zeros(3), np.array([1, 1]), ValueError, r"lengths must sum to the number of scores N=3; got sum"),
    (np.zeros(3), np.zeros(3), np.array([[3]]), ValueError, r"lengths must be 1-D.*\(1, 1\)"),
    (np.zeros(3), np.zeros(3), np.array([1.0, 2.0]), TypeError, "lengths must be an integer array"),
    (np.zeros(3), np.zeros(3), np.array([4, -1]), ValueError, r"lengths must be non-negative.*-1"),
    (np.zeros(3), np.zeros(2), None, ValueError, "labels must have one entry per score: expected 3; got 2"),
    (np.zeros(3), np.zeros((3, 2)), None, ValueError, r"labels must have shape \(N,\) or \(N, 1\)"),
    (np.zeros((3, 2)), np.zeros(3), None, ValueError, r"scores must have shape \(N,\) or \(N, 1\)"),
    (np.array(1.0), np.zeros(1), None, ValueError, "0-d"),
    (np.zeros(3, np.int32), np.zeros(3), None, TypeError, "scores must be a float16, float32 or float64"),
    (np.zeros(2), np.array([np.nan, 1.0]), None, ValueError, "labels must be finite; got NaN or inf"),
    (np.zeros(2), np.array(["a", "b"]), None, TypeError, "labels must be an integer or float"),
    (np.zeros(3), np.zeros(3), np.zeros(0, np.int32), ValueError, "must sum to"),
])
def test_bad_input_names_the_argument(scores, labels, lengths, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        pairloss.pairwise_loss(scores, labels, lengths)
    with pytest.raises(error, match=pattern):
        registry.reference("PairWiseLoss")(scores, labels, lengths)


def test_gradient_checks_loss_grad_shape() -> None:
    with pytest.raises(ValueError, match=r"loss_grad must have one entry per session, shape \(2,\)"):
        pairloss.pairwise_loss_gradient(np.zeros(3), np.zeros(3), np.ones(3), np.array([1, 2]))
