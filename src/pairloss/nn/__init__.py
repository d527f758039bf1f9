"""PyTorch front end: drop-in loss modules, functional forms, and every registry operator as a
``torch.library`` custom op (``torch.ops.pairloss.*``).

Importing this package registers the custom ops once (see :mod:`pairloss.nn._torch_ops`), and their ONNX
translations with ``torch.onnx.export`` as soon as the exporter loads (:func:`pairloss.nn._onnx.install_exporter_hook`),
so a plain ``torch.onnx.export`` or ``torch.export.export`` of a model holding these modules works.

Examples:
    >>> import torch
    >>> import pairloss.nn as pnn
    >>> criterion = pnn.MarginRankingLoss(margin=0.1)      # drop-in for torch.nn.MarginRankingLoss
    >>> criterion(torch.tensor([0.3]), torch.tensor([0.1]), torch.tensor([1.0]))
    tensor(0.)
    >>> print(pnn.torch_op("PairWiseLoss"))
    pairloss.pairwise_loss.default
"""

from __future__ import annotations

from pairloss.nn import _onnx, functional
from pairloss.nn._torch_ops import torch_op
from pairloss.nn.modules import (
    GradientReversal,
    LambdaRankLoss,
    MarginRankingLoss,
    NegateGradient,
    Negative,
    PairwiseHingeLoss,
    PairwiseLogisticLoss,
)

_onnx.install_exporter_hook()

__all__ = [
    "GradientReversal",
    "LambdaRankLoss",
    "MarginRankingLoss",
    "NegateGradient",
    "Negative",
    "PairwiseHingeLoss",
    "PairwiseLogisticLoss",
    "functional",
    "torch_op",
]
