"""What an idle pause before a call costs a parallel Numba kernel on this machine, and why.

    python benchmarks/bench_idle_pause.py            # 2 threads, pauses 0 and 5 ms

``bench_ops.py`` sleeps 5 ms before every timed call (so that the previous contender's OpenMP workers stop
spinning), and the session losses' short calls read slower there than back to back. Three probes tell the
possible causes apart, each timed back to back and after the pause (median of 40 calls):

- worker arrival: a two-task ``prange`` whose first task spins until the second has started, i.e. how long
  the second thread takes to join a launch (thread wake-up);
- pure compute: 16 chunks of arithmetic on registers, no memory;
- memory: 16 chunks that each allocate a buffer and write it six times (the shape of the session kernels'
  per-chunk scratch), with the minor page faults per call counted.

If only the memory probe slows down, with no page faults and a prompt worker, the pause costs cold caches
(the idle vCPU's caches are not kept), not thread wake-up or the allocator.
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable

import numba
import numpy as np

from pairloss.bench.timing import paused_times  # importing pairloss also selects its threading layer


@numba.njit(parallel=True, nogil=True)
def _arrival(flag: np.ndarray) -> None:  # pragma: no cover - compiled
    for task in numba.prange(2):
        if task == 0:
            spins = 0
            while flag[1] == 0 and spins < 50_000_000:
                spins += 1
        else:
            flag[1] = 1


@numba.njit(parallel=True, nogil=True)
def _chunks(out: np.ndarray, size: int, touch_memory: bool) -> None:  # pragma: no cover - compiled
    for c in numba.prange(16):
        total = 0.0
        if touch_memory:
            buf = np.empty(size, np.int32)
            for rep in range(6):
                for i in range(size):
                    buf[i] = i + rep
                total += buf[size // 2]
        else:
            for i in range(6 * size):
                total += np.sqrt(i + c)
        out[c] = total


def _median_us(fn: Callable[[], object], pause_s: float, repeats: int = 40) -> tuple[float, float]:
    """(median microseconds a call, minor page faults a call) over the timed calls."""
    fn()  # warm-up, outside the fault count
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = paused_times(fn, repeats, pause_s, warmup=False)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return float(np.median(times)) * 1e6, faults / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause-ms", type=float, default=5.0)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    flag, out = np.zeros(2, np.int64), np.zeros(16)

    def arrival() -> None:
        flag[:] = 0
        _arrival(flag)

    probes: dict[str, Callable[[], object]] = {
        "worker arrival (2 tasks)": arrival,
        "pure compute, 16 chunks": lambda: _chunks(out, 30_000, False),
        "memory, 16 chunks x 120 KB": lambda: _chunks(out, 30_000, True),
        "memory, 16 chunks x 800 KB": lambda: _chunks(out, 200_000, True),
    }
    print(f"threading layer: {numba.threading_layer() if args.threads > 1 else '-'}; {args.threads} threads")
    print(f"| probe | back to back (us) | after {args.pause_ms:g} ms idle (us) | page faults a call, paused |")
    print("|---|---:|---:|---:|")
    for name, fn in probes.items():
        warm, _ = _median_us(fn, 0.0)
        cold, faults = _median_us(fn, args.pause_ms / 1e3)
        print(f"| {name} | {warm:.0f} | {cold:.0f} | {faults:.1f} |")


if __name__ == "__main__":
    main()
