"""Benchmarks of the CPU kernels, each against the standard alternative measured in the same run.

Used by ``benchmarks/bench_ops.py`` (which writes BENCHMARKS.md) and by ``pairloss bench``. Every figure is
a ratio or a bandwidth fraction measured in one process: the machine's absolute speed cancels out.
Timings are the median of interleaved repeats (ours, theirs, ours, ...), after a warm-up call that also
loads or compiles the Numba kernels. Forward and backward are always timed together.
"""

from __future__ import annotations

import gc
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

__all__ = ["BenchRow", "run_benchmarks", "to_markdown"]


@dataclass
class BenchRow:
    """One line of the table: a workload, our time, the alternative's, and what else was measured."""

    section: str
    case: str
    ours_s: float
    baseline: str
    baseline_s: float | None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return None if self.baseline_s is None else self.baseline_s / self.ours_s


# ---- measurement helpers ------------------------------------------------------------------------------
def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in turn ``repeats`` times after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def _rss_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_extra_mib(fn: Callable[[], Any]) -> float | None:
    """Peak resident memory during ``fn()`` above the resident memory before it (Linux; None elsewhere).

    Resident set size sees every allocator alike (NumPy, Numba's runtime, torch), unlike tracemalloc.
    """
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark VmHWM
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0.0, (peak - before) / 1024)


def _fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"


def _warm_memory(n_bytes: int) -> None:
    # The first touch of never-used memory is slow on some VMs (the host backs the pages lazily); touch
    # a block once so neither side of a comparison pays for it inside its timings.
    block = np.ones(n_bytes // 8)
    del block


# ---- MarginRankingCriterion ---------------------------------------------------------------------------
def _bench_margin_ranking(n: int, repeats: int) -> list[BenchRow]:
    import torch

    from pairloss.ops import margin_ranking as mrc

    rng = np.random.default_rng(0)
    x1 = rng.standard_normal(n).astype(np.float32)
    x2 = rng.standard_normal(n).astype(np.float32)
    y = rng.choice(np.array([-1, 1], np.int32), size=n)
    g = rng.standard_normal(n).astype(np.float32)
    # bytes each kernel must move: forward reads x1, x2, y and writes loss; backward reads x1, x2, y, g
    # and writes dx1, dx2
    traffic = n * (4 * 4 + 4 * 6)
    out, d1, d2 = np.empty_like(x1), np.empty_like(x1), np.empty_like(x1)
    copy_src = np.ones(traffic // 2 // 8)
    copy_dst = np.empty_like(copy_src)  # a copy of traffic/2 bytes reads and writes `traffic` bytes

    t1, t2, ty, tg = (torch.from_numpy(a) for a in (x1, x2, y.astype(np.float32), g))
    t1.requires_grad_(True)
    t2.requires_grad_(True)

    def ours() -> None:
        mrc.forward_cpu(x1, x2, y, margin=1.0)
        mrc.gradient_cpu(x1, x2, y, g, margin=1.0)

    def ours_kernels_only() -> None:
        mrc._forward_loop(x1, x2, y, 1.0, out)
        mrc._gradient_loop(x1, x2, y, g, 1.0, d1, d2)

    def torch_ref() -> None:
        loss = torch.nn.functional.margin_ranking_loss(t1, t2, ty, margin=1.0, reduction="none")
        loss.backward(tg)
        t1.grad = t2.grad = None

    times = _interleaved({"ours": ours, "kernels": ours_kernels_only, "torch": torch_ref,
                          "copy": lambda: np.copyto(copy_dst, copy_src)}, repeats)
    copy_gbs = traffic / times["copy"] / 1e9
    gbs, kernel_gbs = traffic / times["ours"] / 1e9, traffic / times["kernels"] / 1e9
    return [
        BenchRow("MarginRankingCriterion", f"N={n:.0e} float32, fwd+bwd", times["ours"],
                 "torch margin_ranking_loss(reduction='none') + backward", times["torch"],
                 {"GB/s": f"{gbs:.1f} ({gbs / copy_gbs:.0%} of np.copyto {copy_gbs:.1f})"}),
        BenchRow("MarginRankingCriterion", f"N={n:.0e} float32, fwd+bwd, outputs preallocated", times["kernels"],
                 "np.copyto of the same bytes", times["copy"],
                 {"GB/s": f"{kernel_gbs:.1f} ({kernel_gbs / copy_gbs:.0%} of np.copyto {copy_gbs:.1f})"}),
    ]


def _bench_negative(n: int, repeats: int) -> list[BenchRow]:
    from pairloss.ops.negative import negative_cpu

    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    out = np.empty_like(x)
    fns = {"ours": lambda: negative_cpu(x, out=out), "numpy": lambda: np.negative(x, out=out),
           "ours_new": lambda: negative_cpu(x), "numpy_new": lambda: np.negative(x)}
    times = _interleaved(fns, repeats)
    return [BenchRow("Negative", f"N={n:.0e} float32, preallocated output", times["ours"],
                     "np.negative(x, out=out)", times["numpy"]),
            BenchRow("Negative", f"N={n:.0e} float32, new output", times["ours_new"],
                     "np.negative(x)", times["numpy_new"])]


# ---- pairwise losses: padded n x n torch broadcasts ---------------------------------------------------
def _torch_pairwise(kind: str, n: int, n_sessions: int, margin: float = 1.0) -> Callable[[Any, Any], Any]:
    import torch

    tril = torch.ones(n, n, dtype=torch.bool).tril(-1)

    def loss(scores: Any, labels: Any) -> Any:
        s = scores.view(n_sessions, n)
        lab = labels.view(n_sessions, n)
        dl = lab[:, :, None] - lab[:, None, :]  # row i, column j < i
        mask = (dl.abs() >= 2.0**-23) & tril
        diff = s[:, :, None] - s[:, None, :]  # x_i - x_j
        hi_minus_lo = torch.where(dl > 0, diff, -diff)
        if kind == "logistic":
            per_pair = torch.nn.functional.softplus(-hi_minus_lo)
        else:
            per_pair = torch.clamp_min(margin - hi_minus_lo, 0.0)
        total = torch.where(mask, per_pair, 0.0).sum(dim=(1, 2))
        pairs = mask.sum(dim=(1, 2))
        return torch.where(pairs > 0, total / pairs.clamp_min(1), 0.0)

    return loss


def _bench_sessions(kind: str, sizes: list[tuple[int, int, int | None]], repeats: int,
                    label_kind: str = "graded") -> list[BenchRow]:
    """``sizes``: (session size, total items for ours, total items for torch or None to skip torch)."""
    import torch

    from pairloss.ops import pairwise_hinge, pairwise_loss

    rows = []
    for n, total, torch_total in sizes:
        rng = np.random.default_rng(n)
        scores = rng.standard_normal(total).astype(np.float32)
        labels = (rng.integers(0, 5, total) if label_kind == "graded" else rng.standard_normal(total))
        labels = labels.astype(np.float32)
        lengths = np.full(total // n, n, np.int32)
        g = np.ones(lengths.size, np.float32)
        if kind == "logistic":
            def ours(s=scores, lab=labels, lens=lengths, gg=g) -> None:
                pairwise_loss.forward_cpu(s, lab, lens)
                pairwise_loss.gradient_cpu(s, lab, gg, lens)
        else:
            def ours(s=scores, lab=labels, lens=lengths, gg=g) -> None:
                pairwise_hinge.forward_cpu(s, lab, lens, margin=1.0)
                pairwise_hinge.gradient_cpu(s, lab, gg, lens, margin=1.0)
        fns: dict[str, Callable[[], Any]] = {"ours": ours}
        our_items, notes = total, {}
        if torch_total is not None:
            # the same sessions, as many as the n x n tensors allow; compared per item
            k = torch_total // n
            ts = torch.from_numpy(scores[: k * n].copy()).requires_grad_(True)
            tl_ = torch.from_numpy(labels[: k * n].copy())
            fn = _torch_pairwise(kind, n, k)

            def theirs(ts=ts, tl_=tl_, fn=fn) -> None:
                fn(ts, tl_).sum().backward()
                ts.grad = None

            fns["torch"] = theirs
        times = _interleaved(fns, repeats)
        per_item = times["ours"] / our_items
        notes["ns/item"] = f"{per_item * 1e9:,.0f}"
        if kind == "logistic":
            notes["ns/pair"] = f"{times['ours'] / (lengths.size * n * (n - 1) / 2) * 1e9:.2f}"
        torch_per_item = None
        if torch_total is not None:
            torch_per_item = times["torch"] / ((torch_total // n) * n)
            notes["peak extra memory (ours / torch)"] = (
                f"{_fmt_mib(_peak_extra_mib(ours))} / {_fmt_mib(_peak_extra_mib(fns['torch']))}")
            notes["items (ours / torch)"] = f"{total:.0e} / {(torch_total // n) * n:.0e}"
        else:
            notes["peak extra memory (ours / torch)"] = f"{_fmt_mib(_peak_extra_mib(ours))} / not run"
            notes["items (ours / torch)"] = f"{total:.0e} / -"
        name = "PairWiseLoss" if kind == "logistic" else "PairWiseHingeLoss"
        labels_note = "" if label_kind == "graded" else ", continuous labels"
        case = (f"{lengths.size} session{'s' if lengths.size > 1 else ''} of {n}{labels_note}, fwd+bwd")
        baseline = "padded n x n torch broadcast + autograd" if torch_total is not None else "(n x n infeasible)"
        # ratios per item: both sides may run a different number of sessions of the same size
        rows.append(BenchRow(name, case, per_item * our_items, baseline,
                             None if torch_per_item is None else torch_per_item * our_items, notes))
    return rows


def run_benchmarks(*, quick: bool = False, threads: int = 2, repeats: int | None = None,
                   progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Run every benchmark on ``threads`` threads (Numba and torch); ``quick`` uses small sizes."""
    import torch

    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    say = progress or (lambda _msg: None)
    reps = repeats or (3 if quick else 7)
    if quick:
        mrc_n = 10**6
        logistic = [(10, 10**4, 10**4), (100, 2 * 10**4, 2 * 10**4), (1000, 10**4, 10**3)]
        hinge = [(10, 10**4, 10**4), (1000, 10**5, 10**3), (10**5, 10**5, None)]
        hinge_continuous: list[tuple[int, int, int | None]] = []
    else:
        mrc_n = 10**7
        logistic = [(10, 10**6, 10**6), (100, 10**6, 10**6), (1000, 10**6, 10**5), (10000, 10**5, 10**4)]
        hinge = [(10, 10**6, 10**6), (100, 10**6, 10**6), (1000, 10**6, 10**5), (10000, 10**6, 10**4),
                 (10**6, 10**6, None)]
        hinge_continuous = [(10**6, 10**6, None)]
    _warm_memory(2 * 10**9 if not quick else 10**8)
    rows = []
    say("MarginRankingCriterion")
    rows += _bench_margin_ranking(mrc_n, reps)
    say("Negative")
    rows += _bench_negative(mrc_n, reps)
    say("PairWiseLoss")
    rows += _bench_sessions("logistic", logistic, max(3, reps // 2))
    say("PairWiseHingeLoss")
    rows += _bench_sessions("hinge", hinge, max(3, reps // 2))
    rows += _bench_sessions("hinge", hinge_continuous, max(3, reps // 2), label_kind="continuous")
    return rows


def machine_summary(threads: int) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}; {threads} threads; Python {platform.python_version()}, NumPy {np.__version__}, "
            f"Numba {numba.__version__}, torch {torch.__version__}")


def to_markdown(rows: list[BenchRow]) -> str:
    """The rows as a Markdown table: speedup = baseline time / our time on the same workload."""
    lines = ["| op | case | ours | baseline | baseline time | speedup | notes |",
             "|---|---|---:|---|---:|---:|---|"]
    for r in rows:
        base = "-" if r.baseline_s is None else f"{r.baseline_s * 1e3:,.1f} ms"
        speed = "-" if r.speedup is None else f"{r.speedup:,.1f}x"
        notes = "; ".join(f"{k}: {v}" for k, v in r.notes.items())
        lines.append(f"| {r.section} | {r.case} | {r.ours_s * 1e3:,.1f} ms | {r.baseline} | {base} | {speed} | "
                     f"{notes} |")
    return "\n".join(lines)
