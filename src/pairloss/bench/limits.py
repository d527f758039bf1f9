"""Measured compute limits: the arithmetic each kernel cannot avoid, alone, in vectorised form.

- Pairwise logistic: per pair, given one exp per *item* (``e_k = exp(x_k - c)``), the forward needs one
  division and one log1p (``log1p(e_lo / e_hi)``) and the gradient one more division
  (``e_lo / (e_lo + e_hi)``), plus the sums. We time exactly that on contiguous blocks that stay in cache,
  three ways, and the fastest is the limit: NumPy ufuncs over blocks; a Numba loop with libm's ``log1p``;
  a Numba loop with a vectorisable ``log1p`` (``2 atanh(t)``, ``t = a / (2b + a)``, its odd series in
  ``t^2 <= 1/9``: 16 terms in float64, truncation < 2e-17; 7 terms in float32, < 2e-8). Both dtypes,
  on the benchmark's threads (``prange`` over blocks).
- Pairwise hinge: an exact hinge needs the scores of each session in order, so its limit is one argsort
  per session (NumPy, and Numba ``prange`` over sessions; the faster counts).
- MarginRankingCriterion: copy bandwidth (``np.copyto`` of the bytes forward + backward must move).
- Negative: ``np.negative`` and ``np.copyto`` of the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from pairloss.bench.timing import Stats, interleaved

__all__ = ["hinge_sort_limit", "logistic_limit_call", "logistic_limits"]

_BLOCK = 4096  # pairs per block: two float64 blocks are 64 KiB, in L2 everywhere


@numba.njit(parallel=True, fastmath=True, cache=True)
def _poly_f64(a, b, reps):  # pragma: no cover - compiled
    total = 0.0
    for _r in numba.prange(reps):
        acc = 0.0
        for k in range(a.size):
            ak = a[k]
            bk = b[k]
            t = ak / (bk + bk + ak)
            w = t * t
            p = 1.0 / 31.0
            p = p * w + 1.0 / 29.0
            p = p * w + 1.0 / 27.0
            p = p * w + 1.0 / 25.0
            p = p * w + 1.0 / 23.0
            p = p * w + 1.0 / 21.0
            p = p * w + 1.0 / 19.0
            p = p * w + 1.0 / 17.0
            p = p * w + 1.0 / 15.0
            p = p * w + 1.0 / 13.0
            p = p * w + 1.0 / 11.0
            p = p * w + 1.0 / 9.0
            p = p * w + 1.0 / 7.0
            p = p * w + 1.0 / 5.0
            p = p * w + 1.0 / 3.0
            p = p * w + 1.0
            acc += 2.0 * t * p + ak / (ak + bk)
        total += acc
    return total


@numba.njit(parallel=True, fastmath=True, cache=True)
def _poly_f32(a, b, reps):  # pragma: no cover - compiled
    total = 0.0
    two = np.float32(2.0)
    one = np.float32(1.0)
    for _r in numba.prange(reps):
        acc = np.float32(0.0)
        for k in range(a.size):
            ak = a[k]
            bk = b[k]
            t = ak / (bk + bk + ak)
            w = t * t
            p = np.float32(1.0 / 15.0)
            p = p * w + np.float32(1.0 / 13.0)
            p = p * w + np.float32(1.0 / 11.0)
            p = p * w + np.float32(1.0 / 9.0)
            p = p * w + np.float32(1.0 / 7.0)
            p = p * w + np.float32(1.0 / 5.0)
            p = p * w + np.float32(1.0 / 3.0)
            p = p * w + one
            acc += two * t * p + ak / (ak + bk)
        total += acc
    return total


@numba.njit(parallel=True, fastmath=True, cache=True)
def _libm(a, b, reps):  # pragma: no cover - compiled
    total = 0.0
    for _r in numba.prange(reps):
        acc = a[0] * 0  # accumulate in the block's dtype
        for k in range(a.size):
            ak = a[k]
            bk = b[k]
            acc += np.log1p(ak / bk) + ak / (ak + bk)
        total += acc
    return total


def _numpy_blocks(a: np.ndarray, b: np.ndarray, reps: int) -> float:
    q = np.empty_like(a)
    total = 0.0
    for _ in range(reps):
        np.divide(a, b, out=q)
        np.log1p(q, out=q)
        total += float(q.sum())
        np.add(a, b, out=q)
        np.divide(a, q, out=q)
        total += float(q.sum())
    return total


def _blocks(rng: np.random.Generator, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """One block of (a, b) with 0 < a <= b: the smaller e of a pair over the larger."""
    b = rng.uniform(0.5, 1.0, _BLOCK).astype(dtype)
    return (b * rng.uniform(1e-3, 1.0, _BLOCK)).astype(dtype), b


def logistic_limits(pairs: int, repeats: int) -> dict[str, Stats]:
    """ns-per-pair figures (as Stats of seconds per pair) of each formulation, float64 and float32."""
    rng = np.random.default_rng(0)
    reps = max(numba.get_num_threads(), pairs // _BLOCK)
    out: dict[str, Stats] = {}
    fns = {}
    for dt in (np.float64, np.float32):
        a, b = _blocks(rng, dt)
        name = np.dtype(dt).name
        poly = _poly_f64 if dt is np.float64 else _poly_f32
        fns[f"numba, polynomial log1p, {name}"] = lambda a=a, b=b, poly=poly: poly(a, b, reps)
        fns[f"numba, libm log1p, {name}"] = lambda a=a, b=b: _libm(a, b, reps)
        fns[f"numpy ufunc blocks, {name}"] = lambda a=a, b=b: _numpy_blocks(a, b, reps)
    for name, st in interleaved(fns, repeats).items():
        out[name] = st.per(reps * _BLOCK)
    return out


def logistic_limit_call(pairs: int, dtype: type) -> tuple[Callable[[], float], int]:
    """(one call of the vectorised-log1p limit loop over about ``pairs`` pairs, the pairs it computes): a
    contender to time beside a kernel in the same interleaved repeats, so that a kernel's distance from the
    limit is measured in the same minutes as the kernel (this VM's speed drifts within a run)."""
    a, b = _blocks(np.random.default_rng(0), dtype)
    reps = max(numba.get_num_threads(), round(pairs / _BLOCK))
    poly = _poly_f64 if np.dtype(dtype) == np.float64 else _poly_f32
    return (lambda: poly(a, b, reps)), reps * _BLOCK


@numba.njit(parallel=True, cache=True)
def _argsort_sessions(x):  # pragma: no cover - compiled
    out = np.empty(x.shape, np.int64)
    for s in numba.prange(x.shape[0]):
        out[s] = np.argsort(x[s])
    return out


def hinge_sort_limit(scores: np.ndarray, repeats: int) -> dict[str, Stats]:
    """Seconds per item of one argsort of every session's scores; ``scores`` is (sessions, n) float32."""
    fns = {"np.argsort per session": lambda: np.argsort(scores, axis=1),
           "numba prange argsort per session": lambda: _argsort_sessions(scores)}
    return {name: st.per(scores.size) for name, st in interleaved(fns, repeats).items()}
