"""What every session operator shares: the ``lengths`` doc, input validation and shape inference.

A session op takes scores X (N,) or (N, 1), relevance labels (N,) and optional ``lengths`` (S,) of
contiguous sessions, and outputs one value per session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pairloss._checks import as_float_array, as_session_labels, check_lengths, column_to_flat

__all__ = ["LENGTHS_DOC", "per_session_output", "prepare_sessions"]

LENGTHS_DOC = ("Optional session sizes, 1-D non-negative integers summing to N; sessions are contiguous. "
               "Without it all N items form one session.")


def per_session_output(specs: Sequence[tuple[tuple[int, ...], np.dtype]], _args: Mapping[str, Any]) -> list:
    """Shape inference of the session losses: one value per session, (1,) without lengths; X's dtype."""
    return [((specs[2][0][0],) if len(specs) > 2 else (1,), specs[0][1])]


def prepare_sessions(scores: npt.ArrayLike, labels: npt.ArrayLike, lengths: npt.ArrayLike | None,
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
