"""Benchmark pairloss against the strongest alternatives and the measured compute limits; print Markdown.

    python benchmarks/bench_ops.py                  # full table of BENCHMARKS.md (about 10 minutes on 2 cores)
    python benchmarks/bench_ops.py --quick          # small sizes; seconds without peers, ~1-2 min with them
    python benchmarks/bench_ops.py --sections sessions --losses hinge   # one part
    pairloss bench [--quick]                        # the same suite, rendered in the terminal

Peers (Rax, TF-Ranking, allRank, pytorchltr) are optional: ``pip install "pairloss[bench]"`` plus the
lines in BENCHMARKS.md; a peer that cannot be imported is skipped with its reason. Every figure is a
ratio measured in the same run (method: ``pairloss.bench.suite``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pairloss._bench import machine_summary, run_benchmarks, to_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--threads", type=int, default=2, help="Numba, torch, XLA and TF threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median and mean kept)")
    parser.add_argument("--losses", nargs="*", choices=["logistic", "hinge", "lambdarank"], default=None)
    parser.add_argument("--sections", nargs="*", choices=["sessions", "limits", "threads", "margin", "negative"],
                        default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args()
    start = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    rows = run_benchmarks(quick=args.quick, threads=args.threads, repeats=args.repeats, progress=progress,
                          losses=tuple(args.losses) if args.losses else None,
                          sections=tuple(args.sections) if args.sections else None)
    text = f"Machine: {machine_summary(args.threads)}\n\n{to_markdown(rows)}"
    progress("done")
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
