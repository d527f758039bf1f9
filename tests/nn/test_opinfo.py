"""torch's own OpInfo sample inputs for ``nn.functional.margin_ranking_loss`` through
``pairloss.nn.functional.margin_ranking_loss``: equal values and gradients, bit for bit in float32 and
float64, apart from the documented rules:

* shapes must match: torch's broadcasting sample raises a ``ValueError`` naming all three shapes;
* targets are -1/+1: OpInfo draws arbitrary floats, so both sides get ``sign(target)``;
* a NaN distance passes the gradient (Caffe2's rule) where torch's ``clamp_min`` gives 0: those entries
  are checked against the rule instead.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch

import pairloss.nn.functional as PF

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.fixture(scope="module")
def opinfo() -> Any:
    try:
        import expecttest  # noqa: F401
    except ImportError:
        # torch's test helpers import expecttest for their TestCase class only; the sample generators used
        # here do not touch it
        stub = types.ModuleType("expecttest")
        stub.TestCase = type("TestCase", (), {})  # type: ignore[attr-defined]
        sys.modules["expecttest"] = stub
    from torch.testing._internal.common_methods_invocations import op_db

    return next(op for op in op_db if op.name == "nn.functional.margin_ranking_loss")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opinfo_reference_inputs_give_torchs_values_and_gradients(opinfo: Any, dtype: torch.dtype) -> None:
    exact = dtype in (torch.float32, torch.float64)
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-2, "atol": 1e-2}
    compared = broadcast = 0
    for sample in opinfo.reference_inputs("cpu", dtype, requires_grad=True):  # the sample inputs, and more
        x1, (x2, target), kwargs = sample.input, sample.args, sample.kwargs
        target = torch.where(target.detach() >= 0, 1.0, -1.0).to(dtype)
        if not (x1.shape == x2.shape == target.shape):
            with pytest.raises(ValueError, match="must have the same shape"):
                PF.margin_ranking_loss(x1, x2, target, **kwargs)
            broadcast += 1
            continue
        ours_in = [t.detach().clone().requires_grad_() for t in (x1, x2)]
        theirs_in = [t.detach().clone().requires_grad_() for t in (x1, x2)]
        ours = PF.margin_ranking_loss(*ours_in, target, **kwargs)
        theirs = torch.nn.functional.margin_ranking_loss(*theirs_in, target, **kwargs)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, equal_nan=True, **tol)
        g = torch.randn(ours.shape, generator=torch.Generator().manual_seed(compared), dtype=torch.float64).to(dtype)
        ours_grads = torch.autograd.grad(ours, ours_in, g)
        theirs_grads = torch.autograd.grad(theirs, theirs_in, g)
        nan = torch.isnan(-target * (x1.detach() - x2.detach()))
        scale = g if ours.shape == x1.shape else g.expand(x1.shape) / (x1.numel() if kwargs.get("reduction",
                                                                                               "mean") == "mean" else 1)
        for k, (a, b) in enumerate(zip(ours_grads, theirs_grads, strict=True)):
            torch.testing.assert_close(a[~nan], b[~nan], **tol)
            rule = (-target if k == 0 else target) * scale.to(dtype)  # Caffe2: the NaN entry passes the gradient
            torch.testing.assert_close(a[nan], rule[nan], **tol)
        compared += 1
    assert compared >= 30 and broadcast >= 1, (compared, broadcast)
