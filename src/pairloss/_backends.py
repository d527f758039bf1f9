"""The one place that probes optional imports (Triton, CUDA, TBB), so op modules only test flags; the
thread policy of the parallel Numba kernels and their serial twins.

Thread policy. Numba's parallel kernels run on Intel TBB where the ``tbb`` package is installed (a
dependency on Linux x86_64): TBB's work stealing lets the calling thread take every chunk that a busy
worker has not started, so a parallel kernel on a loaded machine is never much slower than its serial
twin, where GNU OpenMP's static schedule waits for a descheduled thread (PairWiseLoss's gradient, 30
sessions of 1,000, load 7 on 2 cores: OpenMP parallel 70.6 ms mean against 48.2 ms serial; TBB 49.4 ms
against 50.5 ms). TBB is also fork-safe, where GNU OpenMP kills a forked child that runs a parallel
kernel. Whatever the layer, :func:`parallel_launch` adds two guards: a process forked after a parallel
launch runs serial twins only (multiprocessing's fork, DataLoader workers, which run one process per core
anyway), and one parallel launch runs
at a time, the others serially (the workqueue layer is not thread-safe, and concurrent launches would
oversubscribe the cores anyway). A user's ``NUMBA_THREADING_LAYER`` always wins.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numba
import numpy as np

__all__ = [
    "HAS_TRITON",
    "cores_free_for",
    "cuda_available",
    "float64_bits",
    "parallel_launch",
    "serial_twin",
    "threading_layer_choice",
    "tl",
    "triton",
]

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


def _load_tbb() -> bool:
    """Load the TBB runtime that pip's ``tbb`` wheel puts in <prefix>/lib, where the loader does not look."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        library = Path(prefix) / "lib" / "libtbb.so.12"
        if library.exists():
            try:
                ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return False
            return True
    return False


def _choose_threading_layer() -> str:
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return f"{os.environ['NUMBA_THREADING_LAYER']} (NUMBA_THREADING_LAYER)"
    if _load_tbb():
        numba.config.THREADING_LAYER = "tbb"
        return "tbb"
    return "default"


_LAYER = _choose_threading_layer()
_LAUNCH = threading.Lock()
_state = {"launched": False, "forked_after_launch": False}


def _after_fork_in_child() -> None:
    # TBB survives a fork, but its worker pool is the parent's: a child restarts it per launch, which
    # measured far slower than the serial twin; children of a process that launched run serially
    _state["forked_after_launch"] = _state["launched"]


os.register_at_fork(after_in_child=_after_fork_in_child)


def threading_layer_choice() -> str:
    """The threading layer pairloss asked Numba for ("tbb", "default", or the user's choice)."""
    return _LAYER


@contextmanager
def parallel_launch(worthwhile: bool) -> Iterator[bool]:
    """Whether to launch the parallel kernel now: ``worthwhile``, more than one thread, not in a process
    forked after a parallel launch, and no other parallel launch running (see the thread policy above)."""
    if not worthwhile or numba.get_num_threads() < 2 or _state["forked_after_launch"]:
        yield False
        return
    if not _LAUNCH.acquire(blocking=False):
        yield False
        return
    try:
        _state["launched"] = True
        yield True
    finally:
        _LAUNCH.release()


def _runnable_tasks() -> int | None:
    """The tasks the Linux scheduler counts as runnable at this instant, the calling thread included (the
    fourth field of /proc/loadavg); None where there is no such file."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def cores_free_for(threads: int) -> bool:
    """Whether ``threads`` threads would each find a core now: the runnable tasks besides the calling thread
    leave at least ``threads`` of this process's cores. True where the count cannot be read.

    For kernels that cross many barriers in one call (a sort's byte passes), where work stealing cannot
    help: each barrier waits for a worker that another process has descheduled, so with one core of two
    busy such a kernel (the hinge's large graded session, 2e5-1e6 items) ran at 0.88x its serial twin.
    The count is the host's, not a container's: on a busy shared host this answers False (the serial
    twin, never slower than it). The same idea as GNU OpenMP's ``OMP_DYNAMIC``, which sizes a team by
    the load average; the load average lags by a minute, the runnable count does not.
    """
    runnable = _runnable_tasks()
    if runnable is None:
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores - (runnable - 1) >= threads


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
    # the same options (fastmath, error model, ...) but parallel; caching is a dispatcher setting, not one
    # of the target options, and a twin compiled anew in every process would cost seconds per kernel
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
    return numba.njit(cache=True, **options)(twin)
