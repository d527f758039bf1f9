"""GPU check in one call: the cuda-marked tests, then every Triton kernel against torch eager and torch.compile.

    python benchmarks/gpu_check.py --json gpu.json     # a CUDA machine: tests + benchmarks, under 8 minutes
    python benchmarks/gpu_check.py --cpu               # the CPU half: the same kernels through Triton's
                                                       # interpreter at tiny sizes (CI runs it)

Each kernel is first checked for equal values (and gradients) against a plain torch formulation, then timed
forward + backward beside torch eager and torch.compile of that formulation in the same run. One line per
kernel says what was measured. On CUDA, times are ``triton.testing.do_bench`` medians; on the CPU half they
are interpreter times (correctness only, not speed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="the CPU half: Triton's interpreter, tiny sizes")
    p.add_argument("--no-tests", action="store_true", help="skip the cuda-marked pytest run")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new cases after this long")
    return p.parse_args()


ARGS = _parse()
ON_GPU = torch.cuda.is_available() and not ARGS.cpu
if not ON_GPU:
    # read when Triton decorates a kernel, i.e. when pairloss is imported: set it first
    os.environ["TRITON_INTERPRET"] = "1"

import pairloss.nn.functional as PF  # noqa: E402
from pairloss._backends import HAS_TRITON  # noqa: E402
from pairloss.ops import lambdarank as lr  # noqa: E402
from pairloss.ops import margin_ranking as mrc  # noqa: E402
from pairloss.ops import negative as neg  # noqa: E402
from pairloss.ops import pairwise_hinge as ph  # noqa: E402
from pairloss.ops import pairwise_loss as pwl  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
START = time.perf_counter()
RESULTS: list[dict[str, Any]] = []


# ---- timing ---------------------------------------------------------------------------------------------
def _time_ms(fn: Callable[[], Any]) -> float:
    if ON_GPU:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    s = time.perf_counter()  # the interpreter: correctness only, one run
    fn()
    return 1e3 * (time.perf_counter() - s)


def _peak_mib(fn: Callable[[], Any]) -> float | None:
    if not ON_GPU:
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    if ARGS.no_compile or not ON_GPU:
        return None
    return torch.compile(fn, fullgraph=True, dynamic=False)


def _report(kernel: str, case: str, timings: dict[str, float | None], memory: dict[str, float | None],
            extra: str = "") -> None:
    ours = timings["pairloss"]
    parts = []
    for name, ms in timings.items():
        if ms is None:
            continue
        ratio = "" if name == "pairloss" or ours is None else f" ({ms / ours:.2f}x)"
        mem = memory.get(name)
        parts.append(f"{name} {ms:.3f} ms{ratio}" + ("" if mem is None else f" [{mem:,.0f} MiB]"))
    line = f"{kernel:<24} {case:<22} " + ", ".join(parts) + (f"; {extra}" if extra else "")
    print(line, flush=True)
    RESULTS.append({"kernel": kernel, "case": case, "ms": timings, "peak_mib": memory, "extra": extra,
                    "device": DEVICE})


def _out_of_time() -> bool:
    return time.perf_counter() - START > ARGS.budget_s


# ---- PairWiseLoss ---------------------------------------------------------------------------------------
def torch_pairwise_logistic(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over sessions of each session's mean softplus(-(s_hi - s_lo)); [B, n] equal-size sessions."""
    diff = scores[:, :, None] - scores[:, None, :]
    pair = labels[:, :, None] > labels[:, None, :]
    loss = torch.where(pair, torch.nn.functional.softplus(-diff), 0.0)
    return (loss.sum((1, 2)) / pair.sum((1, 2)).clamp_min(1)).sum()


def bench_pairwise_loss(n: int, sessions: int) -> None:
    g = torch.Generator(device="cpu").manual_seed(n)
    scores = torch.randn(sessions, n, generator=g).to(DEVICE)
    labels = torch.randint(0, 5, (sessions, n), generator=g).float().to(DEVICE)
    lengths = torch.full((sessions,), n, dtype=torch.int64, device=DEVICE)
    flat_s, flat_l = scores.reshape(-1), labels.reshape(-1)
    ones = torch.ones(sessions, device=DEVICE)

    def fwd_bwd(loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
        def run() -> None:
            s = scores.detach().requires_grad_()
            loss_fn(s).backward()
        return run

    def ours(s: torch.Tensor) -> torch.Tensor:
        return PF.pairwise_logistic_loss(s.reshape(-1), flat_l, lengths, reduction="sum")

    def raw() -> None:
        pwl.forward_cuda(flat_s, flat_l, lengths)
        pwl.gradient_cuda(flat_s, flat_l, ones, lengths)

    # values and gradients first
    s1, s2 = scores.detach().double().requires_grad_(), scores.detach().double().requires_grad_()
    a, b = ours(s1), torch_pairwise_logistic(s2, labels.double())
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-6, atol=1e-9)
    a32 = ours(scores)
    torch.testing.assert_close(a32.double(), b.detach(), rtol=1e-4, atol=1e-5)
    # the Triton kernels themselves (on the CPU half the torch op above runs the Numba kernels)
    torch.testing.assert_close(pwl.forward_cuda(flat_s, flat_l, lengths).sum().double(), b.detach(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pwl.gradient_cuda(flat_s, flat_l, ones, lengths).double(),
                               s2.grad.reshape(-1), rtol=1e-4, atol=1e-6)

    runs: dict[str, Callable[[], Any]] = {
        "pairloss": fwd_bwd(ours),
        "raw kernels": raw,
        "torch eager": fwd_bwd(lambda s: torch_pairwise_logistic(s, labels)),
    }
    compiled = _compiled(torch_pairwise_logistic)
    if compiled is not None:
        runs["torch.compile"] = fwd_bwd(lambda s: compiled(s, labels))
    memory = {name: _peak_mib(fn) for name, fn in runs.items()}
    timings: dict[str, float | None] = {name: _time_ms(fn) for name, fn in runs.items()}
    pairs = sessions * n * (n - 1) / 2
    ns_pair = None if timings["pairloss"] is None else timings["pairloss"] * 1e6 / pairs
    _report("PairWiseLoss", f"n={n} x {sessions}", timings, memory, f"{ns_pair:.4f} ns/pair (fwd+bwd)")


# ---- MarginRankingCriterion -----------------------------------------------------------------------------
def bench_margin_ranking(n: int) -> None:
    g = torch.Generator(device="cpu").manual_seed(1)
    x1 = torch.randn(n, generator=g).to(DEVICE)
    x2 = torch.randn(n, generator=g).to(DEVICE)
    y = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(DEVICE)
    gout = torch.ones(n, device=DEVICE)

    def fwd_bwd(loss_fn: Callable[..., torch.Tensor]) -> Callable[[], Any]:
        def run() -> None:
            a, b = x1.detach().requires_grad_(), x2.detach().requires_grad_()
            loss_fn(a, b, y, margin=0.5, reduction="sum").backward()
        return run

    def raw() -> None:
        mrc.forward_cuda(x1, x2, y, margin=0.5)
        mrc.gradient_cuda(x1, x2, y, gout, margin=0.5)

    a1, b1 = x1.detach().requires_grad_(), x2.detach().requires_grad_()
    a2, b2 = x1.detach().requires_grad_(), x2.detach().requires_grad_()
    la = PF.margin_ranking_loss(a1, b1, y, margin=0.5, reduction="none")
    lb = torch.nn.functional.margin_ranking_loss(a2, b2, y, margin=0.5, reduction="none")
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad)
    torch.testing.assert_close(b1.grad, b2.grad)
    torch.testing.assert_close(mrc.forward_cuda(x1, x2, y, margin=0.5), lb.detach())
    d1, d2 = mrc.gradient_cuda(x1, x2, y, gout, margin=0.5)
    torch.testing.assert_close((d1, d2), (a2.grad, b2.grad))

    runs: dict[str, Callable[[], Any]] = {
        "pairloss": fwd_bwd(PF.margin_ranking_loss),
        "raw kernels": raw,
        "torch eager": fwd_bwd(torch.nn.functional.margin_ranking_loss),
    }
    compiled = _compiled(torch.nn.functional.margin_ranking_loss)
    if compiled is not None:
        runs["torch.compile"] = fwd_bwd(compiled)
    memory = {name: _peak_mib(fn) for name, fn in runs.items()}
    timings: dict[str, float | None] = {name: _time_ms(fn) for name, fn in runs.items()}
    # the raw kernels move forward 3 reads + 1 write, backward 4 reads + 2 writes, 4 bytes each
    gbs = 10 * 4 * n / (timings["raw kernels"] * 1e-3) / 1e9
    _report("MarginRankingCriterion", f"N={n:.0e}", timings, memory, f"raw kernels {gbs:,.0f} GB/s")


# ---- Negative -------------------------------------------------------------------------------------------
def bench_negative(n: int) -> None:
    x = torch.randn(n, device=DEVICE)
    out = neg.negative_cuda(x)
    assert torch.equal(out, -x)
    for dtype in (torch.int32, torch.float16, torch.float64):
        xi = (x * 100).to(dtype)
        assert torch.equal(neg.negative_cuda(xi), -xi), dtype
    runs: dict[str, Callable[[], Any]] = {
        "pairloss": lambda: PF.negative(x),
        "raw kernels": lambda: neg.negative_cuda(x),
        "torch eager": lambda: torch.neg(x),
    }
    compiled = _compiled(torch.neg)
    if compiled is not None:
        runs["torch.compile"] = lambda: compiled(x)
    timings: dict[str, float | None] = {name: _time_ms(fn) for name, fn in runs.items()}
    gbs = 2 * 4 * n / (timings["raw kernels"] * 1e-3) / 1e9
    _report("Negative", f"N={n:.0e}", timings, {}, f"raw kernel {gbs:,.0f} GB/s")


# ---- PairWiseHingeLoss and LambdaRankLoss ---------------------------------------------------------------
def torch_pairwise_hinge(scores: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    diff = scores[:, :, None] - scores[:, None, :]
    pair = labels[:, :, None] > labels[:, None, :]
    loss = torch.where(pair, torch.relu(margin - diff), 0.0)
    return (loss.sum((1, 2)) / pair.sum((1, 2)).clamp_min(1)).sum()


def torch_lambdarank(scores: torch.Tensor, labels: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """|ΔNDCG|-weighted pairwise logistic loss on [B, n], weights from the current ranking, detached."""
    with torch.no_grad():
        order = torch.argsort(-scores, dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
        disc = 1.0 / torch.log2(rank.to(scores.dtype) + 2.0)
        gains = torch.exp2(labels) - 1.0
        ideal = torch.sort(gains, dim=1, descending=True).values
        idcg = (ideal / torch.log2(torch.arange(scores.shape[1], device=scores.device, dtype=scores.dtype) + 2.0)
                ).sum(1, keepdim=True)
        weight = ((gains[:, :, None] - gains[:, None, :]).abs() * (disc[:, :, None] - disc[:, None, :]).abs()
                  / idcg.clamp_min(1e-30)[:, :, None])
    diff = scores[:, :, None] - scores[:, None, :]
    pair = labels[:, :, None] > labels[:, None, :]
    loss = torch.where(pair, weight * torch.nn.functional.softplus(-sigma * diff), 0.0)
    return (loss.sum((1, 2)) / pair.sum((1, 2)).clamp_min(1)).sum()


def bench_session_op(name: str, n: int, sessions: int) -> None:
    """PairWiseHingeLoss or LambdaRankLoss: values checked against torch, then fwd+bwd timed."""
    g = torch.Generator(device="cpu").manual_seed(n)
    scores = torch.randn(sessions, n, generator=g).to(DEVICE)
    labels = torch.randint(0, 5, (sessions, n), generator=g).float().to(DEVICE)
    lengths = torch.full((sessions,), n, dtype=torch.int64, device=DEVICE)
    flat_l = labels.reshape(-1)
    ones = torch.ones(sessions, device=DEVICE)
    if name == "PairWiseHingeLoss":
        def ours(s: torch.Tensor) -> torch.Tensor:
            return PF.pairwise_hinge_loss(s.reshape(-1), flat_l, lengths, reduction="sum")
        plain, mod, kw = torch_pairwise_hinge, ph, {"margin": 1.0}
    else:
        def ours(s: torch.Tensor) -> torch.Tensor:
            return PF.lambdarank_loss(s.reshape(-1), flat_l, lengths, reduction="sum")
        plain, mod, kw = torch_lambdarank, lr, {"sigma": 1.0, "topn": 0, "gain": "exp2"}
    s1, s2 = scores.detach().double().requires_grad_(), scores.detach().double().requires_grad_()
    a, b = ours(s1), plain(s2, labels.double())
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-6, atol=1e-9)
    flat = scores.reshape(-1)
    torch.testing.assert_close(mod.forward_cuda(flat, flat_l, lengths, **kw).sum().double(), b.detach(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mod.gradient_cuda(flat, flat_l, ones, lengths, **kw).double(), s2.grad.reshape(-1),
                               rtol=1e-4, atol=1e-6)

    def fwd_bwd(loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
        def run() -> None:
            s = scores.detach().requires_grad_()
            loss_fn(s).backward()
        return run

    def raw() -> None:
        mod.forward_cuda(flat, flat_l, lengths, **kw)
        mod.gradient_cuda(flat, flat_l, ones, lengths, **kw)

    runs: dict[str, Callable[[], Any]] = {"pairloss": fwd_bwd(ours), "raw kernels": raw,
                                          "torch eager": fwd_bwd(lambda s: plain(s, labels))}
    compiled = _compiled(plain)
    if compiled is not None:
        runs["torch.compile"] = fwd_bwd(lambda s: compiled(s, labels))
    memory = {k: _peak_mib(fn) for k, fn in runs.items()}
    timings: dict[str, float | None] = {k: _time_ms(fn) for k, fn in runs.items()}
    pairs = sessions * n * (n - 1) / 2
    _report(name, f"n={n} x {sessions}", timings, memory, f"{timings['pairloss'] * 1e6 / pairs:.4f} ns/pair")


# ---- the cuda-marked tests ------------------------------------------------------------------------------
def run_cuda_tests() -> bool:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--maxfail=10",
           "--no-header", "-o", "addopts=", "tests"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append("--timeout=90")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    summary = tail[-1] if tail else "(no output)"
    print(f"{'cuda-marked tests':<47} {summary} in {time.perf_counter() - start:.0f} s", flush=True)
    if proc.returncode != 0:
        print("\n".join(tail[-80:]), flush=True)
    RESULTS.append({"kernel": "cuda-marked tests", "rc": proc.returncode, "summary": summary})
    return proc.returncode == 0


def main() -> int:
    if not HAS_TRITON:
        print("triton is not installed: nothing to check (pip install pairloss[gpu])")
        return 0
    if ON_GPU:
        name = torch.cuda.get_device_name()
        print(f"device: {name}, torch {torch.__version__}, triton {__import__('triton').__version__}", flush=True)
    else:
        print(f"CPU half: Triton interpreter, torch {torch.__version__}", flush=True)
    ok = True
    if ON_GPU and not ARGS.no_tests:
        ok = run_cuda_tests()
    if ON_GPU:
        cases: list[Callable[[], None]] = [
            lambda: bench_negative(10**7),
            lambda: bench_margin_ranking(10**7),
            lambda: bench_pairwise_loss(10, 100_000),
            lambda: bench_pairwise_loss(100, 10_000),
            lambda: bench_pairwise_loss(1000, 1000),
            lambda: bench_pairwise_loss(10_000, 10),
            lambda: bench_session_op("PairWiseHingeLoss", 10, 100_000),
            lambda: bench_session_op("PairWiseHingeLoss", 1000, 1000),
            lambda: bench_session_op("LambdaRankLoss", 10, 100_000),
            lambda: bench_session_op("LambdaRankLoss", 1000, 1000),
        ]
    else:
        cases = [
            lambda: bench_negative(1000),
            lambda: bench_margin_ranking(1000),
            lambda: bench_pairwise_loss(10, 6),
            lambda: bench_pairwise_loss(70, 2),
            lambda: bench_session_op("PairWiseHingeLoss", 10, 3),
            lambda: bench_session_op("LambdaRankLoss", 12, 2),
        ]
    for case in cases:
        if _out_of_time():
            print("time budget reached: remaining cases skipped", flush=True)
            break
        try:
            case()
        except Exception as exc:  # report and go on: one call must show every kernel's state
            ok = False
            print(f"FAILED: {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
            RESULTS.append({"failed": f"{type(exc).__name__}: {exc}"[:4000]})
    if ARGS.json is not None:
        ARGS.json.write_text(json.dumps(RESULTS, indent=1, default=str))
    print(f"gpu_check: {'ok' if ok else 'FAILED'} in {time.perf_counter() - START:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
