"""The benchmark entry points the CLI (``pairloss bench``) and ``benchmarks/bench_ops.py`` import.

The suite lives in :mod:`pairloss.bench`; these names stay importable from here.
"""

from pairloss.bench.suite import BenchRow, machine_summary, run_benchmarks, to_markdown

__all__ = ["BenchRow", "machine_summary", "run_benchmarks", "to_markdown"]
