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

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from pairloss._checks import (
    FLT_EPSILON,
    as_float_array,
    as_session_labels,
    check_lengths,
    column_to_flat,
)
from pairloss.registry import (
    GI,
    GO,
    I,
    OperatorDef,
    gradient_def,
    operator_schema,
    register_cpu_operator,
    register_gradient,
)

__all__ = ["GRADIENT_SCHEMA", "SCHEMA", "pairwise_loss", "pairwise_loss_gradient"]

_LENGTHS_DOC = ("Optional session sizes, 1-D non-negative integers summing to N; sessions are contiguous. "
                "Without it all N items form one session.")

SCHEMA = (
    operator_schema("PairWiseLoss")
    .num_inputs(2, 3)
    .num_outputs(1)
    .input(0, "X", "Scores, shape (N,) or (N, 1); float16/32/64.")
    .input(1, "label", "Relevance labels, shape (N,) or (N, 1); integer or float (ties: |difference| < 2^-23).")
    .input(2, "lengths", _LENGTHS_DOC, optional=True)
    .output(0, "Y", "Mean pairwise logistic loss per session, shape (S,) ((1,) without lengths); dtype of X.")
    .tensor_inference_function(
        lambda specs, _args: [((specs[2][0][0],) if len(specs) > 2 else (1,), specs[0][1])])
    .set_doc(__doc__)
)

GRADIENT_SCHEMA = (
    operator_schema("PairWiseLossGradient")
    .num_inputs(3, 4)
    .num_outputs(1)
    .input(0, "X", "Forward scores.")
    .input(1, "label", "Forward labels.")
    .input(2, "Y_grad", "Gradient with respect to the per-session loss Y, shape (S,).")
    .input(3, "lengths", _LENGTHS_DOC, optional=True)
    .output(0, "X_grad", "Gradient with respect to X; shape and dtype of X.")
    .identical_type_and_shape(0)
    .gradient_op()
    .set_doc("Gradient of PairWiseLoss with respect to X (exact sigmoid; labels and lengths get none).")
)


def _prepare(scores: npt.ArrayLike, labels: npt.ArrayLike, lengths: npt.ArrayLike | None,
             loss_grad: npt.ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    """Validated (scores_2d_or_1d, flat scores, float64 labels, int64 lengths[, flat loss_grad])."""
    x = as_float_array("scores", scores)
    flat = column_to_flat("scores", x)
    n = flat.shape[0]
    labels64 = as_session_labels(labels, n)
    lens = check_lengths(lengths, n)
    if loss_grad is None:
        return x, flat, labels64, lens
    g = as_float_array("loss_grad", loss_grad)
    if g.shape != (lens.size,):
        msg = f"loss_grad must have one entry per session, shape ({lens.size},); got shape {g.shape}"
        raise ValueError(msg)
    return x, flat, labels64, lens, g


def _softplus(z: float) -> float:
    # relu(z) + log1p(exp(-|z|)): exact and finite for every finite z, where log(1 + exp(z)) overflows
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# ---- reference (float64, Caffe2's loop order) --------------------------------------------------------
def reference_forward(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = _prepare(scores, labels, lengths)
    out = np.zeros(lens.size, np.float64)
    offset = 0
    for s, length in enumerate(lens):
        total, pairs = 0.0, 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue  # ties carry no preference
                sign = 1.0 if lab[i] > lab[j] else -1.0
                total += _softplus(sign * (float(flat[j]) - float(flat[i])))
                pairs += 1
        out[s] = total / pairs if pairs else 0.0  # no discordant pair: nothing to learn, loss 0
        offset += length
    return out.astype(x.dtype)


def reference_gradient(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                       lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = _prepare(scores, labels, lengths, loss_grad)
    dx = np.zeros(flat.shape[0], np.float64)
    offset = 0
    for s, length in enumerate(lens):
        pairs = 0
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(lab[i] - lab[j]) < FLT_EPSILON:
                    continue
                sign = 1.0 if lab[i] > lab[j] else -1.0
                grad = sign * float(g[s]) * _sigmoid(sign * (float(flat[j]) - float(flat[i])))
                dx[i] -= grad
                dx[j] += grad
                pairs += 1
        if pairs:
            dx[offset:offset + length] /= pairs
        offset += length
    return dx.reshape(x.shape).astype(x.dtype)


# ---- CPU kernels --------------------------------------------------------------------------------------
def _session_pairs(flat: np.ndarray, lab: np.ndarray, start: int, stop: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, sign, mask) over the lower triangle j < i of one session, in float64."""
    xs = flat[start:stop].astype(np.float64)
    ls = lab[start:stop]
    dl = ls[:, None] - ls[None, :]
    mask = np.tril(np.abs(dl) >= FLT_EPSILON, k=-1)
    sign = np.where(dl > 0, 1.0, -1.0)
    z = sign * (xs[None, :] - xs[:, None])
    return z, sign, mask


def forward_cpu(scores: np.ndarray, labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens = _prepare(scores, labels, lengths)
    out = np.zeros(lens.size, np.float64)
    offsets = np.concatenate(([0], np.cumsum(lens)))
    for s in range(lens.size):
        z, _, mask = _session_pairs(flat, lab, int(offsets[s]), int(offsets[s + 1]))
        pairs = int(mask.sum())
        if pairs:
            loss = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
            out[s] = loss[mask].sum() / pairs
    return out.astype(x.dtype)


def gradient_cpu(scores: np.ndarray, labels: np.ndarray, loss_grad: np.ndarray,
                 lengths: np.ndarray | None = None) -> np.ndarray:
    x, flat, lab, lens, g = _prepare(scores, labels, lengths, loss_grad)
    dx = np.zeros(flat.shape[0], np.float64)
    offsets = np.concatenate(([0], np.cumsum(lens)))
    for s in range(lens.size):
        start, stop = int(offsets[s]), int(offsets[s + 1])
        z, sign, mask = _session_pairs(flat, lab, start, stop)
        pairs = int(mask.sum())
        if pairs:
            with np.errstate(over="ignore"):
                grad = np.where(mask, sign * float(g[s]) * (0.5 * (1.0 + np.tanh(0.5 * z))), 0.0)
            dx[start:stop] = (grad.sum(axis=0) - grad.sum(axis=1)) / pairs
    return dx.reshape(x.shape).astype(x.dtype)


# ---- gradient definition ------------------------------------------------------------------------------
def _gradient_maker(op: OperatorDef) -> list[OperatorDef]:
    # lengths moves from input 2 to input 3 and is appended only when the forward op had it
    inputs: list[Any] = [I(0), I(1), GO(0)] + ([I(2)] if len(op.inputs) == 3 else [])
    return [gradient_def(op, "PairWiseLossGradient", inputs, [GI(0)])]


register_cpu_operator(SCHEMA, forward_cpu, reference=reference_forward)
register_gradient(SCHEMA, _gradient_maker)
register_cpu_operator(GRADIENT_SCHEMA, gradient_cpu, reference=reference_gradient)


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
