"""Benchmark the CPU kernels against the standard alternatives and print BENCHMARKS.md's table.

    python benchmarks/bench_ops.py            # full sizes (about 5 minutes, ~3 GB peak for torch's n x n)
    python benchmarks/bench_ops.py --quick    # small sizes, seconds
    pairloss bench [--quick]                  # the same table, rendered in the terminal

Every figure is a ratio measured in the same run (see pairloss._bench for the method).
"""

from __future__ import annotations

import argparse
import sys

from pairloss._bench import machine_summary, run_benchmarks, to_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; runs in seconds")
    parser.add_argument("--threads", type=int, default=2, help="Numba and torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median is kept)")
    args = parser.parse_args()
    rows = run_benchmarks(quick=args.quick, threads=args.threads, repeats=args.repeats,
                          progress=lambda msg: print(f"... {msg}", file=sys.stderr))
    print(f"Machine: {machine_summary(args.threads)}\n")
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
