r"""Functional PyTorch front end: pairwise ranking losses and gradient-reversal as differentiable functions.

Each function validates its arguments (dtypes, shapes, devices, ``reduction``) before any kernel runs,
then calls the registry operator through its ``torch.library`` custom op (``torch.ops.pairloss.*``, see
:mod:`pairloss.nn._torch_ops`), so every function works under autograd, ``torch.compile(fullgraph=True)``
and ``torch.export``, on CPU and CUDA. The full documentation, with the maths, lives on the module
classes in :mod:`pairloss.nn.modules`.

Examples:
    >>> import torch
    >>> import pairloss.nn.functional as PF
    >>> scores = torch.tensor([2.0, 1.0, 0.0, 3.0, 3.0])
    >>> labels = torch.tensor([1, 0, 0, 2, 2])
    >>> PF.pairwise_logistic_loss(scores, labels, torch.tensor([3, 2]), reduction="none")
    tensor([0.2201, 0.0000])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pairloss.nn._torch_ops import scale_gradient, torch_op

__all__ = [
    "lambdarank_loss",
    "margin_ranking_loss",
    "negate_gradient",
    "negative",
    "pairwise_hinge_loss",
    "pairwise_logistic_loss",
]

Reduction = Literal["none", "mean", "sum"]
_REDUCTIONS = ("none", "mean", "sum")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Resolved once at import (dynamo then sees plain module constants, not registry look-ups).
_MARGIN_RANKING = torch_op("MarginRankingCriterion")
_PAIRWISE_LOGISTIC = torch_op("PairWiseLoss")
_NEGATIVE = torch_op("Negative")
_NEGATIVE_INPLACE = torch_op("Negative", inplace=True)
_NEGATE_GRADIENT = torch_op("NegateGradient")
_PAIRWISE_HINGE = torch_op("PairWiseHingeLoss")
_LAMBDARANK = torch_op("LambdaRankLoss")


# --------------------------------------------------------------------------------------------------------
# Validation (before any kernel; every message names the argument)
# --------------------------------------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        # torch's own wording (torch.nn._reduction.get_enum), so code matching it keeps working
        msg = f"{reduction} is not a valid value for reduction; expected one of 'none', 'mean', 'sum'"
        raise ValueError(msg)


def _check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        msg = f"{name} must be a torch.Tensor; got {type(value).__name__}"
        raise TypeError(msg)
    return value


def _check_float(name: str, value: object) -> Tensor:
    t = _check_tensor(name, value)
    if t.dtype not in _FLOAT_DTYPES:
        msg = (f"{name} must be a float16, bfloat16, float32 or float64 tensor; got dtype={t.dtype} "
               f"(cast with {name}.float())")
        raise TypeError(msg)
    return t


def _check_real_labels(name: str, value: object) -> Tensor:
    t = _check_tensor(name, value)
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or _is_integer(t.dtype)):
        msg = f"{name} must be an integer or floating-point tensor; got dtype={t.dtype}"
        raise TypeError(msg)
    return t


def _is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a real number; got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"{name} must be finite; got {value!r}"
        raise ValueError(msg)
    return float(value)


def _check_same_device(**tensors: Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n}: {d}" for n, d in devices.items())
        msg = f"all tensors must be on one device; got {listing}"
        raise ValueError(msg)


def _check_sessions(scores: object, labels: object, lengths: object) -> tuple[Tensor, Tensor, Tensor | None]:
    """Scores (N,)/(N, 1) float, labels (N,)/(N, 1) integer or float, lengths None or 1-D integer."""
    s = _check_float("scores", scores)
    if s.dim() == 0 or any(d != 1 for d in s.shape[1:]):
        msg = f"scores must have shape (N,) or (N, 1) (one score per item); got shape {tuple(s.shape)}"
        raise ValueError(msg)
    n = s.shape[0]
    lab = _check_real_labels("labels", labels)
    if lab.dim() not in (1, 2) or (lab.dim() == 2 and lab.shape[1] != 1):
        msg = f"labels must have shape (N,) or (N, 1); got shape {tuple(lab.shape)}"
        raise ValueError(msg)
    if lab.shape[0] != n:
        msg = f"labels must have one entry per score: scores has N={n}; labels has {lab.shape[0]}"
        raise ValueError(msg)
    lens = None
    if lengths is not None:
        lens = _check_tensor("lengths", lengths)
        if not _is_integer(lens.dtype):
            msg = f"lengths must be an integer tensor; got dtype={lens.dtype} (cast with lengths.long())"
            raise TypeError(msg)
        if lens.dim() != 1:
            msg = f"lengths must be 1-D (one size per session); got shape {tuple(lens.shape)}"
            raise ValueError(msg)
        # the sum and the signs are checked by the kernel: reading values here would force a device sync
        # and break torch.compile(fullgraph=True)
    _check_same_device(scores=s, labels=lab, lengths=lens)
    return s, lab, lens


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()  # an empty input gives NaN, as in torch
    if reduction == "sum":
        return loss.sum()
    return loss


# --------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------
def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0,
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
            same shape. Values other than ±1 are rejected by the operator.
        margin: Required score gap (torch's default 0.0; the registry operator's own default is 1.0).
        reduction: ``"none"`` (per-pair loss), ``"mean"`` (NaN for empty input, like torch) or ``"sum"``.

    Returns:
        A scalar, or the per-pair loss with the shape of ``input1`` for ``reduction="none"``.

    Raises:
        ValueError: bad ``reduction``, mismatched shapes or devices, a target value other than ±1.
        TypeError: non-float inputs, a bool/complex target, a non-numeric margin.

    Examples:
        >>> import torch
        >>> x1 = torch.tensor([2.0, 1.5, 3.0]); x2 = torch.tensor([1.0, 2.0, 1.0])
        >>> margin_ranking_loss(x1, x2, torch.ones(3), margin=1.0, reduction="none")
        tensor([0.0000, 1.5000, 0.0000])
    """
    _check_reduction(reduction)
    x1 = _check_float("input1", input1)
    x2 = _check_float("input2", input2)
    y = _check_real_labels("target", target)
    if not (x1.shape == x2.shape == y.shape):
        msg = ("margin_ranking_loss: input1, input2 and target must have the same shape (pairloss does not "
               f"broadcast); got input1: {tuple(x1.shape)}, input2: {tuple(x2.shape)}, target: {tuple(y.shape)}")
        raise ValueError(msg)
    _check_same_device(input1=x1, input2=x2, target=y)
    m = _check_number("margin", margin)
    # torch's type promotion: the loss takes the common dtype of the scores (and of a float target)
    dtype = torch.promote_types(x1.dtype, x2.dtype)
    if y.is_floating_point():
        dtype = torch.promote_types(dtype, y.dtype)
    loss = _MARGIN_RANKING(x1.to(dtype), x2.to(dtype), y, margin=m)
    return _reduce(loss, reduction)


def pairwise_logistic_loss(scores: Tensor, labels: Tensor, lengths: Tensor | None = None,
                           reduction: Reduction = "mean") -> Tensor:
    r"""Pairwise logistic (RankNet) loss per session, averaged over each session's discordant pairs.

    Computed by the ``PairWiseLoss`` operator. See :class:`pairloss.nn.PairwiseLogisticLoss`.

    Args:
        scores: Scores, shape (N,) or (N, 1); float16, bfloat16, float32 or float64.
        labels: Relevance labels, shape (N,) or (N, 1), integer or float; labels within 2^-23 tie.
        lengths: 1-D integer tensor of session sizes summing to N (sessions are contiguous runs);
            ``None``: all N items form one session.
        reduction: ``"none"`` (the per-session vector, shape (S,)), ``"mean"`` (mean over sessions) or
            ``"sum"`` (sum over sessions).

    Returns:
        A scalar, or shape (S,) for ``reduction="none"`` ((1,) without ``lengths``), in the dtype of
        ``scores``. A session with no discordant pair (empty, one item, all tied) contributes 0.

    Raises:
        ValueError: bad ``reduction``, shapes, devices, lengths not summing to N or negative, NaN labels.
        TypeError: non-float scores, non-integer lengths, bool/complex labels.

    Examples:
        >>> import torch
        >>> pairwise_logistic_loss(torch.tensor([0.0, 0.0]), torch.tensor([1, 0]))   # log(2)
        tensor(0.6931)
    """
    _check_reduction(reduction)
    s, lab, lens = _check_sessions(scores, labels, lengths)
    return _reduce(_PAIRWISE_LOGISTIC(s, lab, lens), reduction)


def pairwise_hinge_loss(scores: Tensor, labels: Tensor, lengths: Tensor | None = None, margin: float = 1.0,
                        reduction: Reduction = "mean") -> Tensor:
    r"""Pairwise hinge loss per session, :math:`\max(0, \text{margin} - (s_{hi} - s_{lo}))` averaged over
    each session's discordant pairs.

    Computed by the ``PairWiseHingeLoss`` operator: exact, O(n log n) per session on CPU.
    See :class:`pairloss.nn.PairwiseHingeLoss`.

    Args:
        scores: Scores, shape (N,) or (N, 1); float16, bfloat16, float32 or float64.
        labels: Relevance labels, shape (N,) or (N, 1), integer or float; labels within 2^-23 tie.
        lengths: 1-D integer tensor of session sizes summing to N; ``None``: one session.
        margin: Required score gap between the higher- and the lower-labelled item.
        reduction: ``"none"`` (shape (S,)), ``"mean"`` (over sessions) or ``"sum"``.

    Returns:
        A scalar, or shape (S,) for ``reduction="none"``, in the dtype of ``scores``.

    Raises:
        ValueError: bad ``reduction``, shapes, devices or lengths; a non-finite margin.
        TypeError: non-float scores, non-integer lengths, bool/complex labels, non-numeric margin.

    Examples:
        >>> import torch
        >>> pairwise_hinge_loss(torch.tensor([0.5, 0.0, 2.0]), torch.tensor([1, 0, 0]), reduction="sum")
        tensor(1.5000)
    """
    _check_reduction(reduction)
    s, lab, lens = _check_sessions(scores, labels, lengths)
    m = _check_number("margin", margin)
    return _reduce(_PAIRWISE_HINGE(s, lab, lens, margin=m), reduction)


def lambdarank_loss(scores: Tensor, labels: Tensor, lengths: Tensor | None = None, *, sigma: float = 1.0,
                    topn: int = 0, gain: str = "exp2", reduction: Reduction = "mean") -> Tensor:
    r"""LambdaRank loss per session: the pairwise logistic loss with each discordant pair weighted by the
    NDCG change of swapping it in the current ranking (|ΔNDCG|), averaged over the session's pairs.

    Computed by the ``LambdaRankLoss`` operator; the weights are constants for the gradient (LambdaRank's
    lambdas, as in LightGBM). See :class:`pairloss.nn.LambdaRankLoss`.

    Args:
        scores: Scores, shape (N,) or (N, 1); float16, bfloat16, float32 or float64.
        labels: Non-negative relevance grades, shape (N,) or (N, 1); labels within 2^-23 tie.
        lengths: 1-D integer tensor of session sizes summing to N; ``None``: one session.
        sigma: Scale of the score difference, ``log(1 + exp(-sigma (s_hi - s_lo)))``.
        topn: Only pairs with an item in the current top ``topn`` carry weight (NDCG@topn); 0: all.
        gain: ``"exp2"`` (2^label - 1) or ``"linear"`` (label).
        reduction: ``"none"`` (shape (S,)), ``"mean"`` (over sessions) or ``"sum"``.

    Examples:
        >>> import torch
        >>> lambdarank_loss(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2, 1, 0]), reduction="sum")
        tensor(0.3690)
    """
    _check_reduction(reduction)
    s, lab, lens = _check_sessions(scores, labels, lengths)
    sig = _check_number("sigma", sigma)
    if isinstance(topn, bool) or not isinstance(topn, int):
        msg = f"topn must be an int (0: no truncation); got {topn!r}"
        raise TypeError(msg)
    if not isinstance(gain, str):
        msg = f"gain must be 'exp2' or 'linear'; got {gain!r}"
        raise TypeError(msg)
    return _reduce(_LAMBDARANK(s, lab, lens, sigma=sig, topn=topn, gain=gain), reduction)


# --------------------------------------------------------------------------------------------------------
# Negative and gradient reversal
# --------------------------------------------------------------------------------------------------------
def negative(x: Tensor, inplace: bool = False) -> Tensor:
    r"""Element-wise negative, :math:`y = -x` (the ``Negative`` operator; its gradient is ``-dy``).

    See :class:`pairloss.nn.Negative`.

    Args:
        x: Tensor of any shape and numeric dtype.
        inplace: Negate ``x`` in place (the schema allows it) and return it. Under autograd the in-place
            write goes through ``x.copy_``, so gradients still flow.

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
    t = _check_tensor("x", x)
    if t.dtype == torch.bool:
        msg = "x must have a numeric dtype; got torch.bool (use torch.logical_not)"
        raise TypeError(msg)
    if not inplace:
        return _NEGATIVE(t)
    if torch.is_grad_enabled() and t.requires_grad:
        return t.copy_(_NEGATIVE(t))  # autograd records the copy; Negative's backward needs no saved input
    _NEGATIVE_INPLACE(t)
    return t


def negate_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    r"""Gradient reversal: identity in the forward pass, :math:`-\text{scale} \cdot \partial L/\partial y`
    in the backward pass (the ``NegateGradient`` operator).

    See :class:`pairloss.nn.NegateGradient`.

    Args:
        x: Tensor of any shape and dtype.
        scale: Factor of the reversed gradient (Ganin & Lempitsky's :math:`\lambda`); 1.0 is the
            ``NegateGradient`` operator alone, other values add an identity op that scales the gradient.

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
    t = _check_tensor("x", x)
    k = _check_number("scale", scale)
    if k != 1.0:
        t = scale_gradient(t, k)
    return _NEGATE_GRADIENT(t)
