r"""MarginRankingCriterion: :math:`\ell_i = \max(0, -y_i (x^{(1)}_i - x^{(2)}_i) + \text{margin})`, elementwise.

:math:`y_i = +1` says the first input should rank higher, :math:`y_i = -1` the second. No reduction.
Semantics follow Caffe2's CPU op: a NaN distance stays NaN in the forward and passes the gradient, and at the
kink (distance exactly 0) the gradient is passed, :math:`\partial\ell/\partial x^{(1)} = -y\,g`.
Unlike Caffe2, shapes must match exactly, labels must be -1/+1 and float16/float64 are accepted
(arithmetic runs in float64 on CPU; outputs keep the input dtype).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, serial_twin, tl, triton
from pairloss._checks import as_float_array, as_sign_labels, check_same_shape
from pairloss.registry import (
    GI,
    GO,
    I,
    OperatorDef,
    gradient_def,
    operator_schema,
    register_cpu_operator,
    register_cuda_operator,
    register_gradient,
)

__all__ = ["GRADIENT_SCHEMA", "SCHEMA", "margin_ranking_criterion", "margin_ranking_criterion_gradient"]

_MARGIN_DOC = "Required score gap between the preferred and the other item (Caffe2 default 1.0)."

SCHEMA = (
    operator_schema("MarginRankingCriterion")
    .num_inputs(3)
    .num_outputs(1)
    .input(0, "X1", "Scores of the first item of each pair; float16/32/64, any shape.")
    .input(1, "X2", "Scores of the second item; same shape as X1.")
    .input(2, "Y", "+1 where X1 should rank higher, -1 where X2 should; integer or float, same shape as X1.")
    .output(0, "loss", "Per-pair loss max(0, -Y*(X1-X2) + margin); shape and dtype of X1.")
    .arg("margin", float, default=1.0, doc=_MARGIN_DOC)
    .identical_type_and_shape(0)
    .onnx_decomposition("pairloss.onnx:margin_ranking_criterion_decomposition")
    .set_doc(__doc__)
)

GRADIENT_SCHEMA = (
    operator_schema("MarginRankingCriterionGradient")
    .num_inputs(4)
    .num_outputs(2)
    .input(0, "X1", "Forward input X1.")
    .input(1, "X2", "Forward input X2.")
    .input(2, "Y", "Forward labels Y.")
    .input(3, "loss_grad", "Gradient of the objective with respect to the forward output; shape of X1.")
    .output(0, "X1_grad", "-Y*loss_grad where the hinge is active (distance >= 0 or NaN), else 0.")
    .output(1, "X2_grad", "+Y*loss_grad where the hinge is active, else 0.")
    .arg("margin", float, default=1.0, doc=_MARGIN_DOC)
    .tensor_inference_function(lambda specs, _args: [specs[0], specs[1]])
    .gradient_op()
    .set_doc("Gradient of MarginRankingCriterion with respect to X1 and X2 (Y gets none).")
)


def _prepare(x1: npt.ArrayLike, x2: npt.ArrayLike, y: npt.ArrayLike,
             loss_grad: npt.ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    x1 = as_float_array("X1", x1)
    x2 = as_float_array("X2", x2)
    y = as_sign_labels("Y", y)
    arrays = {"X1": x1, "X2": x2, "Y": y}
    if loss_grad is not None:
        arrays["loss_grad"] = as_float_array("loss_grad", loss_grad)
    check_same_shape(**arrays)
    return tuple(arrays.values())


# ---- reference (float64, one pair at a time) ----------------------------------------------------------
def reference_forward(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, margin: float) -> np.ndarray:
    x1, x2, y = _prepare(x1, x2, y)
    out = np.empty(x1.shape, np.float64)
    a, b, t, o = x1.reshape(-1), x2.reshape(-1), y.reshape(-1), out.reshape(-1)
    for i in range(a.size):
        dist = -float(t[i]) * (float(a[i]) - float(b[i])) + margin
        o[i] = dist if not dist < 0.0 else 0.0  # std::max(dist, 0): a NaN dist stays NaN
    return out.astype(x1.dtype)


def reference_gradient(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, loss_grad: np.ndarray, *,
                       margin: float) -> tuple[np.ndarray, np.ndarray]:
    x1, x2, y, g = _prepare(x1, x2, y, loss_grad)
    dx1, dx2 = np.zeros(x1.shape, np.float64), np.zeros(x2.shape, np.float64)
    a, b, t, gf = x1.reshape(-1), x2.reshape(-1), y.reshape(-1), g.reshape(-1)
    d1, d2 = dx1.reshape(-1), dx2.reshape(-1)
    for i in range(a.size):
        dist = -float(t[i]) * (float(a[i]) - float(b[i])) + margin
        if not dist < 0.0:  # the kink and NaN pass the gradient, as in Caffe2
            d1[i] = -float(t[i]) * float(gf[i])
            d2[i] = float(t[i]) * float(gf[i])
    return dx1.astype(x1.dtype), dx2.astype(x2.dtype)


# ---- CPU kernels --------------------------------------------------------------------------------------
# Fused Numba loops: one read of each input and one write of each output, in float64 whatever the input
# dtype. A float32 or float16 difference is exact in float64 and y is +-1, so the only rounding is the
# one `+ margin` that the float64 reference also does: the kink test `dist < 0` and the value agree with
# the reference bit for bit before the final cast. The loops also count labels other than -1/+1, so Y's
# values are validated in the same pass instead of three extra ones (the error is raised afterwards, by
# the same check `_prepare` uses). A plain prange over elements (Numba hands each thread one contiguous
# range) streams at the copy bandwidth; an explicit chunk loop calling a range function measured half that.
_SERIAL_BELOW = 1 << 15  # below this a parallel launch costs more than the loop


@numba.njit(cache=True, parallel=True, nogil=True)
def _forward_loop(x1, x2, y, margin, out):  # pragma: no cover - compiled
    bad = 0
    for i in numba.prange(x1.size):
        t = np.float64(y[i])
        bad += (t != 1.0) & (t != -1.0)
        dist = -t * (np.float64(x1[i]) - np.float64(x2[i])) + margin
        out[i] = 0.0 if dist < 0.0 else dist  # std::max(dist, 0): NaN stays NaN
    return bad


@numba.njit(cache=True, parallel=True, nogil=True)
def _gradient_loop(x1, x2, y, g, margin, d1, d2):  # pragma: no cover - compiled
    bad = 0
    for i in numba.prange(x1.size):
        t = np.float64(y[i])
        bad += (t != 1.0) & (t != -1.0)
        dist = -t * (np.float64(x1[i]) - np.float64(x2[i])) + margin
        active = 0.0 if dist < 0.0 else t * np.float64(g[i])  # the kink and NaN pass the gradient
        d1[i] = -active
        d2[i] = active
    return bad


_forward_loop_serial = serial_twin(_forward_loop)
_gradient_loop_serial = serial_twin(_gradient_loop)


def _prepare_for_loop(x1: npt.ArrayLike, x2: npt.ArrayLike, y: npt.ArrayLike,
                      loss_grad: npt.ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    """``_prepare`` minus the scan of Y's values, which the loops do; anything unusual takes ``_prepare``."""
    if not (isinstance(y, np.ndarray) and y.dtype.kind in "iuf"):
        return _prepare(x1, x2, y, loss_grad)
    arrays = {"X1": as_float_array("X1", x1), "X2": as_float_array("X2", x2), "Y": y}
    if loss_grad is not None:
        arrays["loss_grad"] = as_float_array("loss_grad", loss_grad)
    check_same_shape(**arrays)
    return tuple(arrays.values())


def _flat(a: np.ndarray) -> np.ndarray:
    """A contiguous 1-D view (a copy only when strided); float16 widens, Numba has no float16 arithmetic."""
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    return np.ascontiguousarray(a).reshape(-1)


def _kernel_dtype(dtype: np.dtype) -> np.dtype:
    # float16 results are written in float64 and rounded once at the end, as the reference does
    return np.dtype(np.float64) if dtype == np.float16 else dtype


def forward_cpu(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, margin: float) -> np.ndarray:
    x1, x2, y = _prepare_for_loop(x1, x2, y)
    out = np.empty(x1.size, _kernel_dtype(x1.dtype))
    args = (_flat(x1), _flat(x2), _flat(y), float(margin), out)
    bad = (_forward_loop_serial if x1.size < _SERIAL_BELOW else _forward_loop)(*args)
    if bad:
        as_sign_labels("Y", y)  # raises, naming the offending values
    return out.reshape(x1.shape).astype(x1.dtype, copy=False)


def gradient_cpu(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, loss_grad: np.ndarray, *,
                 margin: float) -> tuple[np.ndarray, np.ndarray]:
    x1, x2, y, g = _prepare_for_loop(x1, x2, y, loss_grad)
    d1 = np.empty(x1.size, _kernel_dtype(x1.dtype))
    d2 = np.empty(x2.size, _kernel_dtype(x2.dtype))
    args = (_flat(x1), _flat(x2), _flat(y), _flat(g), float(margin), d1, d2)
    bad = (_gradient_loop_serial if x1.size < _SERIAL_BELOW else _gradient_loop)(*args)
    if bad:
        as_sign_labels("Y", y)
    return (d1.reshape(x1.shape).astype(x1.dtype, copy=False),
            d2.reshape(x2.shape).astype(x2.dtype, copy=False))


# ---- CUDA kernels (torch tensors; the CPU kernels' NaN and kink rules on every device) ---------------
forward_cuda: Any = None
gradient_cuda: Any = None


def _check_cuda_inputs(**tensors: Any) -> None:
    """The checks of ``_prepare`` on tensors, so the kernels never index past an input."""
    import torch

    for name in ("X1", "X2", "loss_grad"):
        t = tensors.get(name)
        if t is not None and t.dtype not in (torch.float16, torch.float32, torch.float64):
            msg = f"{name} must be a float16, float32 or float64 tensor; got dtype={t.dtype}"
            raise TypeError(msg)
    y = tensors["Y"]
    if y.dtype == torch.bool or y.is_complex():
        msg = f"Y must be an integer or float tensor of -1/+1; got dtype={y.dtype}"
        raise TypeError(msg)
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{n}: {s}" for n, s in shapes.items())
        msg = f"inputs must have the same shape (no broadcasting); got {listing}"
        raise ValueError(msg)
    bad = (y != 1) & (y != -1)
    if bool(bad.any()):
        msg = f"Y must contain only -1 and +1; got {torch.unique(y[bad]).tolist()[:8]}"
        raise ValueError(msg)


if HAS_TRITON:
    # float64 arithmetic as on CPU, so kink and NaN decisions agree bit for bit across devices (the op is
    # memory-bound: float64 costs nothing measurable). margin comes through a one-element float64 tensor
    # because Triton passes a Python float as float32.

    @triton.jit
    def _forward_kernel(x1_ptr, x2_ptr, y_ptr, out_ptr, n, margin_ptr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        margin = tl.load(margin_ptr)
        a = tl.load(x1_ptr + offs, mask=mask).to(tl.float64)
        b = tl.load(x2_ptr + offs, mask=mask).to(tl.float64)
        t = tl.load(y_ptr + offs, mask=mask).to(tl.float64)
        dist = -t * (a - b) + margin
        tl.store(out_ptr + offs, tl.where(dist < 0, 0.0, dist).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gradient_kernel(x1_ptr, x2_ptr, y_ptr, g_ptr, d1_ptr, d2_ptr, n, margin_ptr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        margin = tl.load(margin_ptr)
        a = tl.load(x1_ptr + offs, mask=mask).to(tl.float64)
        b = tl.load(x2_ptr + offs, mask=mask).to(tl.float64)
        t = tl.load(y_ptr + offs, mask=mask).to(tl.float64)
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float64)
        dist = -t * (a - b) + margin
        active = tl.where(dist < 0, 0.0, t * g)
        tl.store(d1_ptr + offs, (-active).to(d1_ptr.dtype.element_ty), mask=mask)
        tl.store(d2_ptr + offs, active.to(d2_ptr.dtype.element_ty), mask=mask)

    def forward_cuda(x1: Any, x2: Any, y: Any, *, margin: float) -> Any:  # type: ignore[no-redef]
        import torch

        _check_cuda_inputs(X1=x1, X2=x2, Y=y)
        x1, x2, y = x1.contiguous(), x2.contiguous(), y.contiguous()
        out = torch.empty_like(x1)
        n = x1.numel()
        if n:
            m = torch.tensor([float(margin)], dtype=torch.float64, device=x1.device)
            _forward_kernel[(triton.cdiv(n, 2048),)](x1, x2, y, out, n, m, BLOCK=2048)
        return out

    def gradient_cuda(x1: Any, x2: Any, y: Any, loss_grad: Any, *, margin: float) -> Any:  # type: ignore[no-redef]
        import torch

        _check_cuda_inputs(X1=x1, X2=x2, Y=y, loss_grad=loss_grad)
        x1, x2, y, g = x1.contiguous(), x2.contiguous(), y.contiguous(), loss_grad.contiguous()
        d1, d2 = torch.empty_like(x1), torch.empty_like(x2)
        n = x1.numel()
        if n:
            m = torch.tensor([float(margin)], dtype=torch.float64, device=x1.device)
            _gradient_kernel[(triton.cdiv(n, 2048),)](x1, x2, y, g, d1, d2, n, m, BLOCK=2048)
        return d1, d2


# ---- gradient definition ------------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    # Y is a label: it gets no gradient. The forward args (margin) are copied, as SingleGradientDef does.
    return [gradient_def(op, "MarginRankingCriterionGradient", [I(0), I(1), I(2), GO(0)], [GI(0), GI(1)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_cuda_operator(SCHEMA, forward_cuda)
register_gradient(SCHEMA, _gradient_maker)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)
register_cuda_operator(GRADIENT_SCHEMA, gradient_cuda)


# ---- public NumPy functions ---------------------------------------------------------------------------
def margin_ranking_criterion(x1: npt.ArrayLike, x2: npt.ArrayLike, y: npt.ArrayLike, *,
                             margin: float = SCHEMA.get_arg("margin").default) -> np.ndarray:
    r"""Elementwise margin ranking loss, Caffe2's MarginRankingCriterion (no reduction).

    .. math:: \ell_i = \max\bigl(0,\; -y_i\,(x^{(1)}_i - x^{(2)}_i) + \text{margin}\bigr)

    Args:
        x1: Scores of the first item of each pair, float16/32/64, any shape.
        x2: Scores of the second item, same shape as ``x1``.
        y: +1 where ``x1`` should rank higher, -1 where ``x2`` should; same shape.
        margin: Required gap (Caffe2's default 1.0; ``torch.nn.MarginRankingLoss`` uses 0.0).

    Returns:
        The per-pair loss, with the shape and dtype of ``x1``.

    Raises:
        ValueError: shapes differ, or ``y`` holds a value other than -1/+1.
        TypeError: scores are not floating point.

    Examples:
        >>> import numpy as np
        >>> x1 = np.array([0.8, 0.1, 0.5], np.float32); x2 = np.array([0.2, 0.4, 0.5], np.float32)
        >>> margin_ranking_criterion(x1, x2, np.array([1, -1, 1], np.int32), margin=0.1)
        array([0. , 0. , 0.1], dtype=float32)
    """
    return forward_cpu(x1, x2, y, margin=SCHEMA.get_arg("margin").coerce(SCHEMA.name, margin))


def margin_ranking_criterion_gradient(x1: npt.ArrayLike, x2: npt.ArrayLike, y: npt.ArrayLike,
                                      loss_grad: npt.ArrayLike, *,
                                      margin: float = SCHEMA.get_arg("margin").default
                                      ) -> tuple[np.ndarray, np.ndarray]:
    """Gradients ``(dloss/dx1, dloss/dx2)`` of :func:`margin_ranking_criterion` given ``loss_grad``.

    Examples:
        >>> import numpy as np
        >>> margin_ranking_criterion_gradient([0.0], [0.0], [1], [2.0])
        (array([-2.]), array([2.]))
    """
    return gradient_cpu(np.asarray(x1), np.asarray(x2), y, loss_grad,
                        margin=GRADIENT_SCHEMA.get_arg("margin").coerce(GRADIENT_SCHEMA.name, margin))
