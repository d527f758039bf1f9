"""Operator modules. Each registers its schema, kernels and gradient on import; adding an operator
means one new module here, one name in the import below and one test file."""

from __future__ import annotations

from pairloss.ops import lambdarank, margin_ranking, negative, pairwise_hinge, pairwise_loss

__all__ = ["OPERATOR_MODULES"]

OPERATOR_MODULES = (negative, margin_ranking, pairwise_loss, pairwise_hinge, lambdarank)
