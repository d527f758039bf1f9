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

from pairloss._backends import HAS_TRITON
from pairloss._checks import FLT_EPSILON
from pairloss.ops.pair_loops import (
    logistic_forward,
    logistic_forward_and_gradient,
    logistic_gradient,
    logistic_second_order,
    plan_sessions,
)
from pairloss.ops.pair_loops_cuda import (
    LOGISTIC,
    check_loss_grad,
    pair_rows,
    prepare_sessions_cuda,
    raise_if_bad_labels,
    scale_rows,
    session_mean,
)
from pairloss.ops.sessions import (
    LENGTHS_DOC,
    KeptScratch,
    per_session_output,
    prepare_second_order,
    prepare_sessions,
    scale_unit_gradient,
    sigmoid,
    softplus,
    times_session_values,
)
from pairloss.registry import (
    GI,
    GO,
    FusedForward,
    I,
    OperatorDef,
    gradient_def,
    operator_schema,
    register_cpu_operator,
    register_cuda_operator,
    register_fused_gradient,
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

    where :math:`k'` is the other item of pair :math:`p`. Its gradient covers X_grad_grad (so forward mode
    over reverse mode, ``torch.func.hessian``, works); third derivatives in X and Y_grad are not implemented.""")
    .gradient_not_implemented(0, 2)
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


# the float64 copy of the labels of a call (its plan, which holds it, never outlives the call)
_LABEL_SCRATCH = KeptScratch(64 << 20)


def forward_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths, label_scratch=_LABEL_SCRATCH.float64)
    plan = plan_sessions(flat, lab, lens, working_precision(x.dtype), full_rows=False)
    sums, pairs = logistic_forward(plan)
    out = np.divide(sums, pairs, out=np.zeros(lens.size), where=pairs > 0)  # no discordant pair: loss 0
    return out.astype(x.dtype)


def forward_with_unit_gradient_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None
                                   ) -> FusedForward:
    """(Y, the gradient for Y_grad = 1, the sessions with a pair) on one plan: the fused kernel of the torch
    path (validation, the centres and exponentials and the launches are shared; the pair loops are the
    forward's and the gradient's)."""
    x, flat, lab, lens = prepare_sessions(scores, labels, lengths, label_scratch=_LABEL_SCRATCH.float64)
    plan = plan_sessions(flat, lab, lens, working_precision(x.dtype), full_rows=True)
    sums, pairs, slope = logistic_forward_and_gradient(plan)
    with_pairs = pairs > 0
    inv = np.divide(1.0, pairs, out=np.zeros(lens.size), where=with_pairs)
    out = np.divide(sums, pairs, out=np.zeros(lens.size), where=with_pairs)
    return FusedForward(out.astype(x.dtype), times_session_values(slope, inv, lens).reshape(x.shape), with_pairs)


def gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                 lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = prepare_sessions(scores, labels, lengths, loss_grad,
                                             label_scratch=_LABEL_SCRATCH.float64)
    plan = plan_sessions(flat, lab, lens, working_precision(x.dtype), full_rows=True)
    slope, pairs = logistic_gradient(plan)
    scale = np.divide(g.astype(np.float64), pairs, out=np.zeros(lens.size), where=pairs > 0)
    return times_session_values(slope, scale, lens).reshape(x.shape).astype(x.dtype)


def gradient_gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray, direction: np.ndarray,
                          lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    x, flat, lab, lens, g, v = prepare_second_order(scores, labels, loss_grad, direction, lengths)
    hv, dot, pairs = logistic_second_order(flat, lab, lens, v)
    scale = np.divide(g.astype(np.float64), pairs, out=np.zeros(lens.size), where=pairs > 0)
    gg = np.divide(dot, pairs, out=np.zeros(lens.size), where=pairs > 0)
    return times_session_values(hv, scale, lens).reshape(x.shape).astype(x.dtype), gg.astype(x.dtype)


# ---- CUDA kernels (torch tensors): the Triton pair loops of ops.pair_loops_cuda ------------------------
forward_cuda: Any = None
gradient_cuda: Any = None

if HAS_TRITON:

    def forward_cuda(scores: Any, labels: Any, lengths: Any = None) -> Any:  # type: ignore[no-redef]
        sessions = prepare_sessions_cuda(scores, labels, lengths)
        values, counts, bad = pair_rows(sessions, loss=LOGISTIC, forward=True)
        loss, _ = session_mean(sessions, values, counts, pairs_counted_twice=False)
        raise_if_bad_labels(bad)
        return loss.to(scores.dtype)

    def gradient_cuda(scores: Any, labels: Any, loss_grad: Any, lengths: Any = None) -> Any:  # type: ignore[no-redef]
        sessions = prepare_sessions_cuda(scores, labels, lengths)
        check_loss_grad(loss_grad, sessions)
        values, counts, bad = pair_rows(sessions, loss=LOGISTIC, forward=False)
        _, pairs = session_mean(sessions, values, counts, pairs_counted_twice=True)
        out = scale_rows(sessions, values, pairs, loss_grad)
        raise_if_bad_labels(bad)
        return out


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


def _third_order_maker(op: OperatorDef) -> list[OperatorDef]:
    # The second-order op is linear in X_grad_grad (v): X_grad = (g/P) H v and Y_grad_grad = <v, raw>/P,
    # so its gradient in v is (g/P) H a + raw b/P: itself fed a, plus the gradient op fed b. The other
    # output of the first op is scratch. X and Y_grad: declared not implemented in the schema.
    lengths: list[Any] = [I(4)] if len(op.inputs) == 5 else []
    scratch = f"{op.outputs[1]}_unused_part"
    return [gradient_def(op, "PairWiseLossGradientGradient", [I(0), I(1), I(2), GO(0), *lengths], [GI(3), scratch]),
            gradient_def(op, "PairWiseLossGradient", [I(0), I(1), GO(1), *lengths], [GI(3)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_cuda_operator(SCHEMA, forward_cuda)
register_gradient(SCHEMA, _gradient_maker)
register_fused_gradient(SCHEMA, forward=forward_with_unit_gradient_cpu, backward=scale_unit_gradient)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)
register_cuda_operator(GRADIENT_SCHEMA, gradient_cuda)
register_gradient(GRADIENT_SCHEMA, _second_order_maker)
register_cpu_operator(GRADIENT_GRADIENT_SCHEMA, gradient_gradient_cpu, reference=reference_gradient_gradient)
register_gradient(GRADIENT_GRADIENT_SCHEMA, _third_order_maker)


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
