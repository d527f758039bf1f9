"""LambdaRankLoss forward + backward: the fused kernel against its float64 reference and padded torch.

Issue 12 asks for the metric-aware kernel's time and extra memory beside its reference and a padded torch
implementation. The reference visits every pair in plain Python (it is the definition the tests trust,
not a contender), so this script runs it on a small case of each session size and reports time per pair;
the kernel and padded torch run the same case. Everything is checked equal to the reference first.

    python benchmarks/bench_lambdarank.py                 # n = 10, 100, 1000; about a minute on 2 cores
    python benchmarks/bench_lambdarank.py --pairs 2e5     # more pairs per case
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pairloss import registry
from pairloss.bench.peers import torch_lambdarank
from pairloss.bench.timing import interleaved, peak_extra_mib

OP = "LambdaRankLoss"
ARGS = {"sigma": 1.0, "topn": 0, "gain": "exp2"}


def _case(n: int, pairs: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    sessions = max(1, int(pairs // (n * (n - 1) // 2)))
    rng = np.random.default_rng(seed)
    return rng.standard_normal((sessions, n)), rng.integers(0, 5, (sessions, n)).astype(np.float64)


def _registry_step(impl: Callable[..., Any], grad: Callable[..., Any], scores: np.ndarray, labels: np.ndarray
                   ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    x, lab = scores.reshape(-1), labels.reshape(-1)
    lens = np.full(scores.shape[0], scores.shape[1], np.int64)
    ones = np.ones(scores.shape[0])
    return lambda: (np.asarray(impl(x, lab, lens, **ARGS)), np.asarray(grad(x, lab, ones, lens, **ARGS)))


def _torch_step(scores: np.ndarray, labels: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    fn = torch_lambdarank()
    s = torch.from_numpy(scores.copy()).requires_grad_(True)
    lab = torch.from_numpy(labels)

    def step() -> tuple[np.ndarray, np.ndarray]:
        s.grad = None
        loss = fn(s, lab)
        loss.sum().backward()
        return loss.detach().numpy(), s.grad.numpy().reshape(-1)

    return step


def run(sizes: tuple[int, ...], pairs: float, repeats: int) -> list[str]:
    """Markdown rows: time per pair and peak extra memory of each contender, ratios against the kernel."""
    rows = ["| n x sessions | pairs | fused kernel | float64 reference | reference / kernel | padded torch "
            "(ΔNDCG weights) | torch / kernel | extra memory: kernel / reference / torch (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    for n in sizes:
        scores, labels = _case(n, pairs)
        n_pairs = scores.shape[0] * n * (n - 1) // 2
        steps = {
            "kernel": _registry_step(registry.kernel(OP), registry.kernel(OP + "Gradient"), scores, labels),
            "reference": _registry_step(registry.reference(OP), registry.reference(OP + "Gradient"), scores, labels),
            "torch": _torch_step(scores, labels),
        }
        want_loss, want_grad = steps["reference"]()
        for name in ("kernel", "torch"):
            loss, grad = steps[name]()
            np.testing.assert_allclose(loss, want_loss, rtol=1e-9, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-12, err_msg=name)
        stats = interleaved(steps, repeats, budget_s=30.0, min_repeats=2)
        memory = {name: peak_extra_mib(step) for name, step in steps.items()}
        ns = {name: s.median / n_pairs * 1e9 for name, s in stats.items()}
        mib = " / ".join(f"{memory[k]:.1f}" if memory[k] is not None else "-" for k in ("kernel", "reference", "torch"))
        rows.append(f"| {n} x {scores.shape[0]:,} | {n_pairs:,} | {ns['kernel']:.2f} ns/pair | "
                    f"{ns['reference']:,.0f} ns/pair | {ns['reference'] / ns['kernel']:,.0f}x | "
                    f"{ns['torch']:.2f} ns/pair | {ns['torch'] / ns['kernel']:.2f}x | {mib} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="session sizes n")
    parser.add_argument("--pairs", type=float, default=1e5, help="pairs per case (the reference is slow)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median kept)")
    parser.add_argument("--threads", type=int, default=2, help="Numba and torch threads")
    args = parser.parse_args()
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    print("float64 scores, graded labels 0-4, gain 2^l - 1, no truncation; forward + backward\n")
    run(tuple(args.sizes), args.pairs, args.repeats)


if __name__ == "__main__":
    main()
