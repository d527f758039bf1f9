"""Batches of whole sessions: which sessions each training step uses, on every rank.

Every rank draws the same plan for an epoch from ``(seed, epoch)``, so a data-parallel run takes the
same global batches as one process; each rank then trains on its part of every global batch
(:func:`rank_part`), which may be empty. Drawing from ``(seed, epoch)`` rather than a running stream
also means a resumed run needs no saved RNG state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .config import TrainConfig

__all__ = ["epoch_plan", "epoch_seed", "plan_batches", "rank_part", "sessions_with_pairs"]


def _positive_int_or_none(name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int or None; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value!r}")
    return int(value)


def plan_batches(
    lengths: npt.ArrayLike,
    *,
    max_items: int | None = None,
    sessions_per_batch: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
) -> list[np.ndarray]:
    """Session indices of each batch; a session is never split across batches.

    Args:
        lengths: ``(S,)`` session sizes.
        max_items: Greedily pack consecutive sessions while a batch holds at most this many items; a
            larger session forms a batch of its own (cutting it would change which pairs exist).
        sessions_per_batch: Fixed number of sessions per batch (the last may be smaller).
        shuffle: Visit sessions in a random order.
        seed: Seed of the shuffle; ``None`` draws fresh entropy.

    Returns:
        One int64 array of session indices per batch. Exactly one of ``max_items`` and
        ``sessions_per_batch`` must be given.
    """
    max_items = _positive_int_or_none("max_items", max_items)
    sessions_per_batch = _positive_int_or_none("sessions_per_batch", sessions_per_batch)
    if (max_items is None) == (sessions_per_batch is None):
        raise ValueError(
            "exactly one of max_items and sessions_per_batch must be given; got "
            f"max_items={max_items!r}, sessions_per_batch={sessions_per_batch!r}"
        )
    sizes = np.asarray(lengths, dtype=np.int64)
    n = sizes.shape[0]
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    if sessions_per_batch is not None:
        return [order[i : i + sessions_per_batch] for i in range(0, n, sessions_per_batch)]
    batches: list[np.ndarray] = []
    start, count = 0, 0
    for pos, size in enumerate(sizes[order].tolist()):
        if count and count + size > max_items:  # type: ignore[operator]
            batches.append(order[start:pos])
            start, count = pos, 0
        count += size
    if count:
        batches.append(order[start:])
    return batches


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s batch order: a function of ``(seed, epoch)`` only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_plan(lengths: npt.ArrayLike, config: TrainConfig, epoch: int) -> list[np.ndarray]:
    """The shuffled global batches of ``epoch`` (1-based), identical on every rank."""
    by_items = config.max_items_per_batch
    return plan_batches(
        lengths,
        max_items=by_items,
        sessions_per_batch=None if by_items else config.sessions_per_batch,
        shuffle=True,
        seed=epoch_seed(config.seed, epoch),
    )


def rank_part(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's sessions of a global batch: every ``world_size``-th, starting at ``rank``."""
    return batch[rank::world_size]


def sessions_with_pairs(lengths: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices of the sessions whose labels are not all equal: the only ones a pairwise loss can use."""
    offsets = np.concatenate(([0], np.cumsum(lengths)))[:-1]
    if offsets.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo = np.minimum.reduceat(labels, offsets)
    hi = np.maximum.reduceat(labels, offsets)
    return np.flatnonzero(hi > lo)
