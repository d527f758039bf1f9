"""Negative and NegateGradient: dtypes, in place, Caffe2's tests re-created."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pairloss
from pairloss import registry
from tests.caffe2_checks import assert_gradient_checks
from tests.strategies import tensors


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64,
                                   np.complex64])
def test_negative_keeps_shape_and_dtype(dtype: type) -> None:
    x = np.arange(12).reshape(3, 4).astype(dtype)
    y = pairloss.negative(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, registry.reference("Negative")(x))
    np.testing.assert_array_equal(y + x, np.zeros_like(x))


def test_negative_wraps_integer_minimum_and_signs_zero() -> None:
    x = np.array([np.iinfo(np.int32).min, 0, 5], np.int32)
    np.testing.assert_array_equal(pairloss.negative(x), [np.iinfo(np.int32).min, 0, -5])
    assert np.signbit(pairloss.negative(np.array([0.0])))[0]
    np.testing.assert_array_equal(registry.reference("Negative")(x), pairloss.negative(x))
    u = np.array([0, 1, 255], np.uint8)
    np.testing.assert_array_equal(pairloss.negative(u), registry.reference("Negative")(u))


def test_negative_in_place_and_empty() -> None:
    x = np.array([[1.0, -2.0]])
    assert pairloss.negative(x, out=x) is x
    np.testing.assert_array_equal(x, [[-1.0, 2.0]])
    assert pairloss.negative(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("bad", [np.array([True]), np.array(["a"]), np.array([object()])])
def test_negative_rejects_non_numeric(bad: np.ndarray) -> None:
    with pytest.raises(TypeError, match="numeric dtype"):
        pairloss.negative(bad)


@given(x=tensors(), in_place=st.booleans())
def test_caffe2_test_negative(x: np.ndarray, in_place: bool) -> None:
    """hypothesis_test.py::test_negative (device check + gradient check), ported."""
    x = x.astype(np.float32)
    expected = -x
    outputs = [x] if in_place else None
    (y,) = registry.run("Negative", x, outputs=outputs)
    np.testing.assert_array_equal(y, expected)
    assert_gradient_checks("Negative", [expected.copy()], 0)


@given(x=tensors(), in_place=st.booleans())
def test_caffe2_negate_gradient_forward(x: np.ndarray, in_place: bool) -> None:
    """negate_gradient_op_test.py::test_forward, ported: the reference is the identity."""
    x = x.astype(np.float32)
    copy = x.copy()
    (y,) = registry.run("NegateGradient", x, outputs=[x] if in_place else None)
    np.testing.assert_array_equal(y, copy)
    assert (y is x) == in_place


def test_negate_gradient_forward_is_a_copy_of_any_dtype() -> None:
    for x in (np.array([1, 2], np.int16), np.array([[True]]), np.array([1.5], np.float16)):
        y = pairloss.negate_gradient(x)
        assert y is not x and y.dtype == x.dtype
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_large_arrays_in_place_and_overlapping_match_the_ufunc(dtype: type) -> None:
    n = (1 << 18) + 3
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        x[:2] = info.min, 0  # the minimum wraps to itself
    else:
        x = rng.standard_normal(n).astype(dtype)
        x[:3] = 0.0, np.inf, np.nan
    expected = np.negative(x)
    got = pairloss.negative(x.reshape(-1, 1))
    assert got.shape == (n, 1) and got.dtype == x.dtype
    np.testing.assert_array_equal(got.reshape(-1), expected)
    assert np.array_equal(np.signbit(got.reshape(-1)), np.signbit(expected))
    np.testing.assert_array_equal(registry.reference("Negative")(x[:50]), expected[:50])
    inplace = x.copy()
    assert pairloss.negative(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, expected)
    # an output that overlaps the input without being it must still see the original values
    buf = np.concatenate([x, x[:1]])
    pairloss.negative(buf[:-1], out=buf[1:])
    np.testing.assert_array_equal(buf[1:], expected)


@pytest.mark.parametrize("layout", ["fortran", "reversed", "strided"])
def test_the_reference_negates_every_memory_layout(layout: str) -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 11.5
    view = {"fortran": np.asfortranarray(x), "reversed": x[::-1], "strided": np.repeat(x, 2, axis=0)[::2]}[layout]
    np.testing.assert_array_equal(registry.reference("Negative")(view), -view)
