r"""``torch.nn`` modules for the pairloss operators. Each holds its options and calls
:mod:`pairloss.nn.functional`; the documentation of each loss lives here.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from pairloss.nn import functional as F
from pairloss.nn._validation import Reduction, Scalar, check_reduction, check_scalar

__all__ = [
    "GradientReversal",
    "LambdaRankLoss",
    "MarginRankingLoss",
    "NegateGradient",
    "Negative",
    "PairwiseHingeLoss",
    "PairwiseLogisticLoss",
]


class MarginRankingLoss(nn.Module):
    r"""Margin ranking loss over pairs of scores: a drop-in for :class:`torch.nn.MarginRankingLoss`.

    For inputs :math:`x_1, x_2` and a target :math:`y \in \{1, -1\}` (``1``: :math:`x_1` should rank
    higher; ``-1``: :math:`x_2` should), the loss of each pair is

    .. math::
        \ell_i = \max\bigl(0,\; -y_i\,(x_{1,i} - x_{2,i}) + \text{margin}\bigr)

    and the output is :math:`\ell` itself (``reduction="none"``), :math:`\frac{1}{N}\sum_i \ell_i`
    (``"mean"``) or :math:`\sum_i \ell_i` (``"sum"``). The gradient passes at the kink
    (:math:`-y(x_1 - x_2) + \text{margin} = 0`), as with torch's ``clamp_min``. The loss is computed by the
    ``MarginRankingCriterion`` operator (Caffe2's), whose custom op has a fused kernel per device.

    Same constructor, defaults (``margin=0.0``, ``reduction="mean"``), values and gradients as torch for
    inputs of equal shape. Differences, all deliberate:

    * ``input1``, ``input2`` and ``target`` must have the **same shape**: mismatched shapes raise a
      ``ValueError`` listing all three, where torch checks only the number of dimensions and broadcasts
      silently (shapes (3, 1), (1, 3), (1, 1) give torch a 3×3 loss);
    * ``target`` must hold only -1 and +1 (torch accepts any value); it receives no gradient;
    * ``target`` must not require grad (torch differentiates it; pairloss says so instead of returning
      no gradient);
    * at a NaN distance the gradient passes (Caffe2's rule), where torch's ``clamp_min`` gives 0;
    * no legacy ``size_average``/``reduce`` arguments; a bad ``reduction`` raises at construction.

    Forward-mode AD, double backward and ``torch.func.vmap`` work as for torch's loss (the Hessian is 0
    almost everywhere).

    Args:
        margin: Required score gap; 0.0 as in torch (the registry operator's default is 1.0). A number,
            or a one-element tensor: changing a tensor margin's value does not recompile a compiled model.
        reduction: ``"none"``, ``"mean"`` (an empty input gives NaN, as in torch) or ``"sum"``;
            ``"elementwise_mean"`` is ``"mean"`` with torch's deprecation warning.

    Shape:
        - Input1: :math:`(*)`, any shape, including :math:`()` and :math:`(N)`; float16, bfloat16,
          float32 or float64.
        - Input2: same shape as Input1.
        - Target: same shape as Input1; integer or float, values -1/+1.
        - Output: scalar. With ``reduction="none"``, the shape of Input1.

    Examples:
        >>> import torch
        >>> from pairloss.nn import MarginRankingLoss
        >>> loss = MarginRankingLoss(margin=1.0)
        >>> scores_a = torch.tensor([2.0, 1.5, 3.0], requires_grad=True)
        >>> scores_b = torch.tensor([1.0, 2.0, 2.5])
        >>> target = torch.ones(3)                      # a should rank above b
        >>> output = loss(scores_a, scores_b, target)   # (0 + 1.5 + 0.5) / 3; pair 0 sits on the kink
        >>> output.item()
        0.6666666865348816
        >>> output.backward()
        >>> scores_a.grad                               # the gradient passes at the kink
        tensor([-0.3333, -0.3333, -0.3333])

    References:
        Caffe2 ``margin_ranking_criterion_op.cc``; PyTorch ``torch.nn.MarginRankingLoss``.
    """

    __constants__: ClassVar[tuple[str, ...]] = ("margin", "reduction")
    margin: Scalar
    reduction: str

    def __init__(self, margin: Scalar = 0.0, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction, warn=False)
        self.margin = check_scalar("margin", margin)
        self.reduction = reduction

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return F.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class PairwiseLogisticLoss(nn.Module):
    r"""Pairwise logistic (RankNet) loss over sessions of scored items (the ``PairWiseLoss`` operator).

    Items come in sessions (queries, users): contiguous runs of ``lengths[s]`` items. Within session
    :math:`s`, every pair whose labels differ (by at least :math:`2^{-23}`) is a discordant pair
    :math:`(hi, lo)` with :math:`l_{hi} > l_{lo}`, and the session's loss is the mean over its pairs
    :math:`P_s`:

    .. math::
        L_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \log\bigl(1 + e^{-(x_{hi} - x_{lo})}\bigr),
        \qquad L_s = 0 \text{ if } P_s = \emptyset

    so an empty, one-item or all-tied session contributes 0 (and no gradient). The softplus is evaluated
    exactly and stably (scores of :math:`10^{30}` give finite values and gradients). The output is

    * ``reduction="none"``: the per-session vector :math:`L`;
    * ``"mean"``: the mean of :math:`L_s` over the sessions that **have at least one pair**: a session
      without pairs changes neither the sum nor the count (0 when no session has a pair, not NaN);
    * ``"sum"``: :math:`\sum_s L_s`;
    * ``"elementwise_mean"``: ``"mean"``, with torch's deprecation warning.

    **Padded batches** (allRank, TF-Ranking): scores and labels of shape :math:`(B, L)` hold one session
    per row; padded items are declared by ``mask`` (False: padding) and/or ``padding_label`` (e.g. -1).
    Labels must be :math:`\ge 0` except declared padding (an undeclared -1 raises). The result equals the
    flat call on the valid items with ``lengths`` = items per row; padded items get zero gradient.

    Forward-mode AD (``torch.func.jvp``), double backward (Hessians, Hessian-vector products) and
    ``torch.func.vmap`` work through the operator.

    Args:
        reduction: ``"none"``, ``"mean"`` (over sessions with pairs) or ``"sum"``.
        padding_label: Label value that marks padded items (e.g. -1), or None.

    Shape:
        - Scores: :math:`(N)` or :math:`(N, 1)`; or :math:`(B, L)` padded. float16, bfloat16, float32 or
          float64.
        - Labels: the shape of the scores; integer or float (graded relevance, :math:`\ge 0`), no NaN.
        - Lengths (optional, flat only): :math:`(S)`, integer, non-negative, summing to :math:`N`. Without
          it all items form one session (:math:`S = 1`).
        - Mask (optional): bool, the shape of the scores; True for a real item.
        - Output: scalar. With ``reduction="none"``, :math:`(S)` (:math:`(B)` padded), in the dtype of the
          scores.

    Examples:
        >>> import torch
        >>> from pairloss.nn import PairwiseLogisticLoss
        >>> loss = PairwiseLogisticLoss(reduction="none")
        >>> scores = torch.tensor([2.0, 1.0, 0.0, 3.0, 3.0], requires_grad=True)
        >>> labels = torch.tensor([1, 0, 0, 2, 2])
        >>> per_session = loss(scores, labels, torch.tensor([3, 2]))   # session 2 is all tied
        >>> per_session.detach()
        tensor([0.2201, 0.0000])
        >>> per_session.sum().backward()
        >>> scores.grad
        tensor([-0.1941,  0.1345,  0.0596,  0.0000,  0.0000])

    References:
        Burges et al., 2005, "Learning to rank using gradient descent"; Caffe2 ``rank_loss_op.cc``.
    """

    __constants__: ClassVar[tuple[str, ...]] = ("reduction", "padding_label")
    reduction: str
    padding_label: float | None

    def __init__(self, reduction: Reduction = "mean", padding_label: float | None = None) -> None:
        super().__init__()
        check_reduction(reduction, warn=False)
        self.reduction = reduction
        self.padding_label = padding_label

    def forward(self, scores: Tensor, labels: Tensor, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        return F.pairwise_logistic_loss(scores, labels, lengths, reduction=self.reduction, mask=mask,
                                        padding_label=self.padding_label)

    def extra_repr(self) -> str:
        padding = "" if self.padding_label is None else f", padding_label={self.padding_label}"
        return f"reduction={self.reduction!r}{padding}"


class PairwiseHingeLoss(nn.Module):
    r"""Pairwise hinge loss over sessions of scored items (the ``PairWiseHingeLoss`` operator).

    With sessions and discordant pairs :math:`P_s` as in :class:`PairwiseLogisticLoss`,

    .. math::
        L_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} \max\bigl(0,\; \text{margin} - (x_{hi} - x_{lo})\bigr),
        \qquad L_s = 0 \text{ if } P_s = \emptyset.

    Reductions, padded batches (``mask``, ``padding_label``) and autodiff as in
    :class:`PairwiseLogisticLoss`; the Hessian is 0 almost everywhere.

    Args:
        margin: Required score gap between the higher- and the lower-labelled item (default 1.0): a
            number or a one-element tensor.
        reduction: ``"none"``, ``"mean"`` (over sessions with pairs) or ``"sum"``.
        padding_label: Label value that marks padded items (e.g. -1), or None.

    Shape:
        - Scores: :math:`(N)` or :math:`(N, 1)`; or :math:`(B, L)` padded. float16, bfloat16, float32 or
          float64.
        - Labels: the shape of the scores; integer or float, :math:`\ge 0`.
        - Lengths (optional, flat only): :math:`(S)`, integer, summing to :math:`N`.
        - Mask (optional): bool, the shape of the scores.
        - Output: scalar. With ``reduction="none"``, :math:`(S)` (:math:`(B)` padded).

    Examples:
        >>> import torch
        >>> from pairloss.nn import PairwiseHingeLoss
        >>> loss = PairwiseHingeLoss(margin=1.0, reduction="none")
        >>> loss(torch.tensor([0.5, 0.0, 2.0]), torch.tensor([1, 0, 0]))   # (0.5 + 2.5) / 2
        tensor([1.5000])
    """

    __constants__: ClassVar[tuple[str, ...]] = ("margin", "reduction", "padding_label")
    margin: Scalar
    reduction: str
    padding_label: float | None

    def __init__(self, margin: Scalar = 1.0, reduction: Reduction = "mean", padding_label: float | None = None
                 ) -> None:
        super().__init__()
        check_reduction(reduction, warn=False)
        self.margin = check_scalar("margin", margin)
        self.reduction = reduction
        self.padding_label = padding_label

    def forward(self, scores: Tensor, labels: Tensor, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        return F.pairwise_hinge_loss(scores, labels, lengths, margin=self.margin, reduction=self.reduction,
                                     mask=mask, padding_label=self.padding_label)

    def extra_repr(self) -> str:
        padding = "" if self.padding_label is None else f", padding_label={self.padding_label}"
        return f"margin={self.margin}, reduction={self.reduction!r}{padding}"


class LambdaRankLoss(nn.Module):
    r"""LambdaRank loss over sessions (the ``LambdaRankLoss`` operator): the pairwise logistic loss with each
    discordant pair weighted by the NDCG change of swapping it in the current ranking.

    .. math::
        L_s = \frac{1}{|P_s|} \sum_{(hi, lo) \in P_s} |\Delta\text{NDCG}_{hi,lo}|\,
              \log\bigl(1 + e^{-\sigma (x_{hi} - x_{lo})}\bigr)

    The weights are constants for the gradient (LambdaRank's lambdas; Burges et al., 2006).

    Reductions, padded batches (``mask``, ``padding_label``: NDCG over each row's real items) and autodiff as
    in :class:`PairwiseLogisticLoss`.

    Args:
        sigma: Scale of the score difference (default 1.0): a number or a one-element tensor.
        topn: Weight only pairs with an item in the current top ``topn`` (NDCG@topn); 0 (default): all.
        gain: ``"exp2"`` (2^label - 1, default) or ``"linear"``.
        reduction: ``"none"``, ``"mean"`` (over sessions with pairs) or ``"sum"``.
        padding_label: Label value that marks padded items (e.g. -1), or None.

    Examples:
        >>> import torch
        >>> from pairloss.nn import LambdaRankLoss
        >>> LambdaRankLoss(topn=10)(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2, 1, 0]))
        tensor(0.3690)
    """

    __constants__: ClassVar[tuple[str, ...]] = ("sigma", "topn", "gain", "reduction", "padding_label")
    sigma: Scalar
    topn: int
    gain: str
    reduction: str
    padding_label: float | None

    def __init__(self, sigma: Scalar = 1.0, topn: int = 0, gain: str = "exp2", reduction: Reduction = "mean",
                 padding_label: float | None = None) -> None:
        super().__init__()
        check_reduction(reduction, warn=False)
        self.sigma = check_scalar("sigma", sigma)
        self.topn, self.gain, self.reduction, self.padding_label = topn, gain, reduction, padding_label

    def forward(self, scores: Tensor, labels: Tensor, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        return F.lambdarank_loss(scores, labels, lengths, sigma=self.sigma, topn=self.topn, gain=self.gain,
                                 reduction=self.reduction, mask=mask, padding_label=self.padding_label)

    def extra_repr(self) -> str:
        padding = "" if self.padding_label is None else f", padding_label={self.padding_label}"
        return f"sigma={self.sigma}, topn={self.topn}, gain={self.gain!r}, reduction={self.reduction!r}{padding}"


class Negative(nn.Module):
    r"""Element-wise negative, :math:`y = -x`, for any shape and numeric dtype (the ``Negative`` operator).

    The gradient is :math:`-\partial L/\partial y`. ``-(+0.0)`` is ``-0.0``; integer minimums wrap.

    Args:
        inplace: Negate the input in place (the operator's schema allows it), as ``nn.ReLU(inplace=True)``.

    Shape:
        - Input: :math:`(*)`, any shape.
        - Output: same shape and dtype as the input.

    Examples:
        >>> import torch
        >>> from pairloss.nn import Negative
        >>> x = torch.tensor([[1, -2], [3, 0]])
        >>> _ = Negative(inplace=True)(x)
        >>> x
        tensor([[-1,  2],
                [-3,  0]])
    """

    __constants__: ClassVar[tuple[str, ...]] = ("inplace",)
    inplace: bool

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return F.negative(x, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class NegateGradient(nn.Module):
    r"""Gradient reversal layer (the ``NegateGradient`` operator): identity forward, reversed gradient.

    .. math::
        y = x, \qquad \frac{\partial L}{\partial x} = -\,\text{scale}\cdot\frac{\partial L}{\partial y}

    Placed between a feature extractor and a domain classifier, it makes the extractor *maximise* the
    classifier's loss while the classifier minimises it (domain-adversarial training, Ganin & Lempitsky,
    2015). The forward output equals the input bit for bit; the backward is exactly
    ``-scale * grad``.

    Args:
        scale: The factor :math:`\lambda` of the reversed gradient (default 1.0). A one-element tensor
            works too: a schedule that updates it in place every step (``layer.scale.fill_(lam)``, DANN's
            :math:`\lambda_p`) then needs no recompilation of a compiled model.

    Shape:
        - Input: :math:`(*)`, any shape and dtype.
        - Output: same as the input.

    Examples:
        >>> import torch
        >>> from pairloss.nn import GradientReversal
        >>> features = torch.tensor([0.5, -1.0], requires_grad=True)
        >>> reversed_features = GradientReversal(scale=2.0)(features)
        >>> torch.equal(reversed_features, features)
        True
        >>> reversed_features.sum().backward()
        >>> features.grad
        tensor([-2., -2.])

    References:
        Ganin & Lempitsky, 2015, "Unsupervised domain adaptation by backpropagation";
        Caffe2 ``negate_gradient_op.cc``.
    """

    __constants__: ClassVar[tuple[str, ...]] = ("scale",)
    scale: Scalar

    def __init__(self, scale: Scalar = 1.0) -> None:
        super().__init__()
        self.scale = check_scalar("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return F.negate_gradient(x, scale=self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class GradientReversal(NegateGradient):
    """The gradient reversal layer under its usual name: :class:`NegateGradient` (same arguments)."""
