r"""Negative (:math:`y = -x`) and NegateGradient (identity forward, :math:`-\partial L/\partial y` backward).

Both are elementwise over any shape. The gradient of each is another ``Negative``:
:math:`\partial L/\partial x = -\partial L/\partial y`, which makes ``NegateGradient`` the gradient-reversal
layer of domain-adversarial training (Ganin & Lempitsky, 2015).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, tl, triton
from pairloss._checks import as_array
from pairloss.registry import (
    GI,
    GO,
    OperatorDef,
    gradient_def,
    operator_schema,
    register_cpu_operator,
    register_cuda_operator,
    register_gradient,
)

__all__ = ["NEGATE_GRADIENT_SCHEMA", "NEGATIVE_SCHEMA", "negate_gradient", "negative"]

NEGATIVE_SCHEMA = (
    operator_schema("Negative")
    .num_inputs(1)
    .num_outputs(1)
    .input(0, "X", "Tensor of any shape and any numeric dtype (integer, unsigned, float, complex).")
    .output(0, "Y", "-X, with the shape and dtype of X. Integer minimum values wrap (two's complement).")
    .allow_inplace({(0, 0)})
    .identical_type_and_shape(0)
    .inherit_onnx_schema("Neg")
    .set_doc("Computes the element-wise negative of the input: Y = -X.")
)

NEGATE_GRADIENT_SCHEMA = (
    operator_schema("NegateGradient")
    .num_inputs(1)
    .num_outputs(1)
    .input(0, "X", "Tensor of any shape and dtype.")
    .output(0, "Y", "A copy of X (X itself when run in place).")
    .allow_inplace({(0, 0)})
    .identical_type_and_shape(0)
    .inherit_onnx_schema("Identity")
    .set_doc(
        "NegateGradient copies its input to its output in the forward pass and flips the sign of the "
        "output gradient in the backward pass (the gradient-reversal layer)."
    )
)


def _check_numeric(x: npt.ArrayLike, op: str) -> np.ndarray:
    arr = as_array(f"{op}: X", x)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iufc":
        msg = f"{op}: X must have a numeric dtype (integer, unsigned, float or complex); got dtype={arr.dtype}"
        raise TypeError(msg)
    return arr


# ---- reference --------------------------------------------------------------------------------------
def reference_negative(x: np.ndarray) -> np.ndarray:
    """-x element by element in x's own dtype (multiplying by -1 keeps -0.0 and the integer wrap)."""
    x = _check_numeric(x, "Negative")
    if x.dtype.kind == "u":  # two's complement: -x == ~x + 1 modulo 2**bits
        return np.invert(x) + x.dtype.type(1)
    out = np.empty(x.shape, x.dtype)  # C order: reshape(-1) of any other layout would be a copy, not a view
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    minus_one = x.dtype.type(-1)
    with np.errstate(over="ignore"):
        for i in range(flat_in.size):
            v = flat_in[i]
            # a complex negates part by part: (inf + 0j) * -1 would make the imaginary part NaN
            flat_out[i] = x.dtype.type(complex(-v.real, -v.imag)) if x.dtype.kind == "c" else v * minus_one
    return out


def reference_negate_gradient(x: np.ndarray) -> np.ndarray:
    return np.array(x, copy=True)


# ---- CPU kernels --------------------------------------------------------------------------------------
# NumPy's ufunc is the kernel: it is vectorised for every dtype and layout, handles overlapping outputs,
# wrap-around and complex negation by definition, and is memory-bound. A two-thread Numba loop measured
# 1.4-1.7x faster on an idle machine but 0.6-0.9x (median) on a loaded one (BENCHMARKS.md), and an op
# that must never be slower than np.negative cannot gamble on idle cores.
def negative_cpu(x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    x = _check_numeric(x, "Negative")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype):
        msg = f"Negative: out must have X's shape {x.shape} and dtype {x.dtype}; got {out.shape}, {out.dtype}"
        raise ValueError(msg)
    return np.negative(x, out=out)


def negate_gradient_cpu(x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    if out is x:  # in place: the identity has nothing to do
        return x
    if out is None:
        return np.array(x, copy=True)
    np.copyto(out, x)
    return out


# ---- CUDA kernels (torch tensors) ---------------------------------------------------------------------
negative_cuda: Any = None
negate_gradient_cuda: Any = None
if HAS_TRITON:

    @triton.jit
    def _negative_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(y_ptr + offsets, -tl.load(x_ptr + offsets, mask=mask), mask=mask)

    def negative_cuda(x: Any) -> Any:  # type: ignore[no-redef]
        import torch

        if x.dtype in (torch.bool,) or x.dtype.is_complex:
            return torch.neg(x)
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        if n:
            _negative_kernel[(triton.cdiv(n, 4096),)](x, y, n, BLOCK=4096)
        return y

    def negate_gradient_cuda(x: Any) -> Any:  # type: ignore[no-redef]
        return x.clone()


# ---- gradients ----------------------------------------------------------------------------------------
def _negative_of_output_gradient(op: OperatorDef) -> list[OperatorDef]:
    if len(op.inputs) != 1:
        msg = f"{op.type} gradient expects 1 input; got {len(op.inputs)}"
        raise ValueError(msg)
    return [gradient_def(op, "Negative", [GO(0)], [GI(0)], copy_args=False)]


register_cpu_operator(NEGATIVE_SCHEMA, negative_cpu, reference=reference_negative)
register_cuda_operator(NEGATIVE_SCHEMA, negative_cuda)
register_gradient(NEGATIVE_SCHEMA, _negative_of_output_gradient)

register_cpu_operator(NEGATE_GRADIENT_SCHEMA, negate_gradient_cpu, reference=reference_negate_gradient)
register_cuda_operator(NEGATE_GRADIENT_SCHEMA, negate_gradient_cuda)
register_gradient(NEGATE_GRADIENT_SCHEMA, _negative_of_output_gradient)


# ---- public NumPy functions ---------------------------------------------------------------------------
def negative(x: npt.ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """Element-wise negative, ``y = -x``, for any shape and numeric dtype.

    Args:
        x: Array of any shape; integer, unsigned, float or complex dtype.
        out: Optional output array of x's shape and dtype; ``out=x`` negates in place.

    Returns:
        ``-x`` with the shape and dtype of ``x``. ``-(+0.0)`` is ``-0.0``; integer minimums wrap.

    Raises:
        TypeError: ``x`` is bool, string or object.

    Examples:
        >>> import numpy as np
        >>> negative(np.array([[1, -2], [3, 0]], np.int32))
        array([[-1,  2],
               [-3,  0]], dtype=int32)
    """
    return negative_cpu(np.asarray(x), out=out)


def negate_gradient(x: npt.ArrayLike) -> np.ndarray:
    """Identity in the forward pass (a copy of ``x``); its gradient is ``-dy`` (see the registry).

    Examples:
        >>> import numpy as np
        >>> negate_gradient(np.array([1.5, -2.0]))
        array([ 1.5, -2. ])
    """
    return negate_gradient_cpu(np.asarray(x))
