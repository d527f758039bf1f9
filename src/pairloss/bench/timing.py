"""Measurement primitives: interleaved repeats (median and mean), peak extra resident memory, a busy core.

The machines these benchmarks run on are shared and noisy, so every comparison is made inside one process
and one loop: the contenders are called in turn (a, b, c, a, b, c, ...), so a burst of outside load hits
all of them alike, and the figures kept are ratios.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Stats", "busy_core", "interleaved", "malloc_trim", "paused_times", "peak_extra_mib", "warm_memory"]


@dataclass(frozen=True)
class Stats:
    """Seconds per call of one contender: median and mean of the timed repeats (after one warm-up)."""

    median: float
    mean: float
    repeats: int

    def per(self, count: float) -> Stats:
        return Stats(self.median / count, self.mean / count, self.repeats)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, *, budget_s: float | None = None,
                min_repeats: int = 3, warmup: bool = True, pause_s: float = 0.005,
                rewarm_below_s: float = 0.02) -> dict[str, Stats]:
    """Time each function ``repeats`` times, in turn, after one warm-up call each.

    ``budget_s`` stops early (never below ``min_repeats``) once that many seconds have been spent: the
    slow peers at n = 10,000 take seconds a call, and a full run must stay within minutes. ``pause_s``
    (untimed, before each call) lets the previous contender's worker threads stop spinning (OpenMP,
    Eigen's pool under XLA and TF spin-wait after their work) so they do not steal the next one's cores.

    Each round calls the contenders in a new order (a permutation from a fixed seed): a contender that
    sweeps gigabytes (an n x n peer) evicts the caches and the interpreter's working set, and whoever runs
    next pays for it (pairloss's 1e4-item hinge call: 1.4 ms after the sort peer, 6.7 ms after
    pytorchltr's 5 GB), so no contender may always follow the same one (in a fixed or rotated order each
    one always would); the median then drops the rounds it was unlucky in. And a contender whose warm-up
    call took under ``rewarm_below_s`` gets one more untimed call before each timed one (then the
    collection and the pause): a short call is mostly the interpreter's and the framework's fixed path,
    which a training loop keeps warm by calling it every step, and which a peer's sweep would otherwise
    leave cold in every round (pairloss's 1e4-item hinge call after every peer of its case: 4.9 ms
    with the random order alone, 1.4 ms alone). A contender that takes longer is timed as it comes.
    """
    quick = set()
    if warmup:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if time.perf_counter() - start < rewarm_below_s:
                quick.add(name)
    _freeze_heap()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start_all = time.perf_counter()
    order = list(fns.items())
    rng = np.random.default_rng(0)
    for r in range(repeats):
        for k in rng.permutation(len(order)):
            name, fn = order[k]
            if name in quick:
                fn()
            gc.collect()
            time.sleep(pause_s)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        if budget_s is not None and r + 1 >= min_repeats and time.perf_counter() - start_all > budget_s:
            break
    return {name: Stats(float(np.median(t)), float(np.mean(t)), len(t)) for name, t in times.items()}


def paused_times(fn: Callable[[], Any], repeats: int, pause_s: float = 0.0, *, warmup: bool = True) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` (after one untimed call when ``warmup``), one after another
    or, with ``pause_s``, each after that long an idle sleep (the pause :func:`interleaved` puts before a
    call)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _freeze_heap() -> None:
    # With TensorFlow, JAX and torch imported the heap holds millions of long-lived objects, and a full
    # collection takes around a second; frozen, they are skipped, so the collection before each timed
    # call (which keeps one contender's garbage out of the next one's time) costs microseconds again.
    gc.collect()
    gc.freeze()


def malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so the next resident-set baseline is honest."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_mib(fn: Callable[[], Any]) -> float | None:
    """Peak resident memory during ``fn()`` above the resident memory just before it (Linux; else None).

    The resident set sees every allocator (NumPy, Numba's runtime, torch, XLA, TensorFlow), unlike
    tracemalloc. Caveat: memory an allocator keeps cached from an earlier call is already resident and is
    not counted again, so a framework with its own pool (XLA, TensorFlow's BFC allocator) can read low;
    freed heap is handed back first (``malloc_trim``) to keep glibc's cache out of the baseline.
    """
    _freeze_heap()
    malloc_trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark VmHWM
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0.0, (peak - before) / 1024)


def warm_memory(n_bytes: int) -> None:
    # The first touch of never-used memory is slow on some VMs (the host backs pages lazily); touch a
    # block once so no contender pays for it inside its timings.
    block = np.ones(max(1, n_bytes // 8))
    del block
    malloc_trim()


@contextlib.contextmanager
def busy_core() -> Iterator[int]:
    """One process spinning on a core for the duration: the loaded-machine variant of a benchmark.

    Yields the child's pid; the child is ended (by that pid) on exit.
    """
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # let it reach the spinning loop before anything is timed
        yield child.pid
    finally:
        child.kill()
        child.wait()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
