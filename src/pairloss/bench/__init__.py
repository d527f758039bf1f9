"""Benchmarks of pairloss against the strongest alternatives and against measured compute limits.

``pairloss bench [--quick]`` and ``benchmarks/bench_ops.py`` run :func:`run_benchmarks`; BENCHMARKS.md
holds the results and the method. Peer libraries (Rax, TF-Ranking, allRank, pytorchltr) are optional
(``pip install "pairloss[bench]"``); a peer that cannot be imported is skipped with its reason.

Modules: :mod:`~pairloss.bench.suite` (the cases, the rows, Markdown), :mod:`~pairloss.bench.peers` (the
alternatives, and how their reductions map to pairloss's), :mod:`~pairloss.bench.limits` (compute limits),
:mod:`~pairloss.bench.timing` (interleaved repeats, memory, a busy core).
"""

from pairloss.bench.suite import LOSSES, BenchRow, LossSpec, machine_summary, run_benchmarks, to_markdown

__all__ = ["LOSSES", "BenchRow", "LossSpec", "machine_summary", "run_benchmarks", "to_markdown"]
