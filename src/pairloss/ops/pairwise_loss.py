r"""PairWiseLoss: the pairwise logistic (RankNet) loss, averaged per session.

For session :math:`s` with items :math:`i` and label-discordant pairs :math:`P_s`
(:math:`|l_i - l_j| \ge \epsilon_{32}`, ties skipped),

.. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \log\bigl(1 + e^{-(x_{hi} - x_{lo})}\bigr)

and :math:`Y_s = 0` when :math:`P_s` is empty (an empty, one-item or all-tied session).
Sessions are contiguous runs of items given by ``lengths``; without it all items are one session.
The loss is small when a larger label comes with a larger score (Burges et al., 2005, "Learning to rank
using gradient descent"; Caffe2's ``rank_loss_op.cc``).

Deliberate differences from Caffe2, for a loss users can trust:

- the softplus is exact (``relu(z) + log1p(exp(-|z|))``) instead of Caffe2's float32 ``logLogit`` with
  cut-offs at :math:`\pm 15.94` (they differ by < 1.2e-7), so the forward matches the gradient op's exact
  sigmoid;
- an empty batch gives one zero per session (shape ``(len(lengths),)``), where Caffe2 returned shape
  ``(0,)`` whatever ``lengths`` said; negative lengths and NaN labels raise instead of giving garbage;
- scores may be float16/32/64 (arithmetic in float64 per pair, outputs in the score dtype) and labels
  any integer or float dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pairloss._backends import HAS_TRITON, tl, triton
from pairloss._checks import FLT_EPSILON, check_lengths
from pairloss.ops.pair_loops import logistic_forward, logistic_gradient, logistic_second_order, plan_sessions
from pairloss.ops.sessions import (
    LENGTHS_DOC,
    per_session_output,
    prepare_second_order,
    prepare_sessions,
    sigmoid,
    softplus,
)
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

__all__ = ["GRADIENT_GRADIENT_SCHEMA", "GRADIENT_SCHEMA", "SCHEMA", "pairwise_loss", "pairwise_loss_gradient"]

SCHEMA = (
    operator_schema("PairWiseLoss")
    .num_inputs(2, 3)
    .num_outputs(1)
    .input(0, "X", "Scores, shape (N,) or (N, 1); float16/32/64.")
    .input(1, "label", "Relevance labels, shape (N,) or (N, 1); integer or float (ties: |difference| < 2^-23).")
    .input(2, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "Y", "Mean pairwise logistic loss per session, shape (S,) ((1,) without lengths); dtype of X.")
    .tensor_inference_function(per_session_output)
    .onnx_decomposition("pairloss.onnx:pairwise_loss_decomposition")
    .set_doc(__doc__)
)

GRADIENT_SCHEMA = (
    operator_schema("PairWiseLossGradient")
    .num_inputs(3, 4)
    .num_outputs(1)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "Gradient with respect to the per-session loss Y, shape (S,).")
    .input(3, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Gradient with respect to X; shape and dtype of X.")
    .identical_type_and_shape(0)
    .gradient_op()
    .set_doc("Gradient of PairWiseLoss with respect to X (exact sigmoid; labels and lengths get none).")
)


GRADIENT_GRADIENT_SCHEMA = (
    operator_schema("PairWiseLossGradientGradient")
    .num_inputs(4, 5)
    .num_outputs(2)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "The Y_grad that PairWiseLossGradient was given, shape (S,).")
    .input(3, "X_grad_grad", "Gradient with respect to PairWiseLossGradient's output X_grad; shape of X.")
    .input(4, "lengths", LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Its gradient with respect to X: per session, Y_grad/|P| times the Hessian of the "
                         "pair sum applied to X_grad_grad (a Hessian-vector product); shape and dtype of X.")
    .output(1, "Y_grad_grad", "Its gradient with respect to Y_grad: per session, the sum of X_grad_grad "
                              "times the session's gradient for Y_grad = 1; shape (S,), dtype of X.")
    .tensor_inference_function(lambda specs, _args: [specs[0], ((specs[2][0][0],), specs[0][1])])
    .gradient_op()
    .set_doc("""Second derivatives of PairWiseLoss: the gradient of PairWiseLossGradient (double backward).

    With :math:`\\sigma_p = \\sigma(x_{lo} - x_{hi})` and :math:`w_p = \\sigma_p (1 - \\sigma_p)` for each
    discordant pair :math:`p`, and :math:`v` = X_grad_grad,

    .. math:: \\text{X\\_grad}_k = \\frac{g_s}{|P_s|} \\sum_{p \\ni k} w_p (v_k - v_{k'}), \\qquad
              \\text{Y\\_grad\\_grad}_s = \\frac{1}{|P_s|} \\sum_{p \\in P_s} \\sigma_p (v_{lo} - v_{hi})

    where :math:`k'` is the other item of pair :math:`p`. It has no gradient itself (third derivatives).""")
)


# ---- reference (float64, Caffe2's loop order) --------------------------------------------------------
def reference_forward(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths)
    out = np.zeros(lens.size, np.float64)
    offset = 0
    for s, length in enumerate(lens):
        total, pairs = 0.0, 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue  # ties carry no preference
                sign = 1.0 if lab[i] > lab[j] else -1.0
                total += softplus(sign * (float(flat[j]) - float(flat[i])))
                pairs += 1
        out[s] = total / pairs if pairs else 0.0  # no discordant pair: nothing to learn, loss 0
        offset += length
    return out.astype(x.dtype)


def reference_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                       lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    dx = np.zeros(flat.shape[0], np.float64)
    offset = 0
    for s, length in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                sign = 1.0 if lab[i] > lab[j] else -1.0
                grad = sign * float(g[s]) * sigmoid(sign * (float(flat[j]) - float(flat[i])))
                dx[i] -= grad
                dx[j] += grad
                pairs += 1
        if pairs:
            dx[offset:offset + length] /= pairs
        offset += length
    return dx.reshape(x.shape).astype(x.dtype)


def reference_gradient_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                                direction: np.ndarray, lengths: np.ndarray | None = None
                                ) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = prepare_second_order(scores, labels, loss_grad, direction, lengths)
    hv = np.zeros(flat.shape[0], np.float64)
    gg = np.zeros(lens.size, np.float64)
    offset = 0
    for s, length in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                sig = sigmoid(float(flat[lo]) - float(flat[hi]))
                w = sig * (1.0 - sig)
                hv[i] += w * (float(v[i]) - float(v[j]))
                hv[j] += w * (float(v[j]) - float(v[i]))
                gg[s] += sig * (float(v[lo]) - float(v[hi]))
                pairs += 1
        if pairs:
            hv[offset:offset + length] *= float(g[s]) / pairs
            gg[s] /= pairs
        offset += length
    return hv.reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CPU kernels --------------------------------------------------------------------------------------
# The vectorised pair loops of ops.pair_loops (module doc there): float32 arithmetic for float16/float32
# scores, float64 for float64, the exact per-pair path for sessions with extreme or non-finite scores.
def working_precision(dtype: np.dtype) -> np.dtype:
    """float32 for float16/float32 scores, float64 for float64."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def forward_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths)
    plan = plan_sessions(flat, lab, lens, working_precision(x.dtype), full_rows=False)
    sums, pairs = logistic_forward(plan)
    out = np.divide(sums, pairs, out=np.zeros(lens.size), where=pairs > 0)  # no discordant pair: loss 0
    return out.astype(x.dtype)


def gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                 lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad)
    plan = plan_sessions(flat, lab, lens, working_precision(x.dtype), full_rows=True)
    slope, pairs = logistic_gradient(plan)
    scale = np.divide(g.astype(np.float64), pairs, out=np.zeros(lens.size), where=pairs > 0)
    return (slope * np.repeat(scale, lens)).reshape(x.shape).astype(x.dtype)


def gradient_gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray, direction: np.ndarray,
                          lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = prepare_second_order(scores, labels, loss_grad, direction, lengths)
    hv, dot, pairs = logistic_second_order(flat, lab, lens, v)
    scale = np.divide(g.astype(np.float64), pairs, out=np.zeros(lens.size), where=pairs > 0)
    gg = np.divide(dot, pairs, out=np.zeros(lens.size), where=pairs > 0)
    return (hv * np.repeat(scale, lens)).reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CUDA kernels (torch tensors) ---------------------------------------------------------------------
# One Triton program per (session, block of rows); it walks its session's columns block by block, so
# nothing n x n is ever materialised. Arithmetic is float32 (float64 for float64 scores), labels are
# compared in float64, softplus is relu(z) + log1p(exp(-|z|)) with Kahan's log1p (Triton has no portable
# log1p), and the sigmoid is the stable one. Partial sums go to a
# (sessions, row blocks) buffer and are reduced in float64 afterwards: deterministic, no atomics.
forward_cuda: Any = None
gradient_cuda: Any = None
_BLOCK_ROWS = 32
_BLOCK_COLS = 64


def _prepare_cuda(scores: Any, labels: Any, lengths: Any, loss_grad: Any = None) -> tuple[Any, ...]:
    """prepare_sessions for tensors: (scores, flat scores, float64 labels, int64 lengths on host[, loss_grad])."""
    import torch

    if scores.dtype not in (torch.float16, torch.float32, torch.float64):
        msg = f"scores must be a float16, float32 or float64 tensor; got dtype={scores.dtype}"
        raise TypeError(msg)
    if scores.dim() == 0 or any(d != 1 for d in scores.shape[1:]):
        msg = f"scores must have shape (N,) or (N, 1) (one score per item); got shape {tuple(scores.shape)}"
        raise ValueError(msg)
    n = scores.shape[0]
    if labels.dtype == torch.bool or labels.is_complex():
        msg = f"labels must be an integer or float tensor; got dtype={labels.dtype}"
        raise TypeError(msg)
    if labels.dim() not in (1, 2) or (labels.dim() == 2 and labels.shape[1] != 1) or labels.shape[0] != n:
        msg = f"labels must have shape ({n},) or ({n}, 1), one per score; got shape {tuple(labels.shape)}"
        raise ValueError(msg)
    lab = labels.reshape(n).to(torch.float64).contiguous()
    if bool(torch.isnan(lab).any()):
        msg = "labels contain NaN"
        raise ValueError(msg)
    lens = check_lengths(None if lengths is None else lengths.detach().cpu().numpy(), n)
    flat = scores.reshape(n).contiguous()
    if loss_grad is None:
        return scores, flat, lab, lens
    if tuple(loss_grad.shape) != (lens.size,):
        msg = f"loss_grad must have one entry per session, shape ({lens.size},); got shape {tuple(loss_grad.shape)}"
        raise ValueError(msg)
    return scores, flat, lab, lens, loss_grad


if HAS_TRITON:

    @triton.jit
    def _log1p(q):
        # Kahan's log1p from log: u = 1 + q rounds, and log(u) * q / (u - 1) cancels that rounding
        # (a few ulp in the working precision; no float literal has to carry float64 digits)
        u = 1.0 + q
        return tl.where(u == 1.0, q, tl.log(u) * (q / tl.where(u == 1.0, 1.0, u - 1.0)))

    @triton.jit
    def _load_items(x_ptr, lab_ptr, start, idx, ok, IS_F64: tl.constexpr):
        # scores in the working precision (float64 only for float64 scores), labels as stored (float64)
        x = tl.load(x_ptr + start + idx, mask=ok, other=0.0)
        x = x.to(tl.float64) if IS_F64 else x.to(tl.float32)
        return x, tl.load(lab_ptr + start + idx, mask=ok, other=0.0)

    @triton.jit
    def _forward_kernel(x_ptr, lab_ptr, off_ptr, sum_ptr, cnt_ptr, n_row_blocks, eps,
                        IS_F64: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        s = tl.program_id(0)
        rb = tl.program_id(1)
        start = tl.load(off_ptr + s)
        n = tl.load(off_ptr + s + 1) - start
        rows = rb * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n
        xi, li = _load_items(x_ptr, lab_ptr, start, rows, row_ok, IS_F64)
        acc = tl.zeros([BLOCK_ROWS], dtype=tl.float64 if IS_F64 else tl.float32)
        cnt = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
        # pairs (i, j < i): columns up to the block's last row, none when the block lies past the session
        stop = tl.where(rb * BLOCK_ROWS < n, tl.minimum(n, (rb + 1) * BLOCK_ROWS), 0)
        for c0 in range(0, stop, BLOCK_COLS):
            cols = c0 + tl.arange(0, BLOCK_COLS)
            col_ok = cols < n
            xj, lj = _load_items(x_ptr, lab_ptr, start, cols, col_ok, IS_F64)
            dl = li[:, None] - lj[None, :]
            counted = (row_ok[:, None] & col_ok[None, :] & (cols[None, :] < rows[:, None])
                       & (tl.abs(dl) >= eps))
            z = tl.where(dl > 0, xj[None, :] - xi[:, None], xi[:, None] - xj[None, :])  # x_lo - x_hi
            loss = tl.maximum(z, 0.0) + _log1p(tl.exp(-tl.abs(z)))
            acc += tl.sum(tl.where(counted, loss, 0.0), axis=1)
            cnt += tl.sum(counted.to(tl.int32), axis=1)
        tl.store(sum_ptr + s * n_row_blocks + rb, tl.sum(acc, axis=0).to(tl.float64))
        tl.store(cnt_ptr + s * n_row_blocks + rb, tl.sum(cnt, axis=0).to(tl.int64))

    @triton.jit
    def _gradient_kernel(x_ptr, lab_ptr, off_ptr, raw_ptr, cnt_ptr, eps,
                         IS_F64: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        s = tl.program_id(0)
        rb = tl.program_id(1)
        start = tl.load(off_ptr + s)
        n = tl.load(off_ptr + s + 1) - start
        rows = rb * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n
        xi, li = _load_items(x_ptr, lab_ptr, start, rows, row_ok, IS_F64)
        acc = tl.zeros([BLOCK_ROWS], dtype=tl.float64 if IS_F64 else tl.float32)
        cnt = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
        # every partner of row i, both triangles, so each program writes only its own rows
        stop = tl.where(rb * BLOCK_ROWS < n, n, 0)
        for c0 in range(0, stop, BLOCK_COLS):
            cols = c0 + tl.arange(0, BLOCK_COLS)
            col_ok = cols < n
            xj, lj = _load_items(x_ptr, lab_ptr, start, cols, col_ok, IS_F64)
            dl = li[:, None] - lj[None, :]
            counted = row_ok[:, None] & col_ok[None, :] & (tl.abs(dl) >= eps)  # j == i is a tie
            z = tl.where(dl > 0, xj[None, :] - xi[:, None], xi[:, None] - xj[None, :])  # x_lo - x_hi
            ez = tl.exp(-tl.abs(z))
            sig = tl.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))  # sigmoid(x_lo - x_hi)
            acc += tl.sum(tl.where(counted, tl.where(dl > 0, -sig, sig), 0.0), axis=1)
            cnt += tl.sum(counted.to(tl.int32), axis=1)
        tl.store(raw_ptr + start + rows, acc.to(tl.float64), mask=row_ok)
        tl.store(cnt_ptr + start + rows, cnt.to(tl.int64), mask=row_ok)

    def _device_layout(flat: Any, lens: np.ndarray) -> tuple[Any, Any, int]:
        import torch

        offsets = np.zeros(lens.size + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        n_row_blocks = max(1, triton.cdiv(int(lens.max(initial=0)), _BLOCK_ROWS))
        return torch.from_numpy(offsets).to(flat.device), torch.from_numpy(lens).to(flat.device), n_row_blocks

    def forward_cuda(scores: Any, labels: Any, lengths: Any = None) -> Any:  # type: ignore[no-redef]
        import torch

        x, flat, lab, lens = _prepare_cuda(scores, labels, lengths)
        n_sessions = lens.size
        offsets, _, n_row_blocks = _device_layout(flat, lens)
        sums = torch.zeros((n_sessions, n_row_blocks), dtype=torch.float64, device=flat.device)
        counts = torch.zeros((n_sessions, n_row_blocks), dtype=torch.int64, device=flat.device)
        if n_sessions and flat.numel():
            _forward_kernel[(n_sessions, n_row_blocks)](
                flat, lab, offsets, sums, counts, n_row_blocks, FLT_EPSILON,
                IS_F64=flat.dtype == torch.float64, BLOCK_ROWS=_BLOCK_ROWS, BLOCK_COLS=_BLOCK_COLS)
        total, pairs = sums.sum(dim=1), counts.sum(dim=1)
        loss = torch.where(pairs > 0, total / pairs.clamp_min(1), torch.zeros_like(total))
        return loss.to(x.dtype)

    def gradient_cuda(scores: Any, labels: Any, loss_grad: Any, lengths: Any = None) -> Any:  # type: ignore[no-redef]
        import torch

        x, flat, lab, lens, g = _prepare_cuda(scores, labels, lengths, loss_grad)
        n_sessions = lens.size
        offsets, lens_t, n_row_blocks = _device_layout(flat, lens)
        raw = torch.zeros(flat.numel(), dtype=torch.float64, device=flat.device)
        counts = torch.zeros(flat.numel(), dtype=torch.int64, device=flat.device)
        if n_sessions and flat.numel():
            _gradient_kernel[(n_sessions, n_row_blocks)](
                flat, lab, offsets, raw, counts, FLT_EPSILON,
                IS_F64=flat.dtype == torch.float64, BLOCK_ROWS=_BLOCK_ROWS, BLOCK_COLS=_BLOCK_COLS)
        session = torch.repeat_interleave(torch.arange(n_sessions, device=flat.device), lens_t)
        pairs = torch.zeros(n_sessions, dtype=torch.int64, device=flat.device).index_add_(0, session, counts) // 2
        scale = torch.where(pairs > 0, g.to(torch.float64) / pairs.clamp_min(1), 0.0)
        return (raw * scale[session]).reshape(x.shape).to(x.dtype)


# ---- gradient definition ------------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    # lengths moves from input 2 to input 3 and is appended only when the forward op had it
    inputs: list[Any] = [I(0), I(1), GO(0)] + ([I(2)] if len(op.inputs) == 3 else [])
    return [gradient_def(op, "PairWiseLossGradient", inputs, [GI(0)])]


def _second_order_maker(op: OperatorDef) -> list[OperatorDef]:
    # PairWiseLossGradient(X, label, Y_grad[, lengths]) -> X_grad; its gradient reads the same blobs and
    # the gradient of X_grad, and gives those of X and of Y_grad (labels and lengths get none)
    inputs: list[Any] = [I(0), I(1), I(2), GO(0)] + ([I(3)] if len(op.inputs) == 4 else [])
    return [gradient_def(op, "PairWiseLossGradientGradient", inputs, [GI(0), GI(2)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_cuda_operator(SCHEMA, forward_cuda)
register_gradient(SCHEMA, _gradient_maker)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)
register_cuda_operator(GRADIENT_SCHEMA, gradient_cuda)
register_gradient(GRADIENT_SCHEMA, _second_order_maker)
register_cpu_operator(GRADIENT_GRADIENT_SCHEMA, gradient_gradient_cpu, reference=reference_gradient_gradient)


# ---- public NumPy functions ---------------------------------------------------------------------------
def pairwise_loss(scores: npt.ArrayLike, labels: npt.ArrayLike,
                  lengths: npt.ArrayLike | None = None) -> np.ndarray:
    r"""Pairwise logistic (RankNet) loss per session, Caffe2's PairWiseLoss.

    .. math:: Y_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \log\bigl(1 + e^{-(x_{hi} - x_{lo})}\bigr)

    Args:
        scores: Scores, shape (N,) or (N, 1), float16/32/64.
        labels: Relevance labels, shape (N,) or (N, 1), integer or float; pairs whose labels differ by
            less than 2^-23 are ties and are skipped.
        lengths: Session sizes, 1-D non-negative integers summing to N. None: one session.

    Returns:
        Shape (S,) (or (1,) without ``lengths``), dtype of ``scores``: the mean over each session's
        label-discordant pairs; 0 for an empty, one-item or all-tied session.

    Raises:
        ValueError: wrong shapes, lengths not summing to N or negative, NaN labels.
        TypeError: non-float scores, non-integer lengths.

    Examples:
        >>> import numpy as np
        >>> scores = np.array([2.0, 1.0, 0.0, 3.0, 3.0], np.float32)
        >>> labels = np.array([1, 0, 0, 2, 2])
        >>> pairwise_loss(scores, labels, lengths=np.array([3, 2]))   # session 2 is all tied
        array([0.22009484, 0.        ], dtype=float32)

    References:
        Burges et al., 2005, "Learning to rank using gradient descent".
    """
    return forward_cpu(scores, labels, lengths)


def pairwise_loss_gradient(scores: npt.ArrayLike, labels: npt.ArrayLike, loss_grad: npt.ArrayLike,
                           lengths: npt.ArrayLike | None = None) -> np.ndarray:
    """Gradient of :func:`pairwise_loss` with respect to ``scores`` given ``loss_grad`` of shape (S,).

    Examples:
        >>> import numpy as np
        >>> pairwise_loss_gradient(np.array([0.0, 0.0]), np.array([1, 0]), np.array([1.0]))
        array([-0.5,  0.5])
    """
    return gradient_cpu(scores, labels, loss_grad, lengths)
