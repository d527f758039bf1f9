"""Generic, registry-driven checks run on every registered operator (Caffe2's hypothesis_test_util).

An operator added to the registry is picked up here: its fast kernels against its float64 reference,
its gradient against finite differences, its shape inference against what it produces, CPU against CUDA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairloss import registry
from pairloss.registry import OperatorDef
from tests.strategies import OP_INPUTS

FORWARD_OPS = [s.name for s in registry.all_schemas(include_gradients=False)]
# The gradient-reversal layer's registered gradient is, by design, minus the derivative of its forward.
DELIBERATE_GRADIENT_SIGN = {"NegateGradient": -1.0}
TOL = {np.float16: 2e-2, np.float32: 1e-4, np.float64: 1e-10}


def _cast_scores(op: str, inputs: list[np.ndarray], dtype: type) -> list[np.ndarray]:
    float_inputs = {"MarginRankingCriterion": (0, 1)}.get(op, (0,))
    return [a.astype(dtype) if i in float_inputs else a for i, a in enumerate(inputs)]


def _forward_def(op: str, inputs: list[np.ndarray], args: dict[str, Any]) -> OperatorDef:
    s = registry.schema(op)
    names = [s.inputs[i].name for i in range(len(inputs))]
    return OperatorDef(op, tuple(names), tuple(o.name for o in s.outputs), dict(args))


def _run_defs(defs: list[OperatorDef], ws: dict[str, np.ndarray], impl: str) -> dict[str, np.ndarray]:
    """Run op defs on a workspace with either the registered fast kernels or the references."""
    ws = dict(ws)
    for d in defs:
        fn = registry.kernel(d.type) if impl == "kernel" else registry.reference(d.type)
        args = registry.schema(d.type).resolve_args(d.args)
        out = fn(*(ws[b] for b in d.inputs), **args)
        for name, value in zip(d.outputs, out if isinstance(out, tuple | list) else [out], strict=True):
            ws[name] = value
    return ws


def test_every_operator_is_fully_declared() -> None:
    for s in registry.all_schemas():
        assert s.doc, f"{s.name} has no doc"
        assert all(i.doc for i in s.inputs) and all(o.doc for o in s.outputs), s.name
        assert all(a.doc for a in s.args), s.name
        assert len(s.inputs) == s.max_inputs and len(s.outputs) == s.max_outputs, s.name
        assert "cpu" in registry.devices(s.name)
        assert registry.reference(s.name) is not None
    for name in FORWARD_OPS:
        assert name in OP_INPUTS, f"add an input strategy for {name} to tests/strategies.py"
        grad_types = registry.gradient_op_names(name)
        assert grad_types, f"{name} declares no gradient"
        assert all(t in registry.operators() for t in grad_types)


@pytest.mark.parametrize("op", FORWARD_OPS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
@given(data=st.data())
def test_fast_kernels_match_reference(op: str, dtype: type, data: st.DataObject) -> None:
    strategy, to_inputs = OP_INPUTS[op]
    inputs, args = to_inputs(data.draw(strategy))
    inputs = _cast_scores(op, inputs, dtype)
    fwd = _forward_def(op, inputs, args)
    feeds = dict(zip(fwd.inputs, inputs, strict=True))
    fast = _run_defs([fwd], feeds, "kernel")
    ref = _run_defs([fwd], feeds, "reference")
    grad_defs = registry.get_gradient_defs(fwd)
    for name in fwd.outputs:
        assert fast[name].dtype == ref[name].dtype == inputs[0].dtype
        np.testing.assert_allclose(fast[name].astype(np.float64), ref[name].astype(np.float64),
                                   rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"{op} forward")
        # feed the output itself as its gradient (Caffe2's CheckSimple), then compare the gradient ops
        ref[f"{name}_grad"] = fast[f"{name}_grad"] = ref[name].copy()
    fast_g = _run_defs(grad_defs, fast, "kernel")
    ref_g = _run_defs(grad_defs, ref, "reference")
    for d in grad_defs:
        for name in d.outputs:
            assert fast_g[name].shape == ref_g[name].shape
            np.testing.assert_allclose(fast_g[name].astype(np.float64), ref_g[name].astype(np.float64),
                                       rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"{op} gradient {name}")


def _nudge_off_kinks(op: str, inputs: list[np.ndarray], args: dict[str, Any]) -> None:
    """Caffe2's "make singular points less sensitive": keep hinge kinks out of the difference stencil."""
    if op == "MarginRankingCriterion":
        x1, x2, y = inputs
        margin = args["margin"]
        x1[np.abs(margin - y * (x1 - x2)) < 0.1] += 0.1
        x2[np.abs(margin - y * (x1 - x2)) < 0.1] -= 0.1


@pytest.mark.parametrize("op", FORWARD_OPS)
@given(data=st.data())
def test_gradient_matches_finite_differences(op: str, data: st.DataObject) -> None:
    strategy, to_inputs = OP_INPUTS[op]
    inputs, args = to_inputs(data.draw(strategy))
    inputs = [np.array(a, copy=True) for a in inputs]
    _nudge_off_kinks(op, inputs, args)
    fwd = _forward_def(op, inputs, args)
    grad_defs = registry.get_gradient_defs(fwd)
    # objective 0.5 * sum(Y^2), whose output gradient is Y itself (Caffe2's GradientChecker.CheckSimple)
    def objective(values: list[np.ndarray]) -> float:
        outs = registry.run(op, *values, **args)
        return 0.5 * sum(float(np.sum(o.astype(np.float64) ** 2)) for o in outs)

    outs = registry.run(op, *inputs, **args)
    ws = dict(zip(fwd.inputs, inputs, strict=True))
    ws.update({f"{n}_grad": o for n, o in zip(fwd.outputs, outs, strict=True)})
    ws = _run_defs(grad_defs, ws, "kernel")
    step = 1e-6
    for index, name in enumerate(fwd.inputs):
        grad_name = f"{name}_grad"
        if grad_name not in ws or inputs[index].dtype.kind != "f":
            continue
        analytic = ws[grad_name].astype(np.float64).ravel()
        numeric = np.zeros_like(analytic)
        x = inputs[index]
        for k in range(x.size):
            plus = [a.copy() for a in inputs]
            minus = [a.copy() for a in inputs]
            plus[index].reshape(-1)[k] += step
            minus[index].reshape(-1)[k] -= step
            numeric[k] = (objective(plus) - objective(minus)) / (2 * step)
        numeric *= DELIBERATE_GRADIENT_SIGN.get(op, 1.0)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=f"{op} d/d{name}")


@pytest.mark.parametrize("op", FORWARD_OPS)
@given(data=st.data())
def test_shape_inference_matches_outputs(op: str, data: st.DataObject) -> None:
    strategy, to_inputs = OP_INPUTS[op]
    inputs, args = to_inputs(data.draw(strategy))
    s = registry.schema(op)
    inferred = s.infer_shapes([(a.shape, a.dtype) for a in inputs], args)
    if inferred is None:
        pytest.skip(f"{op} declares no shape inference")
    outs = registry.run(op, *inputs, **args)
    assert [(tuple(o.shape), o.dtype) for o in outs] == [(tuple(sh), np.dtype(dt)) for sh, dt in inferred]


@pytest.mark.parametrize("op", FORWARD_OPS)
@given(data=st.data())
def test_cpu_matches_cuda(op: str, device: str, data: st.DataObject) -> None:
    strategy, to_inputs = OP_INPUTS[op]
    inputs, args = to_inputs(data.draw(strategy))
    inputs = _cast_scores(op, inputs, np.float32)
    if device not in registry.devices(op):
        pytest.skip(f"{op} has no {device} kernel (the torch front end runs the CPU kernel on host copies)")
    cpu = registry.run(op, *inputs, **args)
    other = registry.run(op, *inputs, device=device, **args)
    for a, b in zip(cpu, other, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # Caffe2's assertDeviceChecks threshold


def _second_order_cases(op: str, data: st.DataObject) -> tuple[OperatorDef, dict[str, np.ndarray]]:
    """A gradient op of ``op`` that has a gradient itself, and a workspace with its inputs filled."""
    strategy, to_inputs = OP_INPUTS[op]
    inputs, args = to_inputs(data.draw(strategy))
    inputs = [np.array(a, copy=True) for a in inputs]
    _nudge_off_kinks(op, inputs, args)
    fwd = _forward_def(op, inputs, args)
    ws = dict(zip(fwd.inputs, inputs, strict=True))
    outs = registry.run(op, *inputs, **args)
    rng = np.random.default_rng(0)
    ws.update({f"{n}_grad": rng.standard_normal(o.shape) for n, o in zip(fwd.outputs, outs, strict=True)})
    grad_defs = [d for d in registry.get_gradient_defs(fwd) if registry.has_gradient(d.type)]
    return grad_defs, ws


@pytest.mark.parametrize("op", FORWARD_OPS)
@given(data=st.data())
def test_second_derivatives_match_reference_and_finite_differences(op: str, data: st.DataObject) -> None:
    grad_defs, ws = _second_order_cases(op, data)
    rng = np.random.default_rng(1)
    for gdef in grad_defs:
        gg_defs = registry.get_gradient_defs(gdef)
        feeds = _run_defs([gdef], ws, "kernel")
        for name in gdef.outputs:
            feeds[f"{name}_grad"] = rng.standard_normal(feeds[name].shape)
        fast = _run_defs(gg_defs, feeds, "kernel")
        ref = _run_defs(gg_defs, feeds, "reference")
        produced = {b for d in gg_defs for b in d.outputs}
        for name in produced:
            np.testing.assert_allclose(fast[name], ref[name], rtol=1e-10, atol=1e-12, err_msg=f"{gdef.type} {name}")

        # finite differences of <V, gradient op outputs> with respect to each float input
        def objective(values: dict[str, np.ndarray], gdef: OperatorDef = gdef, feeds: dict = feeds) -> float:
            outs = registry.run(gdef.type, *(values[b] for b in gdef.inputs), **gdef.args)
            return sum(float(np.sum(o * feeds[f"{n}_grad"])) for n, o in zip(gdef.outputs, outs, strict=True))

        def accumulated(blob: str) -> np.ndarray:
            # several ops may write one gradient blob; they add up (Caffe2's gradient accumulation)
            total = 0.0
            for d in gg_defs:
                one = _run_defs([d], feeds, "kernel")
                total = total + sum(one[o] for o in d.outputs if o == blob)
            return np.asarray(total, dtype=np.float64)

        for blob in gdef.inputs:
            gblob = f"{blob}_grad"
            if gblob not in produced or feeds[blob].dtype.kind != "f":
                continue
            analytic = np.broadcast_to(accumulated(gblob), feeds[blob].shape).ravel()
            numeric = np.zeros(feeds[blob].size)
            for k in range(feeds[blob].size):
                plus, minus = dict(feeds), dict(feeds)
                plus[blob] = feeds[blob].astype(np.float64).copy()
                minus[blob] = feeds[blob].astype(np.float64).copy()
                plus[blob].reshape(-1)[k] += 1e-6
                minus[blob].reshape(-1)[k] -= 1e-6
                numeric[k] = (objective(plus) - objective(minus)) / 2e-6
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=f"{gdef.type} d/d{blob}")


def test_every_gradient_operator_is_twice_differentiable() -> None:
    # double backward and Hessians need the gradient of every gradient op of a differentiable loss
    for op in ("MarginRankingCriterion", "PairWiseLoss", "PairWiseHingeLoss"):
        for gop in registry.gradient_op_names(op):
            assert registry.has_gradient(gop), gop
