"""Per-call cost at training mini-batch sizes: pairloss's torch front end against plain torch.

A training step calls the loss on a few dozen queries, so what a call costs besides its pairs (validation,
planning, the custom op's dispatch, autograd) decides the step time there, unlike the 1e6-item cases of
bench_ops.py. Forward + backward, ``reduction="mean"``, float32 scores, graded labels 0-4, interleaved
repeats (median), 2 threads::

    python benchmarks/bench_minibatch.py            # a Markdown table
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import pairloss.nn.functional as pf
from pairloss.bench.timing import interleaved

SHAPES = ((2, 1), (10, 64), (40, 64), (100, 32), (10, 1000), (100, 256))


def _torch_masked(scores: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """The six-line masked n x n RankNet loss of bench_ops.py, per-session means averaged (pairloss's "mean")."""
    x = scores.view(-1, n)
    lab = labels.view(-1, n)
    mask = (lab[:, :, None] > lab[:, None, :]).to(x.dtype)
    per_pair = torch.nn.functional.softplus(x[:, None, :] - x[:, :, None]) * mask
    pairs = mask.sum((1, 2))
    has = pairs > 0
    return (per_pair.sum((1, 2))[has] / pairs[has]).mean()


def _steps(scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, n: int) -> dict:
    """One forward + backward step per loss, each a closure over this shape's tensors."""

    def step(loss: object) -> None:
        scores.grad = None
        loss().backward()  # type: ignore[operator]

    return {
        "logistic": lambda: step(lambda: pf.pairwise_logistic_loss(scores, labels, lengths)),
        "hinge": lambda: step(lambda: pf.pairwise_hinge_loss(scores, labels, lengths)),
        "lambdarank": lambda: step(lambda: pf.lambdarank_loss(scores, labels, lengths)),
        "torch": lambda: step(lambda: _torch_masked(scores, labels, n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(
        "| n x sessions | PairWiseLoss | PairWiseHingeLoss | LambdaRankLoss | torch masked n x n (RankNet) "
        "| torch / PairWiseLoss |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for n, sessions in SHAPES:
        scores = torch.from_numpy(rng.standard_normal(n * sessions).astype(np.float32)).requires_grad_(True)
        labels = torch.from_numpy(rng.integers(0, 5, n * sessions))
        lengths = torch.full((sessions,), n, dtype=torch.int64)

        fns = _steps(scores, labels, lengths, n)
        want = float(pf.pairwise_logistic_loss(scores, labels, lengths).detach())
        got = float(_torch_masked(scores, labels, n).detach())
        if abs(want - got) > 1e-5 * max(1.0, abs(want)):
            msg = f"torch masked loss {got} differs from pairloss {want} at n={n} x {sessions}"
            raise RuntimeError(msg)
        st = interleaved(fns, args.repeats, pause_s=0.0)
        ms = {k: v.median * 1e3 for k, v in st.items()}
        print(
            f"| {n} x {sessions} | {ms['logistic']:.3f} ms | {ms['hinge']:.3f} ms | {ms['lambdarank']:.3f} ms "
            f"| {ms['torch']:.3f} ms | {ms['torch'] / ms['logistic']:.2f}x |"
        )


if __name__ == "__main__":
    main()
