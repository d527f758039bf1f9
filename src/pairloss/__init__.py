"""pairloss: exact, differentiable and fast pairwise ranking operators.

The NumPy functions here are the Caffe2 operators, unreduced; :mod:`pairloss.registry` holds their
schemas, kernels and gradient definitions; :mod:`pairloss.nn` is the PyTorch front end.
"""

from __future__ import annotations

from pairloss import registry
from pairloss.ops.lambdarank import lambdarank_loss, lambdarank_loss_gradient
from pairloss.ops.margin_ranking import margin_ranking_criterion, margin_ranking_criterion_gradient
from pairloss.ops.negative import negate_gradient, negative
from pairloss.ops.pairwise_hinge import pairwise_hinge_loss, pairwise_hinge_loss_gradient
from pairloss.ops.pairwise_loss import pairwise_loss, pairwise_loss_gradient

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "lambdarank_loss",
    "lambdarank_loss_gradient",
    "margin_ranking_criterion",
    "margin_ranking_criterion_gradient",
    "negate_gradient",
    "negative",
    "pairwise_hinge_loss",
    "pairwise_hinge_loss_gradient",
    "pairwise_loss",
    "pairwise_loss_gradient",
    "registry",
]
