"""Training objectives: a loss name of :data:`pairloss.ltr.config.LOSSES` -> a loss on a batch of sessions.

The losses are :mod:`pairloss.nn.functional`'s. An objective returns the batch's mean loss and the number
of terms averaged (sessions, or sampled pairs), so a data-parallel step can weight each rank's mean by its
share of the global batch and get the gradient of the global mean exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import pairloss.nn.functional as PF

from .config import LOSSES, TrainConfig
from .data import RankingDataset

__all__ = ["LOSS_FUNCTIONS", "Batch", "Objective", "loss_options", "make_objective", "penalty", "sample_pairs"]

#: The :mod:`pairloss.nn.functional` loss of each name in :data:`pairloss.ltr.config.LOSSES`.
LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "pairwise_logistic": PF.pairwise_logistic_loss,
    "pairwise_hinge": PF.pairwise_hinge_loss,
    "margin_ranking": PF.margin_ranking_loss,
    "lambdarank": PF.lambdarank_loss,
}
assert set(LOSS_FUNCTIONS) == set(LOSSES), "every configurable loss needs a function, and only those"


@dataclass(frozen=True)
class Batch:
    """Whole sessions on the training device, plus the NumPy sessions (for pair sampling)."""

    sessions: RankingDataset
    features: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def of(cls, sessions: RankingDataset, device: torch.device) -> Batch:
        """Moves ``sessions`` to ``device``."""
        return cls(
            sessions,
            torch.from_numpy(sessions.features).to(device),
            torch.from_numpy(sessions.labels).to(device),
            torch.from_numpy(sessions.lengths).to(device),
        )


#: ``(scores, batch, pair_rng) -> (mean loss, number of terms averaged)``. An empty batch gives a zero
#: loss that still depends on ``scores``, so a rank without sessions joins the backward pass.
Objective = Callable[[torch.Tensor, Batch, np.random.Generator], tuple[torch.Tensor, int]]


def sample_pairs(sessions: RankingDataset, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_pairs`` (higher, lower) label-discordant item pairs per session, as batch row indices."""
    firsts: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    seconds: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    for start, n in zip(sessions.session_offsets[:-1].tolist(), sessions.lengths.tolist(), strict=True):
        labels = sessions.labels[start : start + n]
        hi, lo = np.nonzero(labels[:, None] > labels[None, :])
        if hi.size > max_pairs:
            pick = rng.choice(hi.size, size=max_pairs, replace=False)
            hi, lo = hi[pick], lo[pick]
        firsts.append(hi + start)
        seconds.append(lo + start)
    return np.concatenate(firsts), np.concatenate(seconds)


def loss_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword options ``config`` gives its loss function."""
    if config.loss == "pairwise_logistic":
        return {}
    if config.loss == "lambdarank":
        return {"sigma": config.sigma, "topn": config.topn, "gain": config.gain}
    return {"margin": config.margin}


def make_objective(config: TrainConfig, loss_fn: Callable[..., torch.Tensor] | None = None) -> Objective:
    """The objective of ``config.loss`` (``loss_fn``, if given, replaces its function, same signature).

    Training batches hold only sessions with a pair, so the session losses' ``"mean"`` is over all of them.
    """
    fn = LOSS_FUNCTIONS[config.loss] if loss_fn is None else loss_fn
    kwargs = loss_options(config)

    def session_loss(scores: torch.Tensor, batch: Batch, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        if batch.sessions.n_sessions == 0:
            return scores.sum(), 0
        return fn(scores, batch.labels, batch.lengths, **kwargs, reduction="mean"), batch.sessions.n_sessions

    def pair_loss(scores: torch.Tensor, batch: Batch, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        first, second = sample_pairs(batch.sessions, config.pairs_per_session, rng)
        if first.size == 0:
            return scores.sum(), 0
        i = torch.from_numpy(first).to(scores.device)
        j = torch.from_numpy(second).to(scores.device)
        target = torch.ones(i.shape[0], dtype=scores.dtype, device=scores.device)
        return fn(scores[i], scores[j], target, **kwargs, reduction="mean"), int(i.shape[0])

    return pair_loss if LOSSES[config.loss].pairs == "sampled" else session_loss


def penalty(model: torch.nn.Module, l1: float, l2: float) -> torch.Tensor | None:
    """``l1 * sum|W| + l2 * sum W**2`` over the weight matrices (not biases), or ``None`` if both are 0."""
    if l1 == 0 and l2 == 0:
        return None
    total = next(model.parameters()).new_zeros(())
    for w in (p for p in model.parameters() if p.ndim >= 2):
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.pow(2).sum()
    return total
