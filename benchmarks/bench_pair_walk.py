"""Standalone timings of the session losses' CPU kernels, for before/after comparisons of a kernel change.

    python benchmarks/bench_pair_walk.py                         # the default sizes, 2 threads
    python benchmarks/bench_pair_walk.py --loss hinge --threads 1
    python benchmarks/bench_pair_walk.py --loss hinge --pause-ms 5     # each call after an idle pause
    python benchmarks/bench_pair_walk.py --loss hinge --sizes 200000x1,1000000x1 --repeats 9   # large sessions
    PYTHONPATH=/path/to/old/src python benchmarks/bench_pair_walk.py   # the same for another checkout

Three ways to get one call's loss and gradient (float32 scores, graded labels 0-4, equal-size sessions):
the fused kernel of the torch path (``forward_with_unit_gradient_cpu``), the registry's forward op plus
gradient op, and the torch front end (``reduction="sum"`` + ``backward()``). Each is called back to back
(no pause, unlike ``bench_ops.py``, whose interleaving with peers makes every call colder); the minimum
and the median of the repeats are printed. Run two checkouts in alternating processes: this VM's speed
drifts by tens of percent within minutes, so only alternating runs compare. ``--pause-ms`` sleeps that long
before each timed call instead, as ``bench_ops.py`` does between contenders: the cores go idle and the
kernel's worker threads must wake up again. For the hinge, one argsort per session (its compute limit in
``bench_ops.py``) is timed the same way, in the last column.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numba
import numpy as np
import torch

from pairloss.bench.timing import paused_times
from pairloss.nn import functional as PF
from pairloss.ops import lambdarank as lr
from pairloss.ops import pairwise_hinge as ph
from pairloss.ops import pairwise_loss as pwl

SIZES = ((10, 100_000), (40, 25_000), (100, 10_000), (1_000, 100), (10_000, 1))


def _times(fn: Callable[[], object], repeats: int, pause_s: float = 0.0) -> tuple[float, float]:
    times = paused_times(fn, repeats, pause_s)
    return float(np.min(times)), float(np.median(times))


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(n), int(sessions)) for n, sessions in (item.split("x") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100x10000,1000x100, got {text!r}") from None


def _calls(loss: str, n: int, sessions: int) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(n * 7919 + sessions)
    x = rng.standard_normal(n * sessions).astype(np.float32)
    labels = rng.integers(0, 5, n * sessions)
    lengths = np.full(sessions, n)
    ones = np.ones(sessions, np.float32)
    mod, front, args = {
        "logistic": (pwl, PF.pairwise_logistic_loss, {}),
        "hinge": (ph, PF.pairwise_hinge_loss, {"margin": 1.0}),
        "lambdarank": (lr, PF.lambdarank_loss, {"sigma": 1.0, "topn": 0, "gain": "exp2"}),
    }[loss]
    xs = torch.from_numpy(x.copy()).requires_grad_(True)
    lt, ln = torch.from_numpy(labels), torch.from_numpy(lengths)

    def torch_step() -> None:
        xs.grad = None
        front(xs, lt, ln, reduction="sum").backward()

    calls: dict[str, Callable[[], object]] = {
        "fused kernel": lambda: mod.forward_with_unit_gradient_cpu(x, labels, lengths, **args),
        "forward op + gradient op": lambda: (mod.forward_cpu(x, labels, lengths, **args),
                                             mod.gradient_cpu(x, labels, ones, lengths, **args)),
        "torch front end": torch_step,
    }
    if loss == "hinge":
        calls["np.argsort per session (limit)"] = lambda: np.argsort(x.reshape(sessions, n), axis=1)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=["logistic", "hinge", "lambdarank"], default="logistic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--pause-ms", type=float, default=0.0, help="idle pause before each timed call")
    parser.add_argument("--sizes", type=_sizes, default=SIZES,
                        help="session size x sessions, comma-separated (default: %(default)s), e.g. 200000x1,1000000x1")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    names = list(_calls(args.loss, 2, 1))
    print(f"| n x sessions | pairs | {' | '.join(names)} (min / median ms) |")
    print(f"|---|---:|{'---:|' * len(names)}")
    for n, sessions in args.sizes:
        cells = [f"{a * 1e3:.2f} / {b * 1e3:.2f}" for a, b in
                 (_times(fn, args.repeats, args.pause_ms / 1e3) for fn in _calls(args.loss, n, sessions).values())]
        print(f"| {n} x {sessions} | {sessions * n * (n - 1) // 2:.2e} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
