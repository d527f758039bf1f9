"""The one place that probes optional imports (Triton, CUDA), so op modules only test flags; and the
serial twins of parallel Numba kernels."""

from __future__ import annotations

import importlib.util
import types
from functools import cache
from typing import Any

import numba
import numpy as np

__all__ = ["HAS_TRITON", "cuda_available", "float64_bits", "parallel_allowed", "serial_twin", "tl", "triton"]

triton: Any = None
tl: Any = None
HAS_TRITON = False
if importlib.util.find_spec("triton") is not None:
    try:
        import triton
        import triton.language as tl

        HAS_TRITON = True
    except Exception:  # a broken Triton install must not break the CPU library
        HAS_TRITON = False


@cache
def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def float64_bits(value: float) -> int:
    """The IEEE bits of ``value`` as a signed int64, to pass a float64 scalar to a Triton kernel exactly.

    Triton passes a Python float as float32; a kernel takes the int and bitcasts it back
    (``bits.to(tl.int64).to(tl.float64, bitcast=True)``).
    """
    return int(np.array(value, np.float64).view(np.int64))


def parallel_allowed(worthwhile: bool) -> bool:
    """Whether a kernel may launch its parallel version now (see the thread policy above)."""
    return worthwhile


def serial_twin(kernel: Any) -> Any:
    """The same Numba kernel compiled without ``parallel=True`` (``prange`` runs as ``range``).

    A parallel launch costs tens of microseconds on an idle machine and milliseconds when the cores are
    busy (a training loop, a test run with workers), so small inputs take the serial twin. The twin is a
    copy of the Python function under its own qualified name, so the two on-disk caches never collide.
    """
    fn = kernel.py_func
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    twin.__module__ = fn.__module__
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
    return numba.njit(**options)(twin)
