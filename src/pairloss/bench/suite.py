"""The benchmark suite: pairloss against the strongest alternatives and against measured compute limits.

Method (every figure a ratio measured in one process, one loop):

- forward + backward always timed together, on ``threads`` threads for Numba, torch, XLA and TF alike;
- one warm-up call each (it also compiles: Numba's cache, XLA, inductor), then interleaved repeats
  (a, b, c, a, b, c, ...); the median and the mean of the repeats are both kept, and ratios are
  peer time / pairloss time on the same work (per item where the two ran different session counts);
- equal-size sessions with graded labels 0-4, float32 scores; peers that build n x n pair tensors run as
  many sessions of the same size as ``pair_budget`` allows, and are compared per item;
- before timing, every peer's value and gradient are checked against pairloss's float64 operators
  (``check_rtol``, on a few sessions of the same size, n capped at 1,000), its own reduction normalised
  (:mod:`pairloss.bench.peers`); a peer that disagrees is still timed and flagged MISMATCH;
- peak extra memory: the resident-set high-water mark of one more call above the resident set before it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

from pairloss.bench import limits, peers
from pairloss.bench.timing import Stats, busy_core, interleaved, peak_extra_mib, warm_memory

__all__ = ["LOSSES", "BenchRow", "LossSpec", "machine_summary", "run_benchmarks", "to_markdown"]


@dataclass
class BenchRow:
    """One line: a workload, pairloss's time, one alternative's time on the same work, and the rest.

    ``ours_s`` / ``baseline_s`` are medians; ``speedup`` = baseline / ours (> 1: pairloss is faster;
    for a compute-limit row it is limit / ours, so 0.5 means pairloss takes twice the limit).
    """

    section: str
    case: str
    ours_s: float
    baseline: str
    baseline_s: float | None
    notes: dict[str, str] = field(default_factory=dict)
    ours_mean_s: float | None = None
    baseline_mean_s: float | None = None
    kind: str = "peer"  # "peer", "limit", "variant" (pairloss itself another way), "skipped"
    condition: str = "idle"  # "idle" or "one core busy"
    ours_label: str = "pairloss"

    @property
    def speedup(self) -> float | None:
        return None if self.baseline_s is None else self.baseline_s / self.ours_s

    @property
    def speedup_mean(self) -> float | None:
        if self.baseline_mean_s is None or self.ours_mean_s is None:
            return None
        return self.baseline_mean_s / self.ours_mean_s


# ---- the session losses ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSpec:
    """A pairwise session loss of pairloss: its registry names and its torch functional."""

    key: str  # "logistic", "hinge", "lambdarank"
    section: str
    op_names: tuple[str, ...]  # candidates: the first one the registry knows is used
    functional_names: tuple[str, ...]  # candidates in pairloss.nn.functional
    limit: str  # "logistic" or "sort"
    op_args: tuple[tuple[str, Any], ...] = ()  # keyword arguments of the registry kernels

    def resolve(self) -> tuple[str, Callable[..., Any]] | None:
        """(registry op name, torch functional) or None when this branch does not have the op yet."""
        from pairloss import registry
        from pairloss.nn import functional as pf

        ops = set(registry.operators())
        op = next((name for name in self.op_names if name in ops), None)
        fn = next((getattr(pf, name) for name in self.functional_names if hasattr(pf, name)), None)
        return None if op is None or fn is None else (op, fn)


LOSSES: dict[str, LossSpec] = {
    "logistic": LossSpec("logistic", "PairWiseLoss", ("PairWiseLoss",), ("pairwise_logistic_loss",), "logistic"),
    "hinge": LossSpec("hinge", "PairWiseHingeLoss", ("PairWiseHingeLoss",), ("pairwise_hinge_loss",), "sort",
                      (("margin", 1.0),)),
    # The metric-aware op is being written; the suite picks it up under any of these names. Its peers
    # (Rax with dcg_lambdaweight, allRank's lambdaLoss, a padded torch LambdaRank) are in peers.PEERS.
    "lambdarank": LossSpec("lambdarank", "LambdaRank (metric-aware pairwise)",
                           ("LambdaRankLoss", "LambdaRankPairWiseLoss", "PairWiseLambdaRankLoss", "LambdaRank"),
                           ("lambdarank_loss", "lambda_rank_loss", "lambdarank_logistic_loss",
                            "pairwise_lambdarank_loss"), "logistic",
                           (("sigma", 1.0), ("topn", 0), ("gain", "exp2"))),
}


@dataclass
class _Config:
    quick: bool
    threads: int
    repeats: int
    pair_budget: int  # pair elements an n x n peer may materialise per call (sessions x n x n)
    case_budget_s: float  # seconds of timed repeats per case, after the first three
    sizes: list[tuple[int, int]]  # (n, sessions)
    mrc_n: int
    check_rtol: float = 1e-7
    say: Callable[[str], None] = lambda _msg: None


# ---- pairloss callables -----------------------------------------------------------------------------------
def _pairloss_torch(spec: LossSpec, fn: Callable[..., Any], scores: np.ndarray, labels: np.ndarray
                    ) -> Callable[[], tuple[Any, Any]]:
    import torch

    s = torch.from_numpy(scores.reshape(-1).copy()).requires_grad_(True)
    lab = torch.from_numpy(labels.reshape(-1).astype(np.int64))
    lengths = torch.full((scores.shape[0],), scores.shape[1], dtype=torch.int64)

    def step() -> tuple[Any, Any]:
        s.grad = None
        value = fn(s, lab, lengths, reduction="sum")
        value.backward()
        return value.detach(), s.grad

    return step


def _flat_case(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(flat scores, flat labels, lengths, a Y_grad of ones) of equal-size sessions (sessions, n), as the
    NumPy kernels take them."""
    lens = np.full(scores.shape[0], scores.shape[1], np.int64)
    return scores.reshape(-1), labels.reshape(-1), lens, np.ones(scores.shape[0], scores.dtype)


def _pairloss_ops(op: str, scores: np.ndarray, labels: np.ndarray, op_args: tuple[tuple[str, Any], ...] = ()
                  ) -> Callable[[], tuple[Any, Any]]:
    from pairloss import registry

    kw = dict(op_args)
    fwd, grad = registry.kernel(op), registry.kernel(op + "Gradient")
    x, lab, lens, ones = _flat_case(scores, labels)

    def step() -> tuple[Any, Any]:
        return fwd(x, lab, lens, **kw), grad(x, lab, ones, lens, **kw)

    return step


def _pairloss_kernel(op: str, scores: np.ndarray, labels: np.ndarray, op_args: tuple[tuple[str, Any], ...] = ()
                     ) -> Callable[[], tuple[Any, Any]] | None:
    """The fused CPU kernel the torch front end calls (loss and gradient in one pass, NumPy in and out, no
    autograd): the front end's time less its fixed cost per call. None when the op has no fused kernel."""
    from pairloss import registry

    fused = registry.fused_gradient(op)
    if fused is None:
        return None
    kw = dict(op_args)
    x, lab, lens, ones = _flat_case(scores, labels)

    def step() -> tuple[Any, Any]:
        result = fused.forward(x, lab, lens, **kw)
        return result.output, fused.backward(result.saved, ones, x, lab, lens)

    return step


def _torch_floor(scores: np.ndarray) -> Callable[[], tuple[Any, Any]]:
    """The least a loss inside torch autograd can cost on these scores: an ``autograd.Function`` whose forward
    makes a 0-d tensor and whose backward hands back an unwritten gradient tensor (``torch.empty``: a fresh
    one, which autograd keeps without a copy, as it keeps pairloss's), called the way the front end is (no
    pair is looked at). The front end's time less this is what its own work costs."""
    import torch

    s = torch.from_numpy(scores.reshape(-1).copy()).requires_grad_(True)

    class _NoWork(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return torch.zeros((), dtype=x.dtype)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return torch.empty(s.shape, dtype=s.dtype)

    def step() -> tuple[Any, Any]:
        s.grad = None
        value = _NoWork.apply(s)
        value.backward()
        return value.detach(), s.grad

    return step


@contextlib.contextmanager
def _numba_threads(n: int) -> Iterator[None]:
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _one_thread(step: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with _numba_threads(1):
            return step()

    return run


# ---- data and checks -----------------------------------------------------------------------------------
def _sessions(n: int, sessions: int, dtype: Any = np.float32, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n * 7919 + sessions if seed is None else seed)
    return rng.standard_normal((sessions, n)).astype(dtype), rng.integers(0, 5, (sessions, n)).astype(np.int64)


def _expected(op: str, reduction: str, scores: np.ndarray, labels: np.ndarray,
              op_args: tuple[tuple[str, Any], ...] = ()) -> tuple[float, np.ndarray]:
    """The peer's value and gradient predicted from pairloss's float64 operators."""
    from pairloss import registry

    kw = dict(op_args)
    x = scores.reshape(-1).astype(np.float64)
    lab = labels.reshape(-1)
    lens = np.full(scores.shape[0], scores.shape[1], np.int64)
    g = peers.session_weights(reduction, labels)
    per_session = registry.kernel(op)(x, lab, lens, **kw)
    grad = registry.kernel(op + "Gradient")(x, lab, g, lens, **kw)
    return float(np.dot(g, per_session)), grad.reshape(scores.shape)


def _rel_errors(got: tuple[Any, Any], want: tuple[float, np.ndarray]) -> tuple[float, float]:
    value = float(np.asarray(got[0]))
    grad = np.asarray(got[1], dtype=np.float64).reshape(want[1].shape)
    rel_v = abs(value - want[0]) / max(abs(want[0]), 1e-300)
    rel_g = float(np.max(np.abs(grad - want[1]))) / max(float(np.max(np.abs(want[1]))), 1e-300)
    return rel_v, rel_g


def _check_peer(peer: peers.Peer, spec: LossSpec, op: str | None, n: int, cfg: _Config) -> str:
    """Float64 agreement with pairloss on a few sessions of size min(n, 1000): 'ok ...' or 'MISMATCH ...'."""
    if op is None:
        return "not checked: pairloss has no such op on this branch"
    if peer.key == "torch_compile":
        return "checked through its eager twin (same function) and in float32 below"
    if peers.reduction_of(peer, spec.key) == "different":
        return "not comparable: the library defines this loss differently (timed for scale only)"
    m = min(n, 1000)
    dtype, rtol = (np.float64, cfg.check_rtol) if peer.float64 else (np.float32, _FLOAT32_RTOL)
    scores, labels = _sessions(m, 3, dtype, seed=1234 + m)
    step = peer.build(spec.key, scores, labels)
    rel_v, rel_g = _rel_errors(step(), _expected(op, peers.reduction_of(peer, spec.key), scores.astype(np.float64),
                                                 labels, spec.op_args))
    status = "ok" if max(rel_v, rel_g) <= rtol else "MISMATCH"
    where = f"n={m}" + ("" if m == n else f" (n={n} runs the same code)")
    kind = "f64" if peer.float64 else f"f32 (float32-only library; tolerance {rtol:.0e})"
    return f"{status} {kind} {where}: value {rel_v:.0e}, grad {rel_g:.0e}"


_FLOAT32_RTOL = 2e-5  # float32 sums of up to 1e4 pairs per session


def _fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


# ---- the pairwise session losses --------------------------------------------------------------------------
def _bench_session_loss(spec: LossSpec, cfg: _Config, logistic_limit: dict[str, Stats] | None) -> list[BenchRow]:
    resolved = spec.resolve()
    rows: list[BenchRow] = []
    if resolved is None:
        rows.append(BenchRow(spec.section, "-", float("nan"), "(skipped)", None,
                             {"reason": "pairloss has no such op on this branch yet; its peers are wired in "
                                        "pairloss.bench.peers and run once it exists"}, kind="skipped"))
        return rows
    op, fn = resolved
    available: list[peers.Peer] = []
    for peer in peers.PEERS:
        if spec.key not in peer.losses:
            continue
        if peer.key == "torch_compile" and cfg.quick:
            rows.append(_skip(spec, peer, "compile time (tens of seconds per shape): full run only"))
            continue
        try:
            peer.load()
        except peers.PeerUnavailable as exc:
            rows.append(_skip(spec, peer, str(exc)))
            continue
        available.append(peer)
    for n, n_sessions in cfg.sizes:
        case = f"n={n:,} x {n_sessions:,} sessions"
        cfg.say(f"{spec.section} {case}")
        scores, labels = _sessions(n, n_sessions)
        fns: dict[str, Callable[[], Any]] = {"pairloss": _pairloss_torch(spec, fn, scores, labels),
                                             "pairloss ops": _pairloss_ops(op, scores, labels, spec.op_args)}
        items = {"pairloss": scores.size, "pairloss ops": scores.size}
        kernel = _pairloss_kernel(op, scores, labels, spec.op_args)
        if kernel is not None:
            fns["pairloss kernel"] = kernel
            items["pairloss kernel"] = scores.size
        if spec.limit == "sort":
            # the sort limit and torch's floor in the same rounds as pairloss (_interleaved_sort_rows)
            fns[_SORT_INTERLEAVED] = functools.partial(np.argsort, scores, axis=1)
            fns[_TORCH_FLOOR] = _torch_floor(scores)
        info: dict[str, dict[str, str]] = {}
        for peer in available:
            if peer.max_n is not None and n > peer.max_n:
                rows.append(_skip(spec, peer, peer.max_n_reason, case))
                continue
            k = min(n_sessions, max(1, cfg.pair_budget // (n * n)))
            cfg.say(f"{spec.section} {case}: {peer.label}")
            try:
                check = _check_peer(peer, spec, op, n, cfg)
                t0 = time.perf_counter()
                step = peer.build(spec.key, scores[:k], labels[:k])
                got = step()  # the warm-up call: compiles (XLA, inductor) and touches the memory
                warm_s = time.perf_counter() - t0
            except peers.PeerUnavailable as exc:
                rows.append(_skip(spec, peer, str(exc), case))
                continue
            except Exception as exc:  # a peer that breaks must not end the run: say how it broke
                rows.append(_skip(spec, peer, f"failed: {type(exc).__name__}: {str(exc)[:200]}", case))
                continue
            info[peer.key] = {"check": check, "first call (compile)": f"{warm_s:.1f} s"}
            if peers.reduction_of(peer, spec.key) != "different":
                want = _expected(op, peers.reduction_of(peer, spec.key), scores[:k].astype(np.float64),
                                 labels[:k], spec.op_args)
                rel_v, rel_g = _rel_errors(got, want)
                info[peer.key]["float32 at this size"] = f"value {rel_v:.0e}, grad {rel_g:.0e}"
            fns[peer.key] = step
            items[peer.key] = k * n
        limit_pairs = _add_limit_calls(spec, fns, n_sessions * n * (n - 1) // 2)
        times = interleaved(fns, cfg.repeats, budget_s=cfg.case_budget_s)
        memory = {name: peak_extra_mib(f) for name, f in fns.items()}
        ours = times["pairloss"]
        pairs = n_sessions * n * (n - 1) / 2
        base_notes = {"pairloss peak extra MiB": _fmt_mib(memory["pairloss"]),
                      "ns/pair": f"{ours.median / pairs * 1e9:.2f}", "repeats": str(ours.repeats)}
        # pairloss itself through the registry's forward and gradient operators (the Caffe2 contract)
        rows.append(BenchRow(spec.section, case, ours.median, "pairloss ops (forward op + gradient op)",
                             times["pairloss ops"].median, dict(base_notes), ours.mean, times["pairloss ops"].mean,
                             kind="variant"))
        if "pairloss kernel" in times:
            rows.append(BenchRow(spec.section, case, ours.median, "pairloss kernel (the fused call alone, no torch)",
                                 times["pairloss kernel"].median, dict(base_notes), ours.mean,
                                 times["pairloss kernel"].mean, kind="variant"))
        for peer in available:
            if peer.key not in times:
                continue
            scale = items["pairloss"] / items[peer.key]
            st = times[peer.key]
            notes = dict(base_notes)
            notes["peer peak extra MiB"] = (f"{_fmt_mib(memory[peer.key])} at {items[peer.key]:.0e} items"
                                            + (f" (~{memory[peer.key] * scale:,.0f} at {items['pairloss']:.0e})"
                                               if memory[peer.key] is not None and scale != 1 else ""))
            notes["items (pairloss / peer)"] = f"{items['pairloss']:.0e} / {items[peer.key]:.0e}"
            notes.update(info[peer.key])
            notes["peer repeats"] = str(st.repeats)
            rows.append(BenchRow(spec.section, case, ours.median, peer.label, st.median * scale, notes,
                                 ours.mean, st.mean * scale))
        rows += _limit_rows(spec, case, n, n_sessions, scores, times, logistic_limit, cfg)
        rows += _interleaved_limit_rows(spec, case, n, n_sessions, times, limit_pairs)
        rows += _interleaved_sort_rows(spec, case, scores.size, times)
    return rows


# each against the limits: the torch front end (what a training loop calls), its fused kernel alone (the
# front end less its fixed cost per call) and the registry's forward op + gradient op
_OURS = ("pairloss", "pairloss kernel", "pairloss ops")
_INTERLEAVED_LIMITS = {"float64": np.float64, "float32": np.float32}


def _add_limit_calls(spec: LossSpec, fns: dict[str, Callable[[], Any]], pairs: int) -> dict[str, int]:
    """Add the logistic limit loop (float64 and float32) over this case's pairs to the contenders; the pairs
    each computes."""
    if spec.limit != "logistic":
        return {}
    computed = {}
    for dtype_name, dtype in _INTERLEAVED_LIMITS.items():
        call, computed[dtype_name] = limits.logistic_limit_call(pairs, dtype)
        fns[f"compute limit {dtype_name}, interleaved"] = call
    return computed


def _interleaved_limit_rows(spec: LossSpec, case: str, n: int, n_sessions: int, times: dict[str, Stats],
                            limit_pairs: dict[str, int]) -> list[BenchRow]:
    """pairloss against the limit loop timed in the same interleaved repeats (the run-start limit above
    can be minutes and a speed phase of this VM away)."""
    rows = []
    for dtype_name, computed in limit_pairs.items():
        per_pair = times[f"compute limit {dtype_name}, interleaved"].per(computed)
        rows += _against_pair_limit(spec, case, n_sessions * n * (n - 1) / 2, times,
                                    f"compute limit {dtype_name}, interleaved (numba, polynomial log1p)", per_pair)
    return rows


_SORT_INTERLEAVED = "sort limit, interleaved (np.argsort per session)"
_TORCH_FLOOR = "torch autograd floor (a Function that does no work)"


def _interleaved_sort_rows(spec: LossSpec, case: str, items: int, times: dict[str, Stats]) -> list[BenchRow]:
    """pairloss, its fused kernel and its registry ops against one argsort per session timed in the same
    interleaved repeats, and the front end less torch's floor (its cost per call that no loss inside
    autograd avoids) against the same sort."""
    if _SORT_INTERLEAVED not in times:
        return []
    floor = times[_TORCH_FLOOR]
    timed = {who: times[who] for who in _OURS if who in times}
    front = times["pairloss"]
    timed["pairloss less the torch floor"] = Stats(front.median - floor.median, front.mean - floor.mean,
                                                   front.repeats)
    return _against_sort_limit(spec, case, items, timed, _SORT_INTERLEAVED, times[_SORT_INTERLEAVED],
                               {"torch floor": _ms(floor.median)})


def _against_sort_limit(spec: LossSpec, case: str, items: int, timed: dict[str, Stats], label: str,
                        limit: Stats, notes: dict[str, str] | None = None) -> list[BenchRow]:
    """Rows of each of ``timed`` (pairloss, its fused kernel, its registry ops...) against a sort limit
    ``limit`` (seconds per call on this case's ``items``), with ``notes`` added to each."""
    return [BenchRow(spec.section, case, st.median, label, limit.median,
                     {"limit ns/item": f"{limit.median / items * 1e9:.1f}",
                      "ours ns/item": f"{st.median / items * 1e9:.1f}",
                      "ours / limit": f"{st.median / limit.median:.2f}x", **(notes or {})},
                     st.mean, limit.mean, kind="limit", ours_label=who)
            for who, st in timed.items()]


def _against_pair_limit(spec: LossSpec, case: str, pairs: float, times: dict[str, Stats], label: str,
                        per_pair: Stats) -> list[BenchRow]:
    """Rows of pairloss, its fused kernel and its registry ops against a per-pair limit scaled to this
    case's pairs."""
    rows = []
    for who in _OURS:
        if who not in times:
            continue
        st = times[who]
        rows.append(BenchRow(spec.section, case, st.median, label, per_pair.median * pairs,
                             {"limit ns/pair": f"{per_pair.median * 1e9:.2f}",
                              "ours ns/pair": f"{st.median / pairs * 1e9:.2f}",
                              "ours / limit": f"{st.median / (per_pair.median * pairs):.2f}x"},
                             st.mean, per_pair.mean * pairs, kind="limit", ours_label=who))
    return rows


def _limit_rows(spec: LossSpec, case: str, n: int, n_sessions: int, scores: np.ndarray,
                times: dict[str, Stats], logistic_limit: dict[str, Stats] | None, cfg: _Config) -> list[BenchRow]:
    rows = []
    if spec.limit == "logistic" and logistic_limit:
        pairs = n_sessions * n * (n - 1) / 2
        for dtype in ("float64", "float32"):
            name, best = min(((k, v) for k, v in logistic_limit.items() if k.endswith(dtype)),
                             key=lambda kv: kv[1].median)
            rows += _against_pair_limit(spec, case, pairs, times, f"compute limit {dtype} ({name.rsplit(',', 1)[0]})",
                                        best)
    elif spec.limit == "sort":
        lim = limits.hinge_sort_limit(scores, cfg.repeats)
        name, best = min(lim.items(), key=lambda kv: kv[1].median)
        rows += _against_sort_limit(spec, case, scores.size, {who: times[who] for who in _OURS if who in times},
                                    f"sort limit ({name})", best.per(1 / scores.size))
    return rows


def _skip(spec: LossSpec, peer: peers.Peer, reason: str, case: str = "all sizes") -> BenchRow:
    return BenchRow(spec.section, case, float("nan"), peer.label, None, {"skipped": reason}, kind="skipped")


# ---- the thread policy on a loaded machine ---------------------------------------------------------------------
# one hinge session this long gets the threads to itself (its sort and sweep split between them, a barrier
# at every step): the case where a busy core hurts most (0.88x before cores_free_for); O(n log n), so the
# hinge only
_LONE_SESSION = 200_000


def _bench_thread_policy(cfg: _Config) -> list[BenchRow]:
    """pairloss's default (parallel where it chooses) against its one-thread run, idle and one core busy."""
    rows = []
    for key in ("logistic", "hinge"):
        spec = LOSSES[key]
        resolved = spec.resolve()
        if resolved is None:
            continue
        op, _ = resolved
        for n, n_sessions in [*cfg.sizes, *([(_LONE_SESSION, 1)] if key == "hinge" else [])]:
            scores, labels = _sessions(n, n_sessions)
            step = _pairloss_ops(op, scores, labels, spec.op_args)
            case = f"n={n:,} x {n_sessions:,} sessions"
            for condition in ("idle", "one core busy"):
                cfg.say(f"thread policy {spec.section} {case} ({condition})")
                with busy_core() if condition != "idle" else contextlib.nullcontext():
                    t = interleaved({"default": step, "serial": _one_thread(step)}, cfg.repeats + 4)
                rows.append(BenchRow(spec.section, case, t["default"].median, "pairloss ops on 1 thread",
                                     t["serial"].median, {"repeats": str(t["default"].repeats)},
                                     t["default"].mean, t["serial"].mean, kind="variant", condition=condition,
                                     ours_label=f"pairloss ops, {cfg.threads} threads"))
    return rows


# ---- MarginRankingCriterion and Negative -------------------------------------------------------------------------
def _bench_margin_ranking(cfg: _Config) -> list[BenchRow]:
    import torch

    from pairloss import registry
    from pairloss.nn import functional as pf

    n = cfg.mrc_n
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal(n).astype(np.float32)
    x2 = rng.standard_normal(n).astype(np.float32)
    y = rng.choice(np.array([-1, 1], np.int32), size=n)
    g = rng.standard_normal(n).astype(np.float32)
    fwd, grad = registry.kernel("MarginRankingCriterion"), registry.kernel("MarginRankingCriterionGradient")
    # bytes forward + backward must move: read x1, x2, y, write loss; read x1, x2, y, g, write dx1, dx2
    traffic = n * (4 * 4 + 4 * 6)
    copy_src = np.ones(traffic // 2 // 8)
    copy_dst = np.empty_like(copy_src)  # a copy of traffic/2 bytes reads and writes `traffic` bytes
    t1, t2, ty, tg = (torch.from_numpy(a) for a in (x1, x2, y.astype(np.float32), g))
    t1.requires_grad_(True)
    t2.requires_grad_(True)

    def ops() -> None:
        fwd(x1, x2, y, margin=1.0)
        grad(x1, x2, y, g, margin=1.0)

    def front_end() -> None:
        pf.margin_ranking_loss(t1, t2, ty, margin=1.0, reduction="none").backward(tg)
        t1.grad = t2.grad = None

    def torch_ref() -> None:
        torch.nn.functional.margin_ranking_loss(t1, t2, ty, margin=1.0, reduction="none").backward(tg)
        t1.grad = t2.grad = None

    def numpy_ref() -> None:
        h = 1.0 - y * (x1 - x2)
        np.maximum(h, 0.0)
        active = (h >= 0) * g
        _ = (-y * active, y * active)

    rows = []
    case = f"N={n:.0e} float32, fwd+bwd"
    for condition in ("idle", "one core busy"):
        cfg.say(f"MarginRankingCriterion ({condition})")
        with busy_core() if condition != "idle" else contextlib.nullcontext():
            t = interleaved({"ops": ops, "serial": _one_thread(ops), "front": front_end, "torch": torch_ref,
                             "numpy": numpy_ref, "copy": lambda: np.copyto(copy_dst, copy_src)}, cfg.repeats + 2)
        ours = t["ops"]
        gbs = traffic / ours.median / 1e9
        for key, label, kind in (("torch", "torch F.margin_ranking_loss(reduction='none') + backward", "peer"),
                                 ("numpy", "NumPy (maximum, comparisons, products)", "peer"),
                                 ("serial", "pairloss ops on 1 thread", "variant"),
                                 ("front", "pairloss torch front end (PF.margin_ranking_loss)", "variant"),
                                 ("copy", "copy-bandwidth limit (np.copyto of the same bytes)", "limit")):
            notes = {"GB/s (ours)": f"{gbs:.1f}"}
            if key == "copy":
                notes["ours / limit"] = f"{ours.median / t['copy'].median:.2f}x"
            rows.append(BenchRow("MarginRankingCriterion", case, ours.median, label, t[key].median, notes,
                                 ours.mean, t[key].mean, kind=kind, condition=condition, ours_label="pairloss ops"))
    return rows


def _bench_negative(cfg: _Config) -> list[BenchRow]:
    from pairloss import registry

    neg = registry.kernel("Negative")
    n = cfg.mrc_n
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    out = np.empty_like(x)
    rows = []
    for condition in ("idle", "one core busy"):
        cfg.say(f"Negative ({condition})")
        with busy_core() if condition != "idle" else contextlib.nullcontext():
            t = interleaved({"ours": lambda: neg(x, out=out), "numpy": lambda: np.negative(x, out=out),
                             "ours_new": lambda: neg(x), "numpy_new": lambda: np.negative(x),
                             "copy": lambda: np.copyto(out, x)}, 4 * cfg.repeats + 8)
        for ours_key, base_key, case in (("ours", "numpy", f"N={n:.0e} float32, preallocated output"),
                                         ("ours_new", "numpy_new", f"N={n:.0e} float32, new output")):
            label = "np.negative(x, out=out)" if base_key == "numpy" else "np.negative(x)"
            rows.append(BenchRow("Negative", case, t[ours_key].median, label, t[base_key].median, {},
                                 t[ours_key].mean, t[base_key].mean, condition=condition))
        rows.append(BenchRow("Negative", f"N={n:.0e} float32, preallocated output", t["ours"].median,
                             "copy limit (np.copyto(out, x))", t["copy"].median, {}, t["ours"].mean, t["copy"].mean,
                             kind="limit", condition=condition))
    return rows


# ---- entry points ----------------------------------------------------------------------------------------------
def _logistic_limit_rows(lim: dict[str, Stats], cfg: _Config) -> list[BenchRow]:
    # per-pair seconds shown as the time of 10^6 pairs, so the table's ms/µs columns stay readable
    per = 1e6
    best = min(v.median for k, v in lim.items() if k.endswith("float64")) * per
    return [BenchRow("Compute limit, pairwise logistic (per pair, fwd+bwd arithmetic)", "10^6 pairs", best, name,
                     st.median * per, {"ns/pair": f"{st.median * 1e9:.2f}", "threads": str(cfg.threads)}, best,
                     st.mean * per, kind="limit", ours_label="fastest float64 formulation")
            for name, st in lim.items()]


def run_benchmarks(*, quick: bool = False, threads: int = 2, repeats: int | None = None,
                   progress: Callable[[str], None] | None = None, losses: tuple[str, ...] | None = None,
                   sizes: list[tuple[int, int]] | None = None, sections: tuple[str, ...] | None = None
                   ) -> list[BenchRow]:
    """Run the suite on ``threads`` threads; ``quick`` uses small sizes and seconds.

    ``losses``, ``sizes`` and ``sections`` ("sessions", "limits", "threads", "margin", "negative") narrow
    the run (tests and ad-hoc looks); the defaults are the full table of BENCHMARKS.md.
    """
    import torch

    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    _set_framework_threads(threads)
    cfg = _Config(
        quick=quick, threads=threads, repeats=repeats or (3 if quick else 5),
        pair_budget=2 * 10**6 if quick else 10**7, case_budget_s=2.0 if quick else 6.0,
        sizes=sizes or ([(10, 2000), (100, 200), (1000, 2)] if quick
                        else [(10, 100_000), (100, 10_000), (1000, 100), (10_000, 1)]),
        mrc_n=10**6 if quick else 10**7, say=progress or (lambda _msg: None))
    wanted = sections or ("sessions", "limits", "threads", "margin", "negative")
    warm_memory(10**8 if quick else 10**9)
    rows: list[BenchRow] = []
    lim = None
    if "limits" in wanted or "sessions" in wanted:
        cfg.say("compute limits")
        lim = limits.logistic_limits(10**6 if quick else 2 * 10**7, cfg.repeats)
        if "limits" in wanted:
            rows += _logistic_limit_rows(lim, cfg)
    if "sessions" in wanted:
        for key in losses or ("logistic", "hinge", "lambdarank"):
            rows += _bench_session_loss(LOSSES[key], cfg, lim)
    if "threads" in wanted:
        rows += _bench_thread_policy(cfg)
    if "margin" in wanted:
        rows += _bench_margin_ranking(cfg)
    if "negative" in wanted:
        rows += _bench_negative(cfg)
    return rows


def _set_framework_threads(threads: int) -> None:
    """TensorFlow's pools must be sized before it first runs anything; XLA:CPU under JAX uses every core."""
    import importlib.util
    import sys

    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is not None:
        with contextlib.suppress(Exception):
            import os

            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)


def machine_summary(threads: int) -> str:
    import importlib.metadata as md

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    extra = []
    for dist in ("jax", "rax", "tensorflow", "tensorflow-ranking", "allrank", "pytorchltr"):
        with contextlib.suppress(md.PackageNotFoundError):
            extra.append(f"{dist} {md.version(dist)}")
    return (f"{cpu}; {threads} threads; Python {platform.python_version()}, NumPy {np.__version__}, "
            f"Numba {numba.__version__}, torch {torch.__version__}" + ("; " + ", ".join(extra) if extra else ""))


# ---- Markdown -----------------------------------------------------------------------------------------------------
def _ms(s: float | None) -> str:
    if s is None or math.isnan(s):
        return "-"
    return f"{s * 1e3:,.1f} ms" if s >= 1e-3 else f"{s * 1e6:,.0f} µs"


def _x(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else (f"{v:,.2f}x" if v < 10 else f"{v:,.1f}x")


def _cell(text: str) -> str:
    """One table cell: a multi-line message (a traceback's) keeps its last line, pipes escaped."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}" if lines else "").replace("|", "\\|")


def _summary(rows: list[BenchRow], section: str) -> list[str]:
    """Ratio matrix: one line per case, one column per peer (median ratio; mean ratio in brackets)."""
    peer_rows = [r for r in rows if r.section == section and r.kind in ("peer", "skipped") and r.case != "all sizes"]
    cases = list(dict.fromkeys((r.case, r.condition) for r in rows if r.section == section and r.kind == "peer"))
    if not cases:
        return []
    conditions = {c for _, c in cases}
    labels = list(dict.fromkeys(r.baseline for r in peer_rows))
    interleaved_limit = any(r.section == section and r.kind == "limit" and "interleaved" in r.baseline for r in rows)
    head = ["case", "pairloss", *labels, "pairloss / limit",
            *(["pairloss / limit, interleaved"] if interleaved_limit else [])]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for case, condition in cases:
        ours = next(r for r in rows if r.section == section and r.case == case and r.condition == condition
                    and r.kind in ("peer", "variant"))
        cells = [case + (f" ({condition})" if len(conditions) > 1 else ""), _ms(ours.ours_s)]
        for label in labels:
            r = next((r for r in peer_rows if r.case == case and r.baseline == label
                      and r.condition in (condition, "idle") and (r.kind == "skipped" or r.condition == condition)),
                     None)
            if r is None or r.kind == "skipped":
                cells.append("-")
            else:
                flag = " **≠**" if r.notes.get("check", "").startswith("MISMATCH") else ""
                cells.append(f"{_x(r.speedup)} ({_x(r.speedup_mean)}){flag}")
        for same_repeats in [False, True] if interleaved_limit else [False]:
            lim = next((r for r in rows if r.section == section and r.case == case and r.kind == "limit"
                        and r.condition == condition and r.ours_label in ("pairloss", ours.ours_label)
                        and "float32" not in r.baseline and ("interleaved" in r.baseline) == same_repeats), None)
            cells.append("-" if lim is None else _x(lim.ours_s / lim.baseline_s if lim.baseline_s else None))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(rows: list[BenchRow]) -> str:
    """The rows as Markdown: per section a ratio summary (pairwise losses), then every row in full.

    Ratios are alternative time / pairloss time on the same work (> 1: pairloss faster), median of the
    interleaved repeats, the mean-based ratio beside it.
    """
    out: list[str] = []
    for section in dict.fromkeys(r.section for r in rows):
        out.append(f"### {section}\n")
        summary = _summary(rows, section)
        if summary:
            out.append("Ratios, peer time / pairloss time (median; mean in brackets); **≠**: value check failed.\n")
            out += summary
            out.append("")
        out.append("| case | condition | ours | ours time (median / mean) | alternative | alternative time "
                   "(median / mean) | ratio median | ratio mean | notes |")
        out.append("|---|---|---|---:|---|---:|---:|---:|---|")
        for r in (r for r in rows if r.section == section):
            notes = "; ".join(f"{k}: {_cell(v)}" for k, v in r.notes.items())
            if r.kind == "skipped":
                out.append(f"| {r.case} | | | | {r.baseline} | skipped | | | {notes} |")
                continue
            out.append(f"| {r.case} | {r.condition} | {r.ours_label} | {_ms(r.ours_s)} / {_ms(r.ours_mean_s)} | "
                       f"{r.baseline} | {_ms(r.baseline_s)} / {_ms(r.baseline_mean_s)} | {_x(r.speedup)} | "
                       f"{_x(r.speedup_mean)} | {notes} |")
        out.append("")
    return "\n".join(out)
