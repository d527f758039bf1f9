"""A replica of Caffe2's test harness (hypothesis_test_util + gradient_checker), so its tests port 1:1."""

from __future__ import annotations

from typing import Any

import numpy as np

from pairloss import registry
from pairloss.registry import OperatorDef


def assert_reference_checks(op: str, inputs: list[np.ndarray], reference: Any, *, threshold: float = 1e-4,
                            **args: Any) -> None:
    """assertReferenceChecks: threshold used as both atol and rtol."""
    outs = registry.run(op, *inputs, **args)
    expected = reference(*inputs)
    for out, exp in zip(outs, expected, strict=True):
        np.testing.assert_allclose(out, exp, atol=threshold, rtol=threshold)


def assert_gradient_checks(op: str, inputs: list[np.ndarray], input_index: int, *, stepsize: float = 0.05,
                           threshold: float = 0.005, **args: Any) -> None:
    """GradientChecker.CheckSimple: loss 0.5*sum(Y^2), fed output gradient Y, central differences."""
    s = registry.schema(op)
    names = tuple(s.inputs[i].name for i in range(len(inputs)))
    fwd = OperatorDef(op, names, tuple(o.name for o in s.outputs), args)
    outs = registry.run(op, *inputs, **args)
    ws = dict(zip(names, inputs, strict=True))
    ws.update({f"{o.name}_grad": y for o, y in zip(s.outputs, outs, strict=True)})
    for d in registry.get_gradient_defs(fwd):
        for name, value in zip(d.outputs, registry.run(d.type, *(ws[b] for b in d.inputs), **d.args), strict=True):
            ws[name] = value
    grad = ws[f"{names[input_index]}_grad"]
    x = inputs[input_index]
    estimate = np.zeros_like(x)
    for k in range(x.size):
        pos = [a.copy() for a in inputs]
        neg = [a.copy() for a in inputs]
        pos[input_index].reshape(-1)[k] += stepsize
        neg[input_index].reshape(-1)[k] -= stepsize
        loss_pos = sum(0.5 * float(np.sum(y.astype(np.float64) ** 2)) for y in registry.run(op, *pos, **args))
        loss_neg = sum(0.5 * float(np.sum(y.astype(np.float64) ** 2)) for y in registry.run(op, *neg, **args))
        estimate.reshape(-1)[k] = (loss_pos - loss_neg) / stepsize / 2
    assert grad.shape == estimate.shape
    assert np.isclose(grad, estimate, atol=threshold, rtol=threshold).all(), (grad, estimate)
