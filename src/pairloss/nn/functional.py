r"""Functional PyTorch front end: pairwise ranking losses and gradient-reversal as differentiable functions.

Each function validates its arguments (dtypes, shapes, layouts, devices, ``reduction``) before any kernel
runs, then calls the registry operator through its ``torch.library`` custom op (``torch.ops.pairloss.*``,
see :mod:`pairloss.nn._torch_ops`), so every function works under autograd (double backward and forward
mode included), ``torch.func`` transforms, ``torch.compile(fullgraph=True)`` and ``torch.export``, on CPU
and CUDA. The full documentation, with the maths, lives on the module classes in
:mod:`pairloss.nn.modules`.

The session losses take either flat scores with session ``lengths`` (the operators' own layout) or a
padded ``[B, L]`` batch, one session per row, with a ``mask`` and/or a ``padding_label`` (the allRank and
TF-Ranking layout). A padded batch is packed into the flat layout with static shapes: each row becomes
its valid items followed by its padding, as two sessions, and the padding session (tied labels, so no
pair) is dropped from the output. No ``nonzero``, no device sync, so ``torch.compile(fullgraph=True)``
and export trace it; padded items get exactly zero gradient.

Examples:
    >>> import torch
    >>> import pairloss.nn.functional as PF
    >>> scores = torch.tensor([2.0, 1.0, 0.0, 3.0, 3.0])
    >>> labels = torch.tensor([1, 0, 0, 2, 2])
    >>> PF.pairwise_logistic_loss(scores, labels, torch.tensor([3, 2]), reduction="none")
    tensor([0.2201, 0.0000])
    >>> padded = torch.tensor([[2.0, 1.0, 0.0], [3.0, 3.0, 9.0]])
    >>> PF.pairwise_logistic_loss(padded, torch.tensor([[1, 0, 0], [2, 2, -1]]), padding_label=-1,
    ...                           reduction="none")
    tensor([0.2201, 0.0000])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairloss._checks import FLT_EPSILON
from pairloss.nn._torch_ops import eager_applies, host_sum, scale_gradient, session_loss_eager, torch_op
from pairloss.nn._validation import (
    Reduction,
    Scalar,
    check_float,
    check_real_labels,
    check_reduction,
    check_same_device,
    check_scalar,
    check_tensor,
    host_view,
    is_integer,
    scalar_tensor,
    value_checks_possible,
)
from pairloss.ops.sessions import sessions_with_pairs

__all__ = [
    "lambdarank_loss",
    "margin_ranking_loss",
    "negate_gradient",
    "negative",
    "pairwise_hinge_loss",
    "pairwise_logistic_loss",
]

# Resolved once at import (dynamo then sees plain module constants, not registry look-ups).
_MARGIN_RANKING = torch_op("MarginRankingCriterion")
_MARGIN_RANKING_T = torch_op("MarginRankingCriterion", tensor_args=True)
_NEGATIVE = torch_op("Negative")
_NEGATE_GRADIENT = torch_op("NegateGradient")
_SCALE_GRADIENT_T = torch.ops.pairloss.scale_gradient.tensor_args
# registry name -> (op, its tensor_args overload or None)
_SESSION_OPS = {
    "PairWiseLoss": (torch_op("PairWiseLoss"), None),
    "PairWiseHingeLoss": (torch_op("PairWiseHingeLoss"), torch_op("PairWiseHingeLoss", tensor_args=True)),
    "LambdaRankLoss": (torch_op("LambdaRankLoss"), torch_op("LambdaRankLoss", tensor_args=True)),
}


# --------------------------------------------------------------------------------------------------------
# Sessions: flat scores + lengths, or a padded [B, L] batch
# --------------------------------------------------------------------------------------------------------
class _Sessions:
    """Validated session-loss inputs in the operators' flat layout.

    ``lengths`` is None for one session. With padding, every session ``s`` of the caller is split into
    sessions ``2s`` (its valid items) and ``2s + 1`` (its padding, tied labels), and ``keep`` is
    ``slice(0, None, 2)``: the caller's per-session losses are ``op(...)[keep]``.
    """

    def __init__(self, scores: Tensor, labels: Tensor, lengths: Tensor | None, keep: slice | None) -> None:
        self.scores, self.labels, self.lengths, self.keep = scores, labels, lengths, keep


def _sessions(scores: object, labels: object, lengths: object, mask: object, padding_label: object) -> _Sessions:
    s = check_float("scores", scores)
    lab = check_real_labels("labels", labels)
    m = None
    if mask is not None:
        m = check_tensor("mask", mask)
        if m.dtype != torch.bool:
            msg = f"mask must be a bool tensor (True: a real item, False: padding); got dtype={m.dtype}"
            raise TypeError(msg)
    pad_value = None
    if padding_label is not None:
        if isinstance(padding_label, bool) or not isinstance(padding_label, int | float) or \
                not math.isfinite(padding_label):
            msg = f"padding_label must be a finite number (e.g. -1) or None; got {padding_label!r}"
            raise TypeError(msg)
        pad_value = padding_label
    padded = s.dim() == 2 and (s.shape[1] != 1 or m is not None)
    if padded:
        if lengths is not None:
            msg = (f"lengths cannot be combined with padded scores of shape {tuple(s.shape)}: each row of a "
                   f"[B, L] batch is one session; mark padding with mask or padding_label")
            raise ValueError(msg)
        if tuple(lab.shape) != tuple(s.shape):
            msg = (f"labels must have the shape of the padded scores [B, L] = {tuple(s.shape)}; "
                   f"got shape {tuple(lab.shape)}")
            raise ValueError(msg)
        if m is not None and tuple(m.shape) != tuple(s.shape):
            msg = f"mask must have the shape of the scores [B, L] = {tuple(s.shape)}; got shape {tuple(m.shape)}"
            raise ValueError(msg)
        check_same_device(scores=s, labels=lab, mask=m)
        n_rows, width = s.shape
        flat_s, flat_lab = s.reshape(-1), lab.reshape(-1)
        flat_m = None if m is None else m.reshape(-1)
        lens: Tensor | None = torch.full((n_rows,), width, dtype=torch.int64, device=s.device)
    else:
        if s.dim() == 0 or s.dim() > 2:
            msg = (f"scores must have shape (N,) or (N, 1) (one score per item), or (B, L) for a padded batch; "
                   f"got shape {tuple(s.shape)}")
            raise ValueError(msg)
        n = s.shape[0]
        if lab.dim() not in (1, 2) or (lab.dim() == 2 and lab.shape[1] != 1):
            msg = f"labels must have shape (N,) or (N, 1); got shape {tuple(lab.shape)}"
            raise ValueError(msg)
        if lab.shape[0] != n:
            msg = f"labels must have one entry per score: scores has N={n}; labels has {lab.shape[0]}"
            raise ValueError(msg)
        if m is not None and (m.dim() not in (1, 2) or m.shape[0] != n or m.numel() != n):
            msg = f"mask must have one entry per score, shape ({n},); got shape {tuple(m.shape)}"
            raise ValueError(msg)
        lens = None
        if lengths is not None:
            lens = check_tensor("lengths", lengths)
            if not is_integer(lens.dtype):
                msg = f"lengths must be an integer tensor; got dtype={lens.dtype} (cast with lengths.long())"
                raise TypeError(msg)
            if lens.dim() != 1:
                msg = f"lengths must be 1-D (one size per session); got shape {tuple(lens.shape)}"
                raise ValueError(msg)
            # the sum and the signs are checked by the kernel: reading values here would force a device
            # sync and break torch.compile(fullgraph=True). On the CPU (no sync) each size is bounded
            # first, so no sum can wrap around int64 on its way to a kernel
            if lens.is_cpu and value_checks_possible(lens) and lens.numel():
                host = host_view(lens)
                if host is not None:
                    index = -1
                    if host.min() < 0 or host.max() > n:  # the mask and its search only for a bad size
                        index = int(np.flatnonzero((host < 0) | (host > n))[0])
                else:
                    out_of_range = (lens < 0) | (lens > n)
                    index = int(torch.nonzero(out_of_range)[0, 0]) if bool(out_of_range.any()) else -1
                if index >= 0:
                    msg = (f"lengths must be non-negative and at most N={n} (the number of scores); got "
                           f"{int(lens[index])} at index {index}")
                    raise ValueError(msg)
        check_same_device(scores=s, labels=lab, lengths=lens, mask=m)
        flat_s, flat_lab = s, lab
        flat_m = None if m is None else m.reshape(-1)
    valid = flat_m
    if pad_value is not None:
        real = flat_lab.reshape(-1) != pad_value
        valid = real if valid is None else valid & real
    _check_non_negative(flat_lab if flat_lab.dim() == 1 else flat_lab.reshape(-1), valid, pad_value)
    if valid is None:
        return _Sessions(flat_s, flat_lab, lens, None)
    flat_s, flat_lab = flat_s.reshape(-1), flat_lab.reshape(-1)
    if lens is None:
        lens = torch.full((1,), flat_s.shape[0], dtype=torch.int64, device=flat_s.device)
    packed_s, packed_lab, packed_lens = _valid_first(flat_s, flat_lab, lens, valid)
    return _Sessions(packed_s, packed_lab, packed_lens, slice(0, None, 2))


def _check_non_negative(labels: Tensor, valid: Tensor | None, pad_value: float | None) -> None:
    """Relevance labels are >= 0; a negative one is an undeclared padding marker (allRank's -1) that
    would silently count as a real label."""
    if not (labels.is_floating_point() or labels.dtype.is_signed):
        return
    host_labels = host_view(labels)
    host_valid = None if valid is None else host_view(valid)
    if host_labels is not None and (valid is None or host_valid is not None):
        index = -1
        # a minimum reads the labels once and writes nothing (0.13 against 0.87 ms for a mask and its
        # search at 1e6 float32 labels); the mask is built only when a label is negative
        if host_labels.size and host_labels.min() < 0:
            bad_host = host_labels < 0
            if host_valid is not None:
                bad_host &= host_valid  # valid is a bool mask
            found = np.flatnonzero(bad_host)
            index = int(found[0]) if found.size else -1
    else:
        bad = labels < 0
        if valid is not None:
            bad = bad & valid
        if not value_checks_possible(bad):
            if torch.compiler.is_compiling():
                torch._assert_async(~bad.any(), f"labels must be >= 0 (relevance grades); "
                                                f"{_negative_label_hint(valid, pad_value)}")
            return
        index = int(torch.nonzero(bad)[0, 0]) if bool(bad.any()) else -1
    if index >= 0:
        msg = (f"labels must be >= 0 (relevance grades); got {labels[index].item()} at flat index {index}; "
               f"{_negative_label_hint(valid, pad_value)}")
        raise ValueError(msg)


def _negative_label_hint(valid: Tensor | None, pad_value: float | None) -> str:
    return ("declare padding with mask=... or padding_label=..." if pad_value is None and valid is None
            else "only declared padding may be negative")


def _session_ids(lengths: Tensor, n: int) -> Tensor:
    """The session of every item: how many sessions end at or before it (empty sessions skipped).

    ``repeat_interleave(arange(S), lengths)`` with static shapes, in ops the ONNX exporter translates.
    """
    ends = torch.cumsum(lengths, 0).clamp_max(n)
    marks = torch.zeros(n + 1, dtype=torch.int64, device=lengths.device).scatter_add(0, ends, torch.ones_like(ends))
    return torch.cumsum(marks, 0)[:n]


def _valid_first(scores: Tensor, labels: Tensor, lengths: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reorder each session to its valid items then its padding; sessions (valid_s, padding_s) alternate.

    Static shapes only: positions come from cumulative counts, not from ``nonzero``. Padded items get
    score 0 and label 0 (a NaN or inf padding score cannot leak into a value or gradient).
    """
    n = scores.shape[0]
    device = scores.device
    lens = lengths.to(torch.int64)
    ids = _session_ids(lens, n)
    v = valid.to(torch.int64)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    valid_before = torch.cat([zero, torch.cumsum(v, 0)])  # valid items before each position, (N + 1,)
    pad_before = torch.cat([zero, torch.cumsum(1 - v, 0)])
    starts = torch.cumsum(lens, 0) - lens
    n_valid = valid_before[starts + lens] - valid_before[starts]
    rank_valid = valid_before[:-1] - valid_before[starts][ids]  # rank among the session's valid items
    rank_pad = pad_before[:-1] - pad_before[starts][ids]
    dest = starts[ids] + torch.where(valid, rank_valid, n_valid[ids] + rank_pad)
    order = torch.zeros_like(dest).scatter(0, dest, torch.arange(n, device=device))  # order[dest[i]] = i
    packed_scores = torch.where(valid, scores, torch.zeros((), dtype=scores.dtype, device=device))[order]
    packed_labels = torch.where(valid, labels, torch.zeros((), dtype=labels.dtype, device=device))[order]
    packed_lengths = torch.stack([n_valid, lens - n_valid], 1).reshape(-1)
    return packed_scores, packed_labels, packed_lengths


def _sessions_with_pairs(labels: Tensor, lengths: Tensor) -> Tensor:
    """Per session: has it a label-discordant pair (max - min >= 2^-23, as the kernels' tie rule)?"""
    n_sessions = lengths.shape[0]
    device = labels.device
    flat = labels.reshape(-1)
    ids = _session_ids(lengths.to(torch.int64), flat.shape[0])
    if flat.is_floating_point():
        lab = flat.to(torch.float64)
        lo_fill, hi_fill = math.inf, -math.inf
    else:
        lab = flat.to(torch.int64)  # exact: integer labels that differ always differ by >= 1
        info = torch.iinfo(torch.int64)
        lo_fill, hi_fill = info.max, info.min
    hi = torch.full((n_sessions,), hi_fill, dtype=lab.dtype, device=device).scatter_reduce(0, ids, lab, "amax")
    lo = torch.full((n_sessions,), lo_fill, dtype=lab.dtype, device=device).scatter_reduce(0, ids, lab, "amin")
    return (hi - lo >= FLT_EPSILON) if lab.is_floating_point() else hi > lo


class _HostSum(torch.autograd.Function):
    """``scale * values.sum()`` summed by NumPy in float64, for plain CPU tensors.

    A torch reduction over more than 32,768 sessions opens an OpenMP parallel region, and on a loaded
    machine its spinning workers wait for descheduled peers: torch.sum of 1e5 float32 values measured
    6-8 ms with one of two cores busy (0.15 ms with passive waiting), more than the hinge kernel's own
    forward + backward at n = 10,000. The gradient is ``scale`` times the output gradient, broadcast (a
    view: no work).
    """

    @staticmethod
    def forward(ctx: Any, values: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.shape, ctx.scale = values.shape, scale
        return host_sum(values, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return (grad * ctx.scale).expand(ctx.shape), None

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, _scale: Any) -> Tensor:  # type: ignore[override]
        return tangent.sum() * ctx.scale


def _inverse_kept_count(with_pairs: np.ndarray, keep: slice | None) -> float:
    """1 / (kept sessions with a pair), at least one such session counted."""
    kept = with_pairs if keep is None else with_pairs[keep]
    return 1.0 / max(int(np.count_nonzero(kept)), 1)


def _host_mean_scale(labels: np.ndarray, lengths: np.ndarray, keep: slice | None) -> float:
    """1 / (kept sessions with a pair), at least one such session counted, from host arrays (the lengths
    are valid: the kernel has run)."""
    return _inverse_kept_count(sessions_with_pairs(labels, lengths.astype(np.int64, copy=False)), keep)


def _reduce_sessions(per_session: Tensor, sessions: _Sessions, reduction: str) -> Tensor:
    if reduction == "none":
        return per_session
    on_host = host_view(per_session) is not None
    if reduction == "sum" or sessions.lengths is None:  # one session: its loss (0 without a pair)
        return _HostSum.apply(per_session, 1.0) if on_host else per_session.sum()
    labels, lengths = host_view(sessions.labels), host_view(sessions.lengths)
    if on_host and labels is not None and lengths is not None:
        return _HostSum.apply(per_session, _host_mean_scale(labels, lengths, sessions.keep))
    has_pair = _sessions_with_pairs(sessions.labels, sessions.lengths)
    if sessions.keep is not None:
        has_pair = has_pair[sessions.keep]
    # sessions without a pair add 0 to the sum and are not counted; no pair anywhere: 0, not NaN
    count = has_pair.sum().clamp_min(1).to(per_session.dtype)
    return per_session.sum() / count


def _mean_scale(sessions: _Sessions) -> Callable[[np.ndarray | None], float]:
    """1 / (kept sessions with a pair), from the sessions with a pair the fused kernel counted, else from host
    labels and lengths (called once the kernel has validated them)."""

    def scale(with_pairs: np.ndarray | None) -> float:
        if with_pairs is not None:  # the kernel's own count: a pass over the labels less (1 ms at 1e6 items)
            return _inverse_kept_count(with_pairs, sessions.keep)
        labels = sessions.labels.detach()
        if labels.dtype == torch.bfloat16:  # no NumPy dtype; float32 holds every bfloat16 exactly
            labels = labels.float()
        return _host_mean_scale(labels.resolve_neg().numpy(), sessions.lengths.detach().numpy(),  # type: ignore[union-attr]
                                sessions.keep)

    return scale


def _session_loss_eager(name: str, sessions: _Sessions, reduction: str, args: dict[str, Any]) -> Tensor:
    if reduction == "none":
        scale = None
    elif reduction == "sum" or sessions.lengths is None:
        scale = _unit_scale
    else:
        scale = _mean_scale(sessions)
    return session_loss_eager(name, sessions.scores, sessions.labels, sessions.lengths, args, keep=sessions.keep,
                              total_scale=scale)


def _unit_scale(_with_pairs: np.ndarray | None) -> float:
    return 1.0


def _session_loss(name: str, sessions: _Sessions, reduction: str, floats: dict[str, Scalar] | None = None,
                  others: dict[str, Any] | None = None) -> Tensor:
    """Run session op ``name`` on packed sessions and reduce. ``floats``: its float arguments in schema order
    (any given as a tensor, or any under dynamo, selects the ``tensor_args`` overload); ``others``: the rest.
    Plain eager CPU calls skip the custom op's dispatch (:func:`pairloss.nn._torch_ops.session_loss_eager`)."""
    args = (sessions.scores, sessions.labels, sessions.lengths)
    floats, others = floats or {}, others or {}
    as_tensors = {k: scalar_tensor(v) for k, v in floats.items()}
    plain_floats = all(t is None for t in as_tensors.values())
    if plain_floats and eager_applies(name, *args):
        return _session_loss_eager(name, sessions, reduction, {**floats, **others})
    op, op_t = _SESSION_OPS[name]
    if plain_floats:
        per_session = op(*args, **floats, **others)
    else:
        device = sessions.scores.device
        tensors = [(t if t is not None else torch.tensor(float(floats[k]), dtype=torch.float64)).to(device)
                   for k, t in as_tensors.items()]
        per_session = op_t(*args, *tensors, **others)  # type: ignore[misc]
    if sessions.keep is not None:
        per_session = per_session[sessions.keep]
    return _reduce_sessions(per_session, sessions, reduction)


# --------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------
def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: Scalar = 0.0,
                        reduction: Reduction = "mean") -> Tensor:
    r"""Margin ranking loss, :math:`\max(0, -y\,(x_1 - x_2) + \text{margin})`, with a reduction.

    A drop-in for :func:`torch.nn.functional.margin_ranking_loss` (same signature, defaults, values and
    gradients for inputs of equal shape), computed by the ``MarginRankingCriterion`` operator.
    See :class:`pairloss.nn.MarginRankingLoss` for the details.

    The one deliberate difference: ``input1``, ``input2`` and ``target`` must have the **same shape**;
    mismatched shapes raise a ``ValueError`` listing all three, where torch checks only the number of
    dimensions and then broadcasts silently.

    Args:
        input1: Scores of the first item of each pair; float16, bfloat16, float32 or float64, any shape.
        input2: Scores of the second item; same shape as ``input1``.
        target: +1 where ``input1`` should rank higher, -1 where ``input2`` should; integer or float,
            same shape. Values other than ±1 are rejected by the operator. It gets no gradient.
        margin: Required score gap (torch's default 0.0; the registry operator's own default is 1.0): a
            number, or a one-element tensor (no recompilation when it changes under ``torch.compile``).
        reduction: ``"none"`` (per-pair loss), ``"mean"`` (NaN for empty input, like torch) or ``"sum"``;
            torch's deprecated ``"elementwise_mean"`` is ``"mean"``, with torch's warning.

    Returns:
        A scalar, or the per-pair loss with the shape of ``input1`` for ``reduction="none"``.

    Raises:
        ValueError: bad ``reduction``, mismatched shapes or devices, a target value other than ±1, a
            target that requires grad.
        TypeError: non-float inputs, a bool/complex target, a non-numeric margin, a sparse tensor.

    Examples:
        >>> import torch
        >>> x1 = torch.tensor([2.0, 1.5, 3.0]); x2 = torch.tensor([1.0, 2.0, 1.0])
        >>> margin_ranking_loss(x1, x2, torch.ones(3), margin=1.0, reduction="none")
        tensor([0.0000, 1.5000, 0.0000])
    """
    reduction = check_reduction(reduction)
    x1 = check_float("input1", input1)
    x2 = check_float("input2", input2)
    y = check_real_labels("target", target)
    if not (x1.shape == x2.shape == y.shape):
        msg = ("margin_ranking_loss: input1, input2 and target must have the same shape (pairloss does not "
               f"broadcast); got input1: {tuple(x1.shape)}, input2: {tuple(x2.shape)}, target: {tuple(y.shape)}")
        raise ValueError(msg)
    check_same_device(input1=x1, input2=x2, target=y)
    m = check_scalar("margin", margin)
    # torch's type promotion: the loss takes the common dtype of the scores (and of a float target)
    dtype = torch.promote_types(x1.dtype, x2.dtype)
    if y.is_floating_point():
        dtype = torch.promote_types(dtype, y.dtype)
    if y.dtype == torch.float16:
        # +-1 is exact in float32; the CPU kernel cannot read float16 labels (ops-layer request filed)
        y = y.float()
    m_t = scalar_tensor(m)
    if m_t is None:
        loss = _MARGIN_RANKING(x1.to(dtype), x2.to(dtype), y, margin=m)
    else:
        loss = _MARGIN_RANKING_T(x1.to(dtype), x2.to(dtype), y, m_t.to(x1.device))
    if reduction == "mean":
        return loss.mean()  # an empty input gives NaN, as in torch
    if reduction == "sum":
        return loss.sum()
    return loss


def pairwise_logistic_loss(scores: Tensor, labels: Tensor, lengths: Tensor | None = None,
                           reduction: Reduction = "mean", *, mask: Tensor | None = None,
                           padding_label: float | None = None) -> Tensor:
    r"""Pairwise logistic (RankNet) loss per session, averaged over each session's discordant pairs.

    Computed by the ``PairWiseLoss`` operator. See :class:`pairloss.nn.PairwiseLogisticLoss`.

    Args:
        scores: Scores; float16, bfloat16, float32 or float64. Flat: shape (N,) or (N, 1), sessions from
            ``lengths``. Padded: shape (B, L), one session per row.
        labels: Relevance labels (>= 0), integer or float, the shape of ``scores`` (flat: (N,) or
            (N, 1)); labels within 2^-23 tie. A negative label is an error unless it is declared padding.
        lengths: Flat layout only: 1-D integer tensor of session sizes summing to N (sessions are
            contiguous runs); ``None``: all N items form one session.
        reduction: ``"none"`` (the per-session vector: (S,), (B,) padded, (1,) for one session),
            ``"mean"`` (mean over the sessions that have at least one pair; 0 if none has) or ``"sum"``
            (sum over sessions); ``"elementwise_mean"`` is ``"mean"``, deprecated as in torch.
        mask: Bool, the shape of ``scores``: True for a real item, False for padding. A (B, L) mask makes
            (B, 1) scores a padded batch too.
        padding_label: Items with this label are padding (allRank's -1).

    Returns:
        A scalar, or the per-session losses for ``reduction="none"``, in the dtype of ``scores``. A
        session with no discordant pair (empty, one item, all tied, all padding) has loss 0.

    Raises:
        ValueError: bad ``reduction``, shapes, devices, lengths not summing to N or negative, NaN or
            (undeclared) negative labels, labels that require grad, lengths with padded scores.
        TypeError: non-float scores, non-integer lengths, bool/complex labels, a non-bool mask.

    Examples:
        >>> import torch
        >>> pairwise_logistic_loss(torch.tensor([0.0, 0.0]), torch.tensor([1, 0]))   # log(2)
        tensor(0.6931)
    """
    reduction = check_reduction(reduction)
    sessions = _sessions(scores, labels, lengths, mask, padding_label)
    return _session_loss("PairWiseLoss", sessions, reduction)


def pairwise_hinge_loss(scores: Tensor, labels: Tensor, lengths: Tensor | None = None, margin: Scalar = 1.0,
                        reduction: Reduction = "mean", *, mask: Tensor | None = None,
                        padding_label: float | None = None) -> Tensor:
    r"""Pairwise hinge loss per session, :math:`\max(0, \text{margin} - (s_{hi} - s_{lo}))` averaged over
    each session's discordant pairs.

    Computed by the ``PairWiseHingeLoss`` operator: exact, O(n log n) per session on CPU.
    See :class:`pairloss.nn.PairwiseHingeLoss`.

    Args:
        scores: Scores, flat (N,)/(N, 1) or padded (B, L); float16, bfloat16, float32 or float64.
        labels: Relevance labels (>= 0), the shape of ``scores``; labels within 2^-23 tie.
        lengths: Flat layout only: 1-D integer tensor of session sizes summing to N; ``None``: one session.
        margin: Required score gap between the higher- and the lower-labelled item: a number or a
            one-element tensor.
        reduction: ``"none"``, ``"mean"`` (over sessions with at least one pair; 0 if none has) or
            ``"sum"``; ``"elementwise_mean"`` is ``"mean"``.
        mask: Bool, the shape of ``scores``: True for a real item, False for padding.
        padding_label: Items with this label are padding.

    Returns:
        A scalar, or the per-session losses for ``reduction="none"``, in the dtype of ``scores``.

    Raises:
        ValueError: bad ``reduction``, shapes, devices or lengths; a non-finite margin; negative labels
            that are not declared padding.
        TypeError: non-float scores, non-integer lengths, bool/complex labels, non-numeric margin.

    Examples:
        >>> import torch
        >>> pairwise_hinge_loss(torch.tensor([0.5, 0.0, 2.0]), torch.tensor([1, 0, 0]), reduction="sum")
        tensor(1.5000)
    """
    reduction = check_reduction(reduction)
    m = check_scalar("margin", margin)
    sessions = _sessions(scores, labels, lengths, mask, padding_label)
    return _session_loss("PairWiseHingeLoss", sessions, reduction, {"margin": m})


def lambdarank_loss(scores: Tensor, labels: Tensor, lengths: Tensor | None = None, *, sigma: Scalar = 1.0,
                    topn: int = 0, gain: str = "exp2", reduction: Reduction = "mean", mask: Tensor | None = None,
                    padding_label: float | None = None) -> Tensor:
    r"""LambdaRank loss per session: the pairwise logistic loss with each discordant pair weighted by the
    NDCG change of swapping it in the current ranking (|ΔNDCG|), averaged over the session's pairs.

    Computed by the ``LambdaRankLoss`` operator; the weights are constants for the gradient (LambdaRank's
    lambdas, as in LightGBM). See :class:`pairloss.nn.LambdaRankLoss`. Layouts (flat with ``lengths``, or
    padded ``[B, L]`` with ``mask``/``padding_label``: NDCG over each row's real items) and reductions as
    in :func:`pairwise_logistic_loss`.

    Args:
        scores: Scores, flat (N,)/(N, 1) or padded (B, L); float16, bfloat16, float32 or float64.
        labels: Non-negative relevance grades, the shape of ``scores``; labels within 2^-23 tie.
        lengths: Flat layout only: 1-D integer tensor of session sizes summing to N; ``None``: one session.
        sigma: Scale of the score difference, ``log(1 + exp(-sigma (s_hi - s_lo)))``: a number or a
            one-element tensor.
        topn: Only pairs with an item in the current top ``topn`` carry weight (NDCG@topn); 0: all.
        gain: ``"exp2"`` (2^label - 1) or ``"linear"`` (label).
        reduction: ``"none"`` (shape (S,)), ``"mean"`` (over sessions with pairs; 0 if none has) or ``"sum"``.
        mask: Bool, the shape of ``scores``: True for a real item, False for padding.
        padding_label: Items with this label are padding.

    Examples:
        >>> import torch
        >>> lambdarank_loss(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2, 1, 0]), reduction="sum")
        tensor(0.3690)
    """
    reduction = check_reduction(reduction)
    sig = check_scalar("sigma", sigma)
    if isinstance(topn, bool) or not isinstance(topn, int):
        msg = f"topn must be an int (0: no truncation); got {topn!r}"
        raise TypeError(msg)
    if not isinstance(gain, str):
        msg = f"gain must be 'exp2' or 'linear'; got {gain!r}"
        raise TypeError(msg)
    sessions = _sessions(scores, labels, lengths, mask, padding_label)
    return _session_loss("LambdaRankLoss", sessions, reduction, {"sigma": sig},
                         {"topn": topn, "gain": gain})


# --------------------------------------------------------------------------------------------------------
# Negative and gradient reversal
# --------------------------------------------------------------------------------------------------------
def negative(x: Tensor, inplace: bool = False) -> Tensor:
    r"""Element-wise negative, :math:`y = -x` (the ``Negative`` operator; its gradient is ``-dy``).

    See :class:`pairloss.nn.Negative`.

    Args:
        x: Tensor of any shape and numeric dtype.
        inplace: Negate ``x`` in place (the schema allows it) and return it. The write goes through
            ``x.copy_``, so gradients flow and vmap and the compilers see an ordinary in-place copy.

    Returns:
        ``-x`` (``x`` itself when ``inplace``).

    Raises:
        TypeError: ``x`` is not a tensor, or is bool.

    Examples:
        >>> import torch
        >>> x = torch.tensor([1.0, -2.0])
        >>> negative(x)
        tensor([-1.,  2.])
    """
    t = check_tensor("x", x)
    if t.dtype == torch.bool:
        msg = "x must have a numeric dtype; got torch.bool (use torch.logical_not)"
        raise TypeError(msg)
    if not inplace:
        return _NEGATIVE(t)
    # the op's in-place variant (torch.ops.pairloss.negative_) runs the same kernel and copies; a copy_
    # here is the same cost and, unlike a mutating custom op, needs no functionalisation when traced
    return t.copy_(_NEGATIVE(t))


def negate_gradient(x: Tensor, scale: Scalar = 1.0) -> Tensor:
    r"""Gradient reversal: identity in the forward pass, :math:`-\text{scale} \cdot \partial L/\partial y`
    in the backward pass (the ``NegateGradient`` operator).

    See :class:`pairloss.nn.NegateGradient`. Forward-mode AD scales tangents the same way, so ``jacfwd``
    and ``jacrev`` agree on the Jacobian the layer declares, :math:`-\text{scale}\cdot I`.

    Args:
        x: Tensor of any shape and dtype.
        scale: Factor of the reversed gradient (Ganin & Lempitsky's :math:`\lambda`): a number, or a
            one-element tensor (a schedule that changes every step, without recompiling). 1.0 is the
            ``NegateGradient`` operator alone; other values add an identity op that scales the gradient.

    Returns:
        A tensor equal to ``x`` bit for bit.

    Raises:
        TypeError: ``x`` is not a tensor or ``scale`` is not a real number.
        ValueError: ``scale`` is not finite.

    Examples:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> negate_gradient(x, scale=0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    t = check_tensor("x", x)
    k = check_scalar("scale", scale)
    k_t = scalar_tensor(k)
    if k_t is not None:
        t = _SCALE_GRADIENT_T(t, k_t.to(t.device))
    elif k != 1.0:
        t = scale_gradient(t, k)
    return _NEGATE_GRADIENT(t)
