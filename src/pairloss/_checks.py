"""Input validation shared by every operator and front end.

Kernels receive only input that has passed these checks, so a fast kernel never sees a shape it would
read out of bounds on. Every error names the argument, what was expected, what came, and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "FLT_EPSILON",
    "as_array",
    "as_float_array",
    "as_session_labels",
    "as_sign_labels",
    "check_lengths",
    "check_same_shape",
    "column_to_flat",
    "compute_dtype",
    "describe_values",
]

# Caffe2 compares labels with an absolute tolerance of float32's machine epsilon (2^-23), whatever the
# dtype, so integer grades and their float32 copies tie the same way.
FLT_EPSILON = float(np.finfo(np.float32).eps)


def describe_values(values: np.ndarray, limit: int = 8) -> str:
    flat = np.asarray(values).ravel()
    shown = flat[:limit].tolist()
    return f"{shown}{'...' if flat.size > limit else ''}"


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (a big-endian file read straight into NumPy): the kernels read native."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def as_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a plain, native-byte-order ndarray; masked arrays and non-array-likes raise TypeError."""
    if isinstance(value, np.ma.MaskedArray):
        msg = (f"{name} must be a plain array; got a masked array (its mask would be ignored): fill or drop the "
               f"masked entries first (value.filled(...) or value.compressed())")
        raise TypeError(msg)
    if isinstance(value, np.ndarray):
        return _native(np.asarray(value))  # a subclass (np.matrix) becomes a plain array
    if type(value).__module__.startswith("torch"):
        msg = f"{name} must be a NumPy array here; got a torch.Tensor (use pairloss.nn.functional for torch)"
        raise TypeError(msg)
    try:
        return _native(np.asarray(value))
    except Exception as exc:  # ragged lists and the like
        msg = f"{name} must be array-like; got {type(value).__name__}"
        raise TypeError(msg) from exc


def as_float_array(name: str, value: npt.ArrayLike) -> np.ndarray:
    """``value`` as an array of float16/float32/float64; integers and anything else raise TypeError."""
    arr = as_array(name, value)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        msg = (f"{name} must be a float16, float32 or float64 array; got dtype={arr.dtype} "
               f"(cast with .astype(np.float32))")
        raise TypeError(msg)
    return arr


def compute_dtype(*dtypes: np.dtype) -> np.dtype:
    """The dtype arithmetic runs in: at least float32, so float16 inputs do not lose the small terms."""
    return np.result_type(np.float32, *dtypes)


def check_same_shape(**arrays: np.ndarray) -> None:
    """All arrays must have one shape; no broadcasting (a silent broadcast hides a batching bug)."""
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{n}: {s}" for n, s in shapes.items())
        msg = f"inputs must have the same shape (no broadcasting); got {listing}"
        raise ValueError(msg)


def as_sign_labels(name: str, value: npt.ArrayLike) -> np.ndarray:
    """Pair labels: integer or float values, each exactly -1 or +1."""
    arr = as_array(name, value)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        msg = f"{name} must be an integer or float array of -1/+1; got dtype={arr.dtype}"
        raise TypeError(msg)
    bad = (arr != 1) & (arr != -1)
    if np.any(bad):
        msg = (f"{name} must contain only -1 and +1 (+1: the first input should rank higher); "
               f"got {describe_values(np.unique(arr[bad]))}")
        raise ValueError(msg)
    return arr


def column_to_flat(name: str, arr: np.ndarray) -> np.ndarray:
    """(N,), (N, 1), (N, 1, 1)... as a flat (N,) view; anything with a second non-unit axis raises."""
    if arr.ndim == 0:
        msg = f"{name} must have shape (N,) or (N, 1); got a 0-d array"
        raise ValueError(msg)
    if any(d != 1 for d in arr.shape[1:]):
        msg = f"{name} must have shape (N,) or (N, 1) (one score per item); got shape {arr.shape}"
        raise ValueError(msg)
    return arr.reshape(arr.shape[0])


def as_session_labels(value: npt.ArrayLike, n: int, name: str = "labels",
                      scratch: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Relevance labels as a flat float64 (N,) array: integer, float or bool, no NaN.

    ``scratch(n)``: n float64 entries of memory that a conversion fills instead of fresh memory (the result
    is then that memory: for a caller whose labels do not outlive the call)."""
    arr = as_array(name, value)
    if arr.dtype.kind not in "iufb":  # integer, unsigned, float, bool (a kind test: np.issubdtype costs 1 us)
        msg = f"{name} must be an integer or float array; got dtype={arr.dtype}"
        raise TypeError(msg)
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1):
        msg = f"{name} must have shape (N,) or (N, 1); got shape {arr.shape}"
        raise ValueError(msg)
    if arr.shape[0] != n:
        msg = f"{name} must have one entry per score: expected {n}; got {arr.shape[0]}"
        raise ValueError(msg)
    # (only 64-bit integers reach 2^53)
    if arr.dtype.kind in "iu" and arr.itemsize == 8 and arr.size:
        # float64 (the kernels' label dtype) holds every integer up to 2^53 exactly; beyond, distinct labels
        # could tie. The copy and the range come from one pass (a minimum, a maximum and a cast were three)
        flat = np.empty(n, np.float64) if scratch is None else scratch(n)
        lowest, highest = _widen_with_range(np.ascontiguousarray(arr.reshape(n)), flat)
        if highest > 2**53 or lowest < -(2**53):
            msg = f"{name} must lie within +-2^53 (exact in float64); got values up to {max(highest, -lowest)}"
            raise ValueError(msg)
        return flat
    # contiguous, writeable float64 labels are used as they are (the kernels only read them; a read-only
    # array would cost each kernel a compilation of its own); the finiteness check reads the given dtype,
    # which for float32 labels is half the bytes of their float64 copy
    if arr.dtype != np.float64 and scratch is not None:
        flat = scratch(n)
        np.copyto(flat, arr.reshape(n), casting="unsafe")  # the cast np.ascontiguousarray makes (longdouble too)
    else:
        flat = np.ascontiguousarray(arr.reshape(n), dtype=np.float64)
    if not flat.flags.writeable:
        flat = flat.copy()
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = ~np.isfinite(flat)
        msg = f"{name} must be finite; got NaN or inf at positions {describe_values(np.flatnonzero(bad))}"
        raise ValueError(msg)
    return flat


@numba.njit(cache=True, nogil=True)
def _widen_with_range(src, out):  # pragma: no cover - compiled
    """out = src as float64, and (min, max) of src, in one pass over 64-bit integers (src non-empty)."""
    lowest = highest = src[0]
    for k in range(src.size):
        v = src[k]
        out[k] = v
        lowest = min(lowest, v)
        highest = max(highest, v)
    return lowest, highest


def check_lengths(value: npt.ArrayLike | None, n: int, name: str = "lengths") -> np.ndarray:
    """Session sizes as an int64 (S,) array summing to ``n``; None means one session of all ``n`` items."""
    if value is None:
        return np.array([n], dtype=np.int64)
    arr = as_array(name, value)
    if arr.ndim != 1:
        msg = f"{name} must be 1-D (one size per session); got shape {arr.shape}"
        raise ValueError(msg)
    if (arr.size and arr.dtype.kind not in "iu") or arr.dtype == np.bool_:
        msg = f"{name} must be an integer array; got dtype={arr.dtype} (cast with .astype(np.int32))"
        raise TypeError(msg)
    if arr.size and (arr.min() < 0 or arr.max() > n):
        # checked before any sum: values within [0, n] cannot wrap an int64 running sum before it passes n
        msg = f"{name} must be non-negative sizes of at most N={n}; got {describe_values(arr)}"
        raise ValueError(msg)
    # the kernels only read the sizes: int64 ones are used as they are when contiguous and writeable (a
    # strided or read-only array would cost each kernel a compilation of its own)
    lengths = np.ascontiguousarray(arr, dtype=np.int64)
    if not lengths.flags.writeable:
        lengths = lengths.copy()
    # sizes in [0, n]: the running sum is non-decreasing and cannot wrap (S * n < 2^63), so its last value
    # is its largest
    total = int(lengths.sum())
    if total != n:
        shown = f"sum({name})={total}" if total <= n else f"sum({name}) > {n}"
        msg = f"{name} must sum to the number of scores N={n}; got {shown} ({name}={describe_values(lengths)})"
        raise ValueError(msg)
    return lengths
