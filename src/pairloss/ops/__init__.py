"""Operator modules. Each registers its schema, kernels and gradient on import; adding an operator
means one new module here, one line in ``OPERATOR_MODULES`` and one test file."""

from __future__ import annotations

import importlib

__all__ = ["OPERATOR_MODULES"]

OPERATOR_MODULES = ("negative", "margin_ranking", "pairwise_loss", "pairwise_hinge")

for _name in OPERATOR_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
