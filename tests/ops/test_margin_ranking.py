"""MarginRankingCriterion: hand values, Caffe2's test re-created, edge cases and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pairloss
from tests.caffe2_checks import assert_gradient_checks, assert_reference_checks


def test_hand_computed_values_and_the_kink() -> None:
    x1 = np.array([2.0, 1.5, 3.0, 0.5], np.float32)
    x2 = np.array([1.0, 2.0, 1.0, 0.0], np.float32)
    y = np.array([1, 1, 1, 1], np.int32)
    # max(0, -(2-1)+1)=0 (exactly at the kink), max(0, -(1.5-2)+1)=1.5, 0, max(0,-0.5+1)=0.5
    np.testing.assert_allclose(pairloss.margin_ranking_criterion(x1, x2, y), [0.0, 1.5, 0.0, 0.5])
    dx1, dx2 = pairloss.margin_ranking_criterion_gradient(x1, x2, y, np.ones(4, np.float32))
    # the kink (distance exactly 0) passes the gradient, as Caffe2's `dist < 0 ? 0 : ...`
    np.testing.assert_array_equal(dx1, [-1.0, -1.0, 0.0, -1.0])
    np.testing.assert_array_equal(dx2, [1.0, 1.0, 0.0, 1.0])


def test_default_margin_is_caffe2s_one() -> None:
    assert pairloss.margin_ranking_criterion(np.zeros(1), np.zeros(1), np.ones(1))[0] == 1.0


@given(n=st.integers(10, 20), seed=st.integers(0, 65535), margin=st.floats(-0.5, 0.5))
def test_caffe2_margin_ranking_criterion(n: int, seed: int, margin: float) -> None:
    """caffe2/python/operator_test/margin_ranking_criterion_op_test.py, ported."""
    rng = np.random.RandomState(seed)
    x1 = rng.randn(n).astype(np.float32)
    x2 = rng.randn(n).astype(np.float32)
    y = rng.choice([-1, 1], n).astype(np.int32)

    def ref_cec(x1: np.ndarray, x2: np.ndarray, y: np.ndarray) -> tuple[np.ndarray]:
        return (np.maximum(-y * (x1 - x2) + margin, 0),)

    assert_reference_checks("MarginRankingCriterion", [x1, x2, y], ref_cec, margin=margin)
    # Make singular points less sensitive
    x1[np.abs(margin - y * (x1 - x2)) < 0.1] += 0.1
    x2[np.abs(margin - y * (x1 - x2)) < 0.1] -= 0.1
    assert_gradient_checks("MarginRankingCriterion", [x1, x2, y], 0, margin=margin)
    assert_gradient_checks("MarginRankingCriterion", [x1, x2, y], 1, margin=margin)


def test_nan_distance_stays_nan_and_passes_the_gradient() -> None:
    # Caffe2's CPU std::max keeps NaN (CUDA's fmaxf would give 0); we follow the CPU op everywhere
    x1 = np.array([np.nan, 2.0])
    loss = pairloss.margin_ranking_criterion(x1, np.zeros(2), np.array([1, 1]))
    assert np.isnan(loss[0]) and loss[1] == 0.0
    dx1, _ = pairloss.margin_ranking_criterion_gradient(x1, np.zeros(2), np.array([1, 1]), np.ones(2))
    np.testing.assert_array_equal(dx1, [-1.0, 0.0])


def test_shapes_and_dtypes_are_kept() -> None:
    x = np.zeros((2, 3), np.float16)
    out = pairloss.margin_ranking_criterion(x, x, np.ones((2, 3)), margin=0.1)
    assert out.shape == (2, 3) and out.dtype == np.float16
    assert pairloss.margin_ranking_criterion(np.zeros(0), np.zeros(0), np.zeros(0, np.int32)).shape == (0,)


def test_float_labels_and_huge_scores() -> None:
    loss = pairloss.margin_ranking_criterion(np.array([1e30], np.float32), np.array([-1e30], np.float32),
                                             np.array([-1.0]))
    assert np.isfinite(loss).all() and loss[0] > 1e30
    dx1, dx2 = pairloss.margin_ranking_criterion_gradient(np.array([1e30]), np.array([-1e30]), np.array([-1.0]),
                                                          np.ones(1))
    assert np.isfinite(dx1).all() and np.isfinite(dx2).all()


@pytest.mark.parametrize(("x1", "x2", "y", "error", "pattern"), [
    (np.zeros(3), np.zeros(4), np.ones(3), ValueError, r"same shape.*X1: \(3,\), X2: \(4,\), Y: \(3,\)"),
    (np.zeros((3, 1)), np.zeros(3), np.ones(3), ValueError, "no broadcasting"),
    (np.zeros(3), np.zeros(3), np.ones(2), ValueError, "same shape"),
    (np.zeros(2), np.zeros(2), np.array([1, 0]), ValueError, r"Y must contain only -1 and \+1.*\[0\]"),
    (np.zeros(2), np.zeros(2), np.array([1.0, 2.0]), ValueError, "only -1 and"),
    (np.zeros(2, np.int64), np.zeros(2), np.ones(2), TypeError, "X1 must be a float16, float32 or float64"),
    (np.zeros(2), np.zeros(2), np.array([True, False]), TypeError, "Y must be an integer or float"),
])
def test_bad_input_names_the_argument(x1, x2, y, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        pairloss.margin_ranking_criterion(x1, x2, y)


def test_the_kink_is_decided_in_float32_as_torch_does() -> None:
    # float32 1.1 - 0.1 rounds to exactly 1.0: the distance is 0 and the gradient passes (a float64
    # difference, 1.0000000238, would put the pair inside the margin and stop it)
    x1, x2, y = np.array([1.1], np.float32), np.array([0.1], np.float32), np.array([1], np.int32)
    assert pairloss.margin_ranking_criterion(x1, x2, y, margin=1.0)[0] == 0.0
    dx1, dx2 = pairloss.margin_ranking_criterion_gradient(x1, x2, y, np.ones(1, np.float32), margin=1.0)
    assert (dx1[0], dx2[0]) == (-1.0, 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**32 - 1), margin=st.sampled_from([0.0, 0.1, 1.0, 0.3333333, -0.7]))
def test_values_and_gradients_equal_torch_bit_for_bit(dtype: type, seed: int, margin: float) -> None:
    import torch

    rng = np.random.default_rng(seed)
    # values on a coarse grid make exact kinks (distance == 0 after rounding) common
    x1 = (rng.integers(-20, 20, 300) / 10).astype(dtype)
    x2 = (rng.integers(-20, 20, 300) / 10).astype(dtype)
    y = rng.choice(np.array([-1, 1], np.int32), 300)
    g = rng.standard_normal(300).astype(dtype)
    t1, t2 = torch.from_numpy(x1).requires_grad_(), torch.from_numpy(x2).requires_grad_()
    ref = torch.nn.functional.margin_ranking_loss(t1, t2, torch.from_numpy(y).to(t1.dtype), margin=margin,
                                                  reduction="none")
    ref.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(pairloss.margin_ranking_criterion(x1, x2, y, margin=margin), ref.detach().numpy())
    dx1, dx2 = pairloss.margin_ranking_criterion_gradient(x1, x2, y, g, margin=margin)
    np.testing.assert_array_equal(dx1, t1.grad.numpy())
    np.testing.assert_array_equal(dx2, t2.grad.numpy())
