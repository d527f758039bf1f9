"""Hypothesis strategies: input draws for every registered operator, keyed by operator name.

A new operator adds one entry to ``OP_INPUTS``; the generic suite in test_operators.py picks it up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@st.composite
def sessions(draw: st.DrawFn, *, max_sessions: int = 6, max_len: int = 9, n_grades: int = 4,
             score_scale: float = 3.0) -> dict[str, Any]:
    """Scores, graded labels and lengths; sessions may be empty, one item or all tied."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_sessions = draw(st.integers(0, max_sessions))
    lengths = rng.integers(0, max_len + 1, size=n_sessions).astype(np.int32)
    n = int(lengths.sum())
    labels = rng.integers(0, draw(st.integers(1, n_grades)), size=n).astype(np.float32)
    scores = (rng.standard_normal(n) * score_scale).astype(np.float64)
    return {"scores": scores, "labels": labels, "lengths": lengths}


@st.composite
def pairs(draw: st.DrawFn, *, max_n: int = 40) -> dict[str, Any]:
    """X1, X2, Y in {-1,+1} and a margin, as Caffe2's margin_ranking_criterion_op_test draws them."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=3)))
    n = int(np.prod(shape))
    if n > max_n:
        shape = (n % max_n,)
    x1 = rng.standard_normal(shape)
    x2 = rng.standard_normal(shape)
    y = rng.choice(np.array([-1, 1], np.int32), size=shape)
    margin = draw(st.floats(-0.5, 1.5, allow_nan=False))
    return {"x1": x1, "x2": x2, "y": y, "margin": margin}


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    """hu.tensor(): 1-4 dims of size 1-5, elements in [-1, 1]."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).uniform(-1, 1, size=shape)


def _mrc(case: dict[str, Any]) -> tuple[list[np.ndarray], dict[str, Any]]:
    return [case["x1"], case["x2"], case["y"]], {"margin": case["margin"]}


def _pairwise(case: dict[str, Any]) -> tuple[list[np.ndarray], dict[str, Any]]:
    return [case["scores"], case["labels"], case["lengths"]], {}


def _unary(x: np.ndarray) -> tuple[list[np.ndarray], dict[str, Any]]:
    return [x], {}


# operator name -> (strategy, function turning one draw into (inputs, args) of the FORWARD op)
OP_INPUTS: dict[str, tuple[st.SearchStrategy, Callable[[Any], tuple[list[np.ndarray], dict[str, Any]]]]] = {
    "MarginRankingCriterion": (pairs(), _mrc),
    "PairWiseLoss": (sessions(), _pairwise),
    "PairWiseHingeLoss": (sessions(), lambda c: ([c["scores"], c["labels"], c["lengths"]], {"margin": 1.0})),
    "LambdaRankLoss": (sessions(), lambda c: ([c["scores"], c["labels"], c["lengths"]],
                                              {"sigma": 1.5, "topn": 3, "gain": "exp2"})),
    "Negative": (tensors(), _unary),
    "NegateGradient": (tensors(), _unary),
}
