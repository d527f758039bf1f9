"""The adversarial suite of the NumPy operators: hostile arrays through every public function and
``registry.run``, as a careless or hostile user would pass them.

Every input either gives a clear ``ValueError``/``TypeError`` (one line, naming what is wrong) or a result
that equals the float64 reference on the same input; nothing else may happen (no Numba typing dump, no
IndexError, no crash, no hang). The strategies draw wrong shapes, dtypes (object, bool, complex, str,
datetime, big-endian, long double), layouts (strided, reversed, broadcast, Fortran), containers (lists,
scalars, None, masked arrays, matrices), extreme values (NaN, inf, 1e300, integer extremes) and hostile
``lengths`` (overflowing sums, negative, float, 2-D).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairloss import registry

# every case on both walks of the pair loops (small inputs would otherwise never reach the planned one)
pytestmark = pytest.mark.usefixtures("pair_walk")

EXAMPLES = 300  # per (operator, surface): cases tried per run = EXAMPLES x len(CASES) x 2
_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint64, np.bool_, np.complex64,
           np.dtype(">f8"), np.dtype(">i4"), np.longdouble, "U3", "datetime64[s]", object]


@st.composite
def hostile_arrays(draw: st.DrawFn, n: int, *, kind: str = "score") -> Any:
    """Mostly plausible arrays of length n, often broken in one way."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.sampled_from([(n,), (n,), (n,), (n, 1), (), (0,), (n + 1,), (n, 2), (1, n), (2, 3, 4)]))
    values = np.asarray({"score": rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1.0, 1e300, 1e-300])),
                         "label": rng.integers(0, 4, shape).astype(np.float64),
                         "sign": rng.choice(np.array([-1.0, 1.0]), shape)}[kind])
    if values.size and draw(st.booleans()):
        special = draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 5.0, 2.0**60, -1.0]))
        values.reshape(-1)[rng.integers(0, values.size)] = special
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float64, *_DTYPES]))
    with np.errstate(all="ignore"):
        try:
            arr = values.astype(dtype)
        except (ValueError, TypeError, OverflowError):
            arr = values
    layout = draw(st.sampled_from(["plain", "plain", "strided", "reversed", "broadcast", "fortran"]))
    if layout == "strided" and arr.ndim:
        arr = np.repeat(arr, 2, axis=0)[::2]
    elif layout == "reversed" and arr.ndim:
        arr = arr[::-1]
    elif layout == "broadcast" and arr.size and arr.ndim:
        arr = np.broadcast_to(arr.reshape(-1)[:1].reshape((1,) * arr.ndim), arr.shape)  # zero strides
    elif layout == "fortran":
        arr = np.asfortranarray(arr)
    container = draw(st.sampled_from(["array"] * 6 + ["list", "scalar", "none", "masked", "matrix", "string"]))
    if container == "list":
        return arr.tolist()
    if container == "scalar":
        return arr.reshape(-1)[0] if arr.size else 0.0
    if container == "none":
        return None
    if container == "masked":
        return np.ma.array(arr, mask=np.zeros(arr.shape, bool))
    if container == "matrix" and arr.ndim == 2:
        return np.asmatrix(arr)
    if container == "string":
        return "scores"
    return arr


@st.composite
def hostile_lengths(draw: st.DrawFn, n: int) -> Any:
    choice = draw(st.sampled_from(["ok", "ok", "ok", "none", "wrap", "negative", "float", "2d", "too_long",
                                   "uint_huge", "bool", "short"]))
    if choice == "none":
        return None
    if choice == "wrap":
        return np.array([2**62] * 4 + [n], np.int64)
    if choice == "negative":
        return np.array([n + 1, -1])
    if choice == "float":
        return np.array([float(n)])
    if choice == "2d":
        return np.array([[n]])
    if choice == "too_long":
        return np.array([n, 1])
    if choice == "uint_huge":
        return np.array([2**64 - 1, n + 1], np.uint64)
    if choice == "bool":
        return np.ones(n, bool)
    if choice == "short":
        return np.array([max(n - 1, 0)])
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return np.diff(np.array([0, *cuts, n])).astype(draw(st.sampled_from([np.int32, np.int64, np.uint8])))


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), f"unclear error: {message!r}"
        assert "Numba" not in message and "nopython" not in message, f"a Numba error leaked: {message[:300]}"
        return "error", type(exc)


def _same(fast: tuple[str, Any], ref: tuple[str, Any]) -> None:
    assert fast[0] == ref[0], (fast, ref)
    if fast[0] == "error":
        assert fast[1] is ref[1], (fast, ref)
        return
    got = fast[1] if isinstance(fast[1], list | tuple) else [fast[1]]
    want = ref[1] if isinstance(ref[1], list | tuple) else [ref[1]]
    for a, b in zip(got, want, strict=True):
        # the kernels work in native byte order; a big-endian input may come back native
        assert a.shape == b.shape and a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")
        if a.dtype.kind in "fc":
            tol = 2e-3 if a.dtype == np.float16 else 1e-5 if a.dtype == np.float32 else 1e-9
            np.testing.assert_allclose(a.astype(np.complex128), b.astype(np.complex128), rtol=tol, atol=tol,
                                       equal_nan=True)
        elif a.dtype.kind == "O":  # NegateGradient copies any dtype; NaN != NaN, so compare the text
            assert repr(a.tolist()) == repr(b.tolist())
        else:
            np.testing.assert_array_equal(a, b)


@st.composite
def session_case(draw: st.DrawFn) -> tuple[list[Any], dict[str, Any]]:
    n = draw(st.integers(0, 12))
    args = draw(st.sampled_from([{}, {"margin": 0.5}, {"margin": float("nan")}, {"margin": "1"}, {"bogus": 1}]))
    return [draw(hostile_arrays(n)), draw(hostile_arrays(n, kind="label")), draw(hostile_lengths(n))], args


@st.composite
def pair_case(draw: st.DrawFn) -> tuple[list[Any], dict[str, Any]]:
    n = draw(st.integers(0, 12))
    margin = draw(st.sampled_from([1.0, 0.0, -0.5, float("inf"), True, None, "0.1"]))
    return [draw(hostile_arrays(n)), draw(hostile_arrays(n)), draw(hostile_arrays(n, kind="sign"))], \
        {"margin": margin}


@st.composite
def unary_case(draw: st.DrawFn) -> tuple[list[Any], dict[str, Any]]:
    return [draw(hostile_arrays(draw(st.integers(0, 12))))], {}


CASES = {
    "PairWiseLoss": session_case(),
    "PairWiseHingeLoss": session_case(),
    "LambdaRankLoss": session_case(),
    "MarginRankingCriterion": pair_case(),
    "Negative": unary_case(),
    "NegateGradient": unary_case(),
}


def _session_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    if op == "PairWiseLoss":
        return {k: v for k, v in args.items() if k != "margin"}
    if op == "LambdaRankLoss":
        return {("sigma" if k == "margin" else k): v for k, v in args.items()}
    return args


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, drawn on purpose
@pytest.mark.parametrize("op", list(CASES))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=st.data())
def test_registry_run_and_gradients_never_crash_and_agree_with_the_reference(op: str, data: st.DataObject) -> None:
    inputs, args = data.draw(CASES[op])
    args = _session_args(op, args)
    while inputs and inputs[-1] is None:
        inputs.pop()
    fast = _outcome(lambda: registry.run(op, *inputs, **args))
    ref = _outcome(lambda: [registry.reference(op)(*inputs, **registry.schema(op).resolve_args(args))])
    if fast[0] == "ok" and ref[0] == "ok":
        _same(fast, ref)
    else:
        assert fast[0] == "error", (fast, ref)  # the kernel may reject more than the reference checks, never less
    if fast[0] != "ok":
        return
    # the gradient ops on the same input, fed ones as output gradients
    s = registry.schema(op)
    given_names = [s.inputs[i].name for i in range(len(inputs))]
    fwd = registry.OperatorDef(op, tuple(given_names), tuple(o.name for o in s.outputs), args)
    ws = dict(zip(given_names, inputs, strict=True))
    ws.update({f"{o.name}_grad": np.ones_like(r) for o, r in zip(s.outputs, fast[1], strict=True)})
    for gdef in registry.get_gradient_defs(fwd):
        gin = [ws[b] for b in gdef.inputs]
        g_fast = _outcome(lambda gdef=gdef, gin=gin: registry.run(gdef.type, *gin, **gdef.args))
        g_ref = _outcome(lambda gdef=gdef, gin=gin: list(_as_list(registry.reference(gdef.type)(
            *gin, **registry.schema(gdef.type).resolve_args(gdef.args)))))
        if g_fast[0] == "ok" and g_ref[0] == "ok":
            _same(g_fast, g_ref)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, tuple | list) else [value]


def test_pairwise_loss_never_spins_on_wrapped_lengths() -> None:
    # the reproducer: int64 sums that wrap around to N passed validation, then a kernel spun forever
    n = 5
    for op in ("PairWiseLoss", "PairWiseHingeLoss", "LambdaRankLoss"):
        with pytest.raises(ValueError, match="lengths must be non-negative sizes of at most N=5"):
            registry.run(op, np.zeros(n), np.zeros(n), np.array([2**62] * 4 + [n]))
        with pytest.raises(ValueError, match="lengths must be non-negative sizes of at most N=5"):
            registry.run(f"{op}Gradient", np.zeros(n), np.zeros(n), np.ones(5), np.array([2**62] * 4 + [n]))
