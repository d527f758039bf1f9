r"""MarginRankingCriterion: :math:`\ell_i = \max(0, -y_i (x^{(1)}_i - x^{(2)}_i) + \text{margin})`, elementwise.

:math:`y_i = +1` says the first input should rank higher, :math:`y_i = -1` the second. No reduction.
Semantics follow Caffe2's CPU op: a NaN distance stays NaN in the forward and passes the gradient, and at the
kink (distance exactly 0) the gradient is passed, :math:`\partial\ell/\partial x^{(1)} = -y\,g`.
Unlike Caffe2, shapes must match exactly, labels must be -1/+1 and float16/float64 are accepted.
Arithmetic runs in the inputs' dtype (float32 for float16) on every device, as in torch's
``margin_ranking_loss``, so values, kink decisions and gradients equal torch's bit for bit in float32
and float64; outputs keep the input dtype.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, float64_bits, parallel_launch, serial_twin, tl, triton
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


# ---- reference (one pair at a time, torch's formula in the arithmetic dtype) -------------------------
def _distance(a: Any, b: Any, t: Any, margin: Any) -> Any:
    """-t * (a - b) + margin with NumPy scalars: each operation rounds in the scalars' dtype."""
    return -type(a)(t) * (a - b) + margin


def reference_forward(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, margin: float) -> np.ndarray:
    x1, x2, y = _prepare(x1, x2, y)
    work = arithmetic_dtype(x1.dtype, x2.dtype).type
    out = np.empty(x1.shape, np.float64)
    a, b, t, o = x1.reshape(-1), x2.reshape(-1), y.reshape(-1), out.reshape(-1)
    for i in range(a.size):
        dist = _distance(work(a[i]), work(b[i]), t[i], work(margin))
        o[i] = dist if not dist < 0.0 else 0.0  # std::max(dist, 0): a NaN dist stays NaN
    return out.astype(x1.dtype)


def reference_gradient(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, loss_grad: np.ndarray, *,
                       margin: float) -> tuple[np.ndarray, np.ndarray]:
    x1, x2, y, g = _prepare(x1, x2, y, loss_grad)
    work = arithmetic_dtype(x1.dtype, x2.dtype).type
    dx1, dx2 = np.zeros(x1.shape, np.float64), np.zeros(x2.shape, np.float64)
    a, b, t, gf = x1.reshape(-1), x2.reshape(-1), y.reshape(-1), g.reshape(-1)
    d1, d2 = dx1.reshape(-1), dx2.reshape(-1)
    for i in range(a.size):
        dist = _distance(work(a[i]), work(b[i]), t[i], work(margin))
        if not dist < 0.0:  # the kink and NaN pass the gradient, as in Caffe2
            d1[i] = -float(t[i]) * float(gf[i])
            d2[i] = float(t[i]) * float(gf[i])
    return dx1.astype(x1.dtype), dx2.astype(x2.dtype)


# ---- CPU kernels --------------------------------------------------------------------------------------
# Fused Numba loops: one read of each input and one write of each output. Arithmetic runs in the
# inputs' dtype, float32 for float16 (torch computes in the input dtype too): the difference X1 - X2 is
# rounded once in that dtype, `-Y * d` is an exact sign flip and `+ margin` (margin rounded to that
# dtype) is the one other rounding, exactly torch's `(-target * (input1 - input2) + margin)`. So the
# kink test `dist < 0`, the values and the gradients equal torch's bit for bit in float32 and float64:
# for float32 x1=1.1, x2=0.1, margin=1 the float32 difference is exactly 1, the distance 0, and the
# gradient passes, where a float64 difference would put the pair just inside the margin.
# The loops also count labels other than -1/+1, so Y's values are validated in the same pass instead of
# three extra ones (the error is raised afterwards, by the same check `_prepare` uses). A plain prange
# over elements (Numba hands each thread one contiguous range) streams at the copy bandwidth.
_SERIAL_BELOW = 1 << 15  # below this a parallel launch costs more than the loop


@numba.njit(cache=True, parallel=True, nogil=True)
def _forward_loop(x1, x2, y, margin, out):  # pragma: no cover - compiled
    bad = 0
    for i in numba.prange(x1.size):
        t = y[i]
        bad += (t != 1) & (t != -1)
        d = x1[i] - x2[i]
        dist = (d if t < 0 else -d) + margin  # -t * d + margin, t = +-1
        out[i] = 0.0 if dist < 0.0 else dist  # std::max(dist, 0): NaN stays NaN
    return bad


@numba.njit(cache=True, parallel=True, nogil=True)
def _gradient_loop(x1, x2, y, g, margin, d1, d2):  # pragma: no cover - compiled
    bad = 0
    for i in numba.prange(x1.size):
        t = y[i]
        bad += (t != 1) & (t != -1)
        d = x1[i] - x2[i]
        dist = (d if t < 0 else -d) + margin
        gi = g[i]
        v = gi if t < 0 else -gi  # -t * g
        active = not dist < 0.0  # the kink and NaN pass the gradient
        d1[i] = v if active else 0.0
        d2[i] = -v if active else 0.0
    return bad


_forward_loop_serial = serial_twin(_forward_loop)
_gradient_loop_serial = serial_twin(_gradient_loop)


def _prepare_for_loop(x1: npt.ArrayLike, x2: npt.ArrayLike, y: npt.ArrayLike,
                      loss_grad: npt.ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    """``_prepare`` minus the scan of Y's values, which the loops do; anything unusual takes ``_prepare``."""
    if not (type(y) is np.ndarray and y.dtype.kind in "iuf" and y.dtype.isnative):  # masked, big-endian: _prepare
        return _prepare(x1, x2, y, loss_grad)
    arrays = {"X1": as_float_array("X1", x1), "X2": as_float_array("X2", x2), "Y": y}
    if loss_grad is not None:
        arrays["loss_grad"] = as_float_array("loss_grad", loss_grad)
    check_same_shape(**arrays)
    return tuple(arrays.values())


def arithmetic_dtype(*dtypes: Any) -> np.dtype:
    """The dtype the kernels compute in: the inputs' common float dtype, float32 for float16."""
    return np.result_type(np.float32, *dtypes)


def _labels(y: np.ndarray) -> np.ndarray:
    """Y as a contiguous 1-D array the loops can read (Numba has no float16 arithmetic)."""
    return np.ascontiguousarray(y, dtype=np.float32 if y.dtype == np.float16 else y.dtype).reshape(-1)


def _flat(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A contiguous 1-D view in the arithmetic dtype (a copy only when strided or converted)."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def forward_cpu(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, margin: float) -> np.ndarray:
    x1, x2, y = _prepare_for_loop(x1, x2, y)
    work = arithmetic_dtype(x1.dtype, x2.dtype)
    out = np.empty(x1.size, work)
    args = (_flat(x1, work), _flat(x2, work), _labels(y), work.type(margin), out)
    with parallel_launch(x1.size >= _SERIAL_BELOW) as parallel:
        bad = (_forward_loop if parallel else _forward_loop_serial)(*args)
    if bad:
        as_sign_labels("Y", y)  # raises, naming the offending values
    return out.reshape(x1.shape).astype(x1.dtype, copy=False)


def gradient_cpu(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, loss_grad: np.ndarray, *,
                 margin: float) -> tuple[np.ndarray, np.ndarray]:
    x1, x2, y, g = _prepare_for_loop(x1, x2, y, loss_grad)
    work = arithmetic_dtype(x1.dtype, x2.dtype)
    d1, d2 = np.empty(x1.size, work), np.empty(x2.size, work)
    args = (_flat(x1, work), _flat(x2, work), _labels(y), _flat(g, work),
            work.type(margin), d1, d2)
    with parallel_launch(x1.size >= _SERIAL_BELOW) as parallel:
        bad = (_gradient_loop if parallel else _gradient_loop_serial)(*args)
    if bad:
        as_sign_labels("Y", y)
    return (d1.reshape(x1.shape).astype(x1.dtype, copy=False),
            d2.reshape(x2.shape).astype(x2.dtype, copy=False))


# ---- CUDA kernels (torch tensors; the CPU kernels' arithmetic, NaN and kink rules on every device) ---
forward_cuda: Any = None
gradient_cuda: Any = None
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _check_cuda_inputs(**tensors: Any) -> None:
    """The dtype and shape checks of ``_prepare`` on tensors, so the kernels never index past an input.

    Y's values are checked by the kernels themselves (they count labels other than -1/+1 in the same
    pass) and reported by :func:`_raise_if_bad_labels`: one host synchronisation per call.
    """
    for name in ("X1", "X2", "loss_grad"):
        t = tensors.get(name)
        if t is not None and str(t.dtype).removeprefix("torch.") not in _FLOATS:
            msg = f"{name} must be a float16, bfloat16, float32 or float64 tensor; got dtype={t.dtype}"
            raise TypeError(msg)
    y = tensors["Y"]
    if y.dtype.is_complex or str(y.dtype) == "torch.bool":
        msg = f"Y must be an integer or float tensor of -1/+1; got dtype={y.dtype}"
        raise TypeError(msg)
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{n}: {s}" for n, s in shapes.items())
        msg = f"inputs must have the same shape (no broadcasting); got {listing}"
        raise ValueError(msg)
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        msg = f"inputs must be on one device; got {sorted(str(d) for d in devices)}"
        raise ValueError(msg)


def _raise_if_bad_labels(bad_count: Any, y: Any) -> None:
    if int(bad_count.item()):
        import torch

        bad = y[(y != 1) & (y != -1)]
        msg = (f"Y must contain only -1 and +1 (+1: the first input should rank higher); "
               f"got {torch.unique(bad).tolist()[:8]}")
        raise ValueError(msg)


if HAS_TRITON:

    @triton.jit
    def _load_distance(x1_ptr, x2_ptr, y_ptr, offs, mask, margin_arg, IS_F64: tl.constexpr):
        # torch's -t * (x1 - x2) + margin in the arithmetic dtype; margin is a float32 scalar, or the
        # bits of a float64 one (Triton passes Python floats as float32)
        if IS_F64:
            margin = margin_arg.to(tl.int64).to(tl.float64, bitcast=True)
            a = tl.load(x1_ptr + offs, mask=mask).to(tl.float64)
            b = tl.load(x2_ptr + offs, mask=mask).to(tl.float64)
        else:
            margin = margin_arg
            a = tl.load(x1_ptr + offs, mask=mask).to(tl.float32)
            b = tl.load(x2_ptr + offs, mask=mask).to(tl.float32)
        t = tl.load(y_ptr + offs, mask=mask, other=1)
        d = a - b
        return tl.where(t < 0, d, -d) + margin, t

    @triton.jit
    def _count_bad_labels(t, mask, bad_ptr):
        bad = mask & (t != 1) & (t != -1)
        tl.atomic_add(bad_ptr, tl.sum(bad.to(tl.int32), axis=0))

    @triton.jit
    def _forward_kernel(x1_ptr, x2_ptr, y_ptr, out_ptr, bad_ptr, n, margin_arg,
                        IS_F64: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        dist, t = _load_distance(x1_ptr, x2_ptr, y_ptr, offs, mask, margin_arg, IS_F64)
        _count_bad_labels(t, mask, bad_ptr)
        tl.store(out_ptr + offs, tl.where(dist < 0, 0.0, dist).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gradient_kernel(x1_ptr, x2_ptr, y_ptr, g_ptr, d1_ptr, d2_ptr, bad_ptr, n, margin_arg,
                         IS_F64: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        dist, t = _load_distance(x1_ptr, x2_ptr, y_ptr, offs, mask, margin_arg, IS_F64)
        _count_bad_labels(t, mask, bad_ptr)
        g = tl.load(g_ptr + offs, mask=mask)
        g = g.to(tl.float64) if IS_F64 else g.to(tl.float32)
        v = tl.where(dist < 0, 0.0, tl.where(t < 0, g, -g))  # -t * g; the kink and NaN pass it
        tl.store(d1_ptr + offs, v.to(d1_ptr.dtype.element_ty), mask=mask)
        tl.store(d2_ptr + offs, (-v).to(d2_ptr.dtype.element_ty), mask=mask)

    _BLOCK = 2048

    def _launch_args(x1: Any, x2: Any, margin: float) -> tuple[bool, Any]:
        import torch

        is_f64 = torch.float64 in (x1.dtype, x2.dtype)
        return is_f64, (float64_bits(margin) if is_f64 else float(margin))

    def forward_cuda(x1: Any, x2: Any, y: Any, *, margin: float) -> Any:  # type: ignore[no-redef]
        import torch

        _check_cuda_inputs(X1=x1, X2=x2, Y=y)
        x1, x2, y = x1.contiguous(), x2.contiguous(), y.contiguous()
        out = torch.empty_like(x1)
        n = x1.numel()
        if n:
            bad = torch.zeros(1, dtype=torch.int32, device=x1.device)
            is_f64, margin_arg = _launch_args(x1, x2, margin)
            _forward_kernel[(triton.cdiv(n, _BLOCK),)](x1, x2, y, out, bad, n, margin_arg,
                                                       IS_F64=is_f64, BLOCK=_BLOCK)
            _raise_if_bad_labels(bad, y)
        return out

    def gradient_cuda(x1: Any, x2: Any, y: Any, loss_grad: Any, *, margin: float) -> Any:  # type: ignore[no-redef]
        import torch

        _check_cuda_inputs(X1=x1, X2=x2, Y=y, loss_grad=loss_grad)
        x1, x2, y, g = x1.contiguous(), x2.contiguous(), y.contiguous(), loss_grad.contiguous()
        d1, d2 = torch.empty_like(x1), torch.empty_like(x2)
        n = x1.numel()
        if n:
            bad = torch.zeros(1, dtype=torch.int32, device=x1.device)
            is_f64, margin_arg = _launch_args(x1, x2, margin)
            _gradient_kernel[(triton.cdiv(n, _BLOCK),)](x1, x2, y, g, d1, d2, bad, n, margin_arg,
                                                        IS_F64=is_f64, BLOCK=_BLOCK)
            _raise_if_bad_labels(bad, y)
        return d1, d2


# ---- gradient definition ------------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    # Y is a label: it gets no gradient. The forward args (margin) are copied, as SingleGradientDef does.
    return [gradient_def(op, "MarginRankingCriterionGradient", [I(0), I(1), I(2), GO(0)], [GI(0), GI(1)])]


def _second_order_maker(op: OperatorDef) -> list[OperatorDef]:
    # The gradient op is linear in loss_grad and piecewise constant in X1, X2 (zero second derivative
    # almost everywhere, as in torch): d<u1, dX1> + <u2, dX2> / d loss_grad = -Y u1 + Y u2 where active,
    # which is output 0 of the gradient op fed u1 plus output 1 of it fed u2 (the two writes to one
    # blob add up, as Caffe2 accumulates gradients). The other outputs are discarded.
    unused = [f"{op.outputs[1]}_unused_part", f"{op.outputs[0]}_unused_part"]
    return [gradient_def(op, "MarginRankingCriterionGradient", [I(0), I(1), I(2), GO(0)], [GI(3), unused[0]]),
            gradient_def(op, "MarginRankingCriterionGradient", [I(0), I(1), I(2), GO(1)], [unused[1], GI(3)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_cuda_operator(SCHEMA, forward_cuda)
register_gradient(SCHEMA, _gradient_maker)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)
register_gradient(GRADIENT_SCHEMA, _second_order_maker)
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
