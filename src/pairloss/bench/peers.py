"""The alternatives pairloss's session losses are measured against, each behind one small interface.

Every peer takes equal-size sessions as a padded ``(sessions, n)`` batch (scores float, labels 0-4) and
returns a function that runs one forward + backward pass and gives back ``(loss value, gradient with
respect to the scores)``. Libraries are imported lazily: none of them is a runtime dependency of pairloss
(``pip install "pairloss[bench]"`` adds the installable ones), and a peer that cannot be imported is
skipped with its reason.

Each peer keeps its own reduction; ``Peer.reduction`` names it, and :func:`session_weights` turns it into
the per-session weights ``g_s`` with ``peer value = sum_s g_s * pairloss_s`` (pairloss_s the per-session
mean), so a peer is checked against pairloss's forward and gradient operators without changing the
peer's code:

- ``session_mean_sum``: sum over sessions of the per-session mean (pairloss ``reduction="sum"``);
- ``global_mean``: mean over all pairs of the batch (Rax's ``jnp.mean``, allRank's ``BCEWithLogitsLoss``);
- ``pair_sum``: sum over all pairs (pytorchltr's per-query sums, summed);
- ``pair_sum_log2``: the same in bits (pytorchltr's RankNet uses ``log2``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PEERS", "Peer", "PeerUnavailable", "pair_counts", "session_weights"]

FLT_EPSILON = 2.0**-23  # pairloss's tie tolerance on labels
Step = Callable[[], tuple[Any, Any]]


class PeerUnavailable(RuntimeError):
    """The peer's library is not importable here; the message says why."""


@dataclass(frozen=True)
class Peer:
    """One alternative: how to build its forward + backward step for a loss, and what it reduces to."""

    key: str
    label: str
    losses: tuple[str, ...]
    reduction: str
    build: Callable[..., Step]  # build(loss, scores, labels, margin) -> step
    load: Callable[[], Any] = lambda: None  # raises PeerUnavailable
    n_by_n: bool = True  # materialises (sessions, n, n) pair tensors: run on fewer sessions
    max_n: int | None = None  # sizes above this are skipped (with ``max_n_reason``)
    max_n_reason: str = ""
    float64: bool = True  # False: the library computes in float32 only, so it is checked in float32


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a stand-in module counts as present)."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ---- reductions --------------------------------------------------------------------------------------
def pair_counts(labels: np.ndarray) -> np.ndarray:
    """Discordant pairs per session (|l_i - l_j| >= 2^-23, each unordered pair once); labels (S, n)."""
    lab = labels.astype(np.float64)
    dl = np.abs(lab[:, :, None] - lab[:, None, :]) >= FLT_EPSILON
    return dl.sum(axis=(1, 2)) // 2


def session_weights(reduction: str, labels: np.ndarray) -> np.ndarray:
    """``g_s`` with peer value = sum_s g_s * (per-session mean of pairloss) for the peer's reduction."""
    pairs = pair_counts(labels).astype(np.float64)
    if reduction == "session_mean_sum":
        return np.ones(labels.shape[0])
    if reduction == "global_mean":
        return pairs / max(pairs.sum(), 1.0)
    if reduction == "pair_sum":
        return pairs
    if reduction == "pair_sum_log2":
        return pairs / math.log(2.0)
    if reduction == "global_mean_x_n":  # Rax's dcg_lambdaweight scales every weight by the list size
        return labels.shape[1] * pairs / max(pairs.sum(), 1.0)
    msg = f"unknown reduction {reduction!r}"
    raise ValueError(msg)


# ---- torch formulations -------------------------------------------------------------------------------
def _torch_step(fn: Callable[[Any, Any], Any], scores: np.ndarray, labels: np.ndarray) -> Step:
    import torch

    s = torch.from_numpy(scores.copy()).requires_grad_(True)
    lab = torch.from_numpy(labels.astype(scores.dtype))

    def step() -> tuple[Any, Any]:
        s.grad = None
        loss = fn(s, lab).sum()
        loss.backward()
        return loss.detach(), s.grad

    return step


def torch_masked(loss: str, margin: float = 1.0) -> Callable[[Any, Any], Any]:
    """The masked n x n formulation under autograd: per-session means, shape (sessions,).

    The fastest of the variants we timed (``torch.where`` masks, boolean selection with ``index_add``,
    ``logsigmoid``): multiplying by a float mask, which keeps every op a plain dense kernel.
    """
    import torch
    import torch.nn.functional as F

    def fn(s: Any, lab: Any) -> Any:
        d = s[:, :, None] - s[:, None, :]  # s_i - s_j, pairs (i, j) with i the higher label
        m = ((lab[:, :, None] - lab[:, None, :]) >= FLT_EPSILON).to(s.dtype)
        per_pair = F.softplus(-d) if loss == "logistic" else torch.relu(margin - d)
        return (per_pair * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)

    return fn


_CHUNK = 1 << 18  # pair elements per block: a few MiB of temporaries, in L2 on most machines


def torch_chunked(loss: str, margin: float = 1.0) -> Callable[[Any, Any], Any]:
    """Row-chunked eager torch with bounded memory: blocks of at most ``_CHUNK`` pairs.

    Forward and gradient in one pass (a custom autograd function keeps the O(N) gradient from the
    forward pass, as a hand-written torch loss would): one exp per pair serves the softplus and the
    sigmoid. Many small sessions share a block; a large session is cut into row blocks.
    """
    import torch

    class _Chunked(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, s: Any, lab: Any) -> Any:
            n_sessions, n = s.shape
            total = torch.zeros(n_sessions, dtype=torch.float64)
            count = torch.zeros(n_sessions, dtype=torch.float64)
            grad = torch.zeros_like(s)

            def block(sb: Any, lb: Any, rows: slice) -> tuple[Any, Any, Any]:
                # sb, lb: (k, n); pairs (row i, column j) with label_i above label_j
                d = sb[:, rows, None] - sb[:, None, :]
                m = ((lb[:, rows, None] - lb[:, None, :]) >= FLT_EPSILON).to(s.dtype)
                if loss == "logistic":
                    e = d.abs().neg_().exp_()
                    per_pair = torch.log1p(e).add_(torch.relu(d.neg()))
                    w = torch.sigmoid(d.neg_()).mul_(m)  # d(loss)/d(s_j) = sigmoid(-(s_i - s_j))
                else:
                    h = d.neg_().add_(margin)  # margin - (s_i - s_j)
                    w = (h >= 0).to(s.dtype).mul_(m)  # active pairs; the kink passes the gradient
                    per_pair = h.clamp_min_(0.0)
                tot = (per_pair.mul_(m)).sum((1, 2), dtype=torch.float64)
                return tot, m.sum((1, 2), dtype=torch.float64), w

            if n * n <= _CHUNK:
                k = max(1, _CHUNK // max(1, n * n))
                for a in range(0, n_sessions, k):
                    tot, cnt, w = block(s[a:a + k], lab[a:a + k], slice(None))
                    total[a:a + k] = tot
                    count[a:a + k] = cnt
                    grad[a:a + k] = w.sum(1) - w.sum(2)
            else:
                r = max(1, _CHUNK // n)
                for b in range(n_sessions):
                    for a in range(0, n, r):
                        tot, cnt, w = block(s[b:b + 1], lab[b:b + 1], slice(a, a + r))
                        total[b] += tot[0]
                        count[b] += cnt[0]
                        grad[b, a:a + r] -= w[0].sum(1)
                        grad[b] += w[0].sum(0)
            scale = torch.where(count > 0, 1.0 / count.clamp_min(1.0), 0.0)
            ctx.save_for_backward(grad, scale.to(s.dtype))
            return (total * scale).to(s.dtype)

        @staticmethod
        def backward(ctx: Any, g: Any) -> tuple[Any, None]:
            grad, scale = ctx.saved_tensors
            return grad * (g * scale)[:, None], None

    return _Chunked.apply


def torch_sorted_hinge(margin: float = 1.0) -> Callable[[Any, Any], Any]:
    """Pairwise hinge in O(G n log n) with plain torch ops (G = distinct labels), under autograd.

    For each label value a: sort the session's scores of items labelled a, and for every item j with a
    lower label count the a-items i with s_i <= s_j + margin (their pairs are active) and sum their
    scores, by ``searchsorted`` and a cumulative sum. Exact, memory O(N); the strongest torch formulation
    of the hinge for graded labels we know of.
    """
    import torch

    def fn(s: Any, lab: Any) -> Any:
        n_sessions = s.shape[0]
        total = s.new_zeros(n_sessions)
        pairs = s.new_zeros(n_sessions)
        inf = torch.tensor(float("inf"), dtype=s.dtype)
        for a in torch.unique(lab).tolist():
            is_a = lab == a
            lower = (a - lab) >= FLT_EPSILON
            hi_sorted, _ = torch.sort(torch.where(is_a, s, inf), dim=1)
            finite = torch.where(is_a.sum(1, keepdim=True) > torch.arange(s.shape[1]), hi_sorted, 0.0)
            csum = torch.nn.functional.pad(torch.cumsum(finite, dim=1), (1, 0))
            bound = (s + margin).detach().contiguous()
            c = torch.searchsorted(hi_sorted.detach().contiguous(), bound, right=True)
            c = torch.minimum(c, is_a.sum(1, keepdim=True))
            contrib = c.to(s.dtype) * (s + margin) - torch.gather(csum, 1, c)
            total = total + torch.where(lower, contrib, 0.0).sum(1)
            pairs = pairs + is_a.sum(1).to(s.dtype) * lower.sum(1).to(s.dtype)
        return total / pairs.clamp_min(1.0)

    return fn


def _build_torch(variant: str) -> Callable[..., Step]:
    def build(loss: str, scores: np.ndarray, labels: np.ndarray, margin: float = 1.0) -> Step:
        if variant == "masked":
            fn = torch_masked(loss, margin)
        elif variant == "chunked":
            fn = torch_chunked(loss, margin)
        elif variant == "sorted":
            fn = torch_sorted_hinge(margin)
        elif variant == "compiled":
            import torch

            fn = torch.compile(torch_masked(loss, margin), dynamic=False)
        elif variant == "lambdarank":
            fn = torch_lambdarank()
        else:  # pragma: no cover - a typo in PEERS
            raise ValueError(variant)
        return _torch_step(fn, scores, labels)

    return build


def torch_lambdarank() -> Callable[[Any, Any], Any]:
    """LambdaRank-weighted pairwise logistic loss, padded n x n: per-session means, shape (sessions,).

    Weight of pair (i, j): ``|gain_i - gain_j| * |1/log2(1 + rank_i) - 1/log2(1 + rank_j)| / IDCG`` (the
    |ΔNDCG| of swapping them) with gain ``2^l - 1`` and ranks by the current scores (no gradient through
    the weights), each session averaged over its discordant pairs.
    """
    import torch
    import torch.nn.functional as F

    def fn(s: Any, lab: Any) -> Any:
        n = s.shape[1]
        order = torch.argsort(s.detach(), dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(1, n + 1).expand_as(order))
        disc = 1.0 / torch.log2(1.0 + ranks.to(s.dtype))
        gain = torch.pow(2.0, lab) - 1.0
        ideal = (torch.sort(gain, dim=1, descending=True).values
                 / torch.log2(torch.arange(2, n + 2, dtype=s.dtype))).sum(1, keepdim=True)
        w = (gain[:, :, None] - gain[:, None, :]).abs() * (disc[:, :, None] - disc[:, None, :]).abs()
        w = w / torch.where(ideal > 0, ideal, 1.0)[:, :, None]
        d = s[:, :, None] - s[:, None, :]
        m = ((lab[:, :, None] - lab[:, None, :]) >= FLT_EPSILON).to(s.dtype)
        return (F.softplus(-d) * w * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)

    return fn


# ---- JAX / Rax ----------------------------------------------------------------------------------------
@functools.cache
def _load_rax() -> Any:
    if not (_installed("rax") and _installed("jax")):
        raise PeerUnavailable("rax / jax not installed (the bench extra of pairloss installs them)")
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 only where asked for (the equality checks)
    import rax

    return rax


def _build_rax(loss: str, scores: np.ndarray, labels: np.ndarray, margin: float = 1.0) -> Step:
    import jax
    import jax.numpy as jnp

    rax = _load_rax()
    if loss == "logistic":
        def value(s: Any, lab: Any) -> Any:
            return rax.pairwise_logistic_loss(s, lab)
    elif loss == "hinge":
        if margin != 1.0:
            raise PeerUnavailable("rax.pairwise_hinge_loss has margin 1 only")

        def value(s: Any, lab: Any) -> Any:
            return rax.pairwise_hinge_loss(s, lab)
    else:
        # normalize=True divides the gains by the ideal DCG: |ΔNDCG| weights, pairloss's LambdaRankLoss
        weight_fn = functools.partial(rax.dcg_lambdaweight, normalize=True)

        def value(s: Any, lab: Any) -> Any:
            return rax.pairwise_logistic_loss(s, lab, lambdaweight_fn=weight_fn)
    vg = jax.jit(jax.value_and_grad(value))
    s = jnp.asarray(scores)
    lab = jnp.asarray(labels.astype(scores.dtype))

    def step() -> tuple[Any, Any]:
        return jax.block_until_ready(vg(s, lab))

    return step


# ---- TensorFlow Ranking under XLA -------------------------------------------------------------------
_TFR_IMPORT_NOTE = ""


@functools.cache
def _load_tfr() -> Any:
    """tensorflow_ranking's loss implementations (``losses_impl``), imported past the package's __init__.

    TF-Ranking 0.5.5 pins tensorflow < 2.16, and its ``__init__`` imports ``tf.estimator``, which TF 2.16+
    no longer ships; its losses (``python/losses_impl.py``) use only core TF ops. With a newer TF we load
    that module alone, under empty stand-ins for the two parent packages, and say so in the table.
    """
    global _TFR_IMPORT_NOTE
    if not (_installed("tensorflow") and _installed("tensorflow_ranking")):
        raise PeerUnavailable("tensorflow / tensorflow-ranking not installed (see BENCHMARKS.md for the pip lines)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        from tensorflow_ranking.python import losses_impl
    except ImportError as exc:
        for name in [m for m in sys.modules if m.startswith("tensorflow_ranking")]:
            del sys.modules[name]
        spec = importlib.util.find_spec("tensorflow_ranking")
        if spec is None or spec.origin is None:
            raise PeerUnavailable(f"tensorflow_ranking not importable: {exc}") from exc
        root = os.path.dirname(spec.origin)
        for name, path in (("tensorflow_ranking", root), ("tensorflow_ranking.python", os.path.join(root, "python"))):
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
        try:
            losses_impl = importlib.import_module("tensorflow_ranking.python.losses_impl")
        except ImportError as exc2:
            raise PeerUnavailable(f"tensorflow_ranking losses not importable: {exc2}") from exc
        _TFR_IMPORT_NOTE = f"losses_impl imported alone (package import fails on TF {tf.__version__}: {exc})"
    return tf, losses_impl


def _build_tfr(loss: str, scores: np.ndarray, labels: np.ndarray, margin: float = 1.0) -> Step:
    tf, losses_impl = _load_tfr()
    if loss == "logistic":
        obj = losses_impl.PairwiseLogisticLoss(name="pairwise_logistic")
    elif loss == "hinge":
        if margin != 1.0:
            raise PeerUnavailable("TF-Ranking's PairwiseHingeLoss has margin 1 only")
        obj = losses_impl.PairwiseHingeLoss(name="pairwise_hinge")
    else:
        raise PeerUnavailable("no LambdaRank-weighted variant wired for TF-Ranking")
    s = tf.constant(scores)
    lab = tf.constant(labels.astype(scores.dtype))

    @tf.function(jit_compile=True)
    def vg(s: Any, lab: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(s)
            # per-list mean over each list's pairs (TF-Ranking's own compute_per_list), summed: pairloss's
            # reduction="sum" exactly
            per_list, _ = obj.compute_per_list(lab, s, None)
            value = tf.reduce_sum(per_list)
        return value, tape.gradient(value, s)

    def step() -> tuple[Any, Any]:
        v, g = vg(s, lab)
        return v.numpy(), g.numpy()

    return step


# ---- allRank --------------------------------------------------------------------------------------------
@functools.cache
def _load_allrank() -> Any:
    """allRank's loss functions. Its package imports its data loading (torchvision) and cloud storage
    (gcsfs) modules, which the losses do not use and which pin torch <= 1.8; stand-ins replace those two
    modules (with allRank's own ``PADDED_Y_VALUE = -1``) when they cannot be imported."""
    if not _installed("allrank"):
        raise PeerUnavailable("allrank not installed (pip install --no-deps allrank)")
    try:
        from allrank.models import losses
    except ImportError:
        for name in [m for m in sys.modules if m.startswith("allrank")]:
            del sys.modules[name]
        data = types.ModuleType("allrank.data.dataset_loading")
        data.PADDED_Y_VALUE = -1  # type: ignore[attr-defined]
        data.PADDED_INDEX_VALUE = -1  # type: ignore[attr-defined]
        files = types.ModuleType("allrank.utils.file_utils")
        files.is_gs_path = lambda _path: False  # type: ignore[attr-defined]
        files.copy_file_to_local = None  # type: ignore[attr-defined]
        files.open_local_or_gs = open  # type: ignore[attr-defined]
        sys.modules["allrank.data.dataset_loading"] = data
        sys.modules["allrank.utils.file_utils"] = files
        try:
            from allrank.models import losses
        except ImportError as exc:
            raise PeerUnavailable(f"allrank losses not importable: {exc}") from exc
    return losses


def _build_allrank(loss: str, scores: np.ndarray, labels: np.ndarray, margin: float = 1.0) -> Step:
    losses = _load_allrank()
    if loss == "logistic":
        def fn(s: Any, lab: Any) -> Any:
            return losses.rankNet(s, lab)
    elif loss == "lambdarank":
        def fn(s: Any, lab: Any) -> Any:
            return losses.lambdaLoss(s, lab, weighing_scheme="lambdaRank_scheme", reduction="mean",
                                     reduction_log="natural")
    else:
        raise PeerUnavailable("allRank has no pairwise hinge loss")
    return _torch_step(fn, scores, labels)


# ---- pytorchltr -----------------------------------------------------------------------------------------
@functools.cache
def _load_pytorchltr() -> Any:
    if not _installed("pytorchltr"):
        raise PeerUnavailable("pytorchltr not installed (see BENCHMARKS.md: its dataset parser needs a patch)")
    try:
        from pytorchltr import loss
    except ImportError as exc:
        raise PeerUnavailable(f"pytorchltr.loss not importable: {exc}") from exc
    return loss


def _build_pytorchltr(loss: str, scores: np.ndarray, labels: np.ndarray, margin: float = 1.0) -> Step:
    import torch

    mod = _load_pytorchltr()
    if loss == "logistic":
        obj = mod.PairwiseLogisticLoss()
    elif loss == "hinge":
        if margin != 1.0:
            raise PeerUnavailable("pytorchltr's PairwiseHingeLoss has margin 1 only")
        obj = mod.PairwiseHingeLoss()
    else:
        obj = mod.LambdaNDCGLoss2()
    s = torch.from_numpy(scores.copy()).requires_grad_(True)
    rel = torch.from_numpy(labels.astype(np.int64))
    n = torch.full((scores.shape[0],), scores.shape[1], dtype=torch.int64)

    def step() -> tuple[Any, Any]:
        s.grad = None
        value = obj(s, rel, n).sum()
        value.backward()
        return value.detach(), s.grad

    return step


_ALLRANK_MAX_N = 2000
PEERS: tuple[Peer, ...] = (
    Peer("torch_masked", "torch eager, masked n x n", ("logistic", "hinge"), "session_mean_sum",
         _build_torch("masked")),
    Peer("torch_chunked", "torch eager, row-chunked (fwd+grad in one pass)", ("logistic", "hinge"),
         "session_mean_sum", _build_torch("chunked"), n_by_n=False),
    Peer("torch_sorted", "torch eager, sort + searchsorted O(G n log n)", ("hinge",), "session_mean_sum",
         _build_torch("sorted"), n_by_n=False),
    Peer("torch_compile", "torch.compile(masked n x n)", ("logistic", "hinge"), "session_mean_sum",
         _build_torch("compiled")),
    Peer("rax", "Rax under jax.jit", ("logistic", "hinge", "lambdarank"), "global_mean", _build_rax,
         load=lambda: _load_rax() and None),
    # TF-Ranking's pairwise losses build their pair weights as float32 (losses_impl._pairwise_comparison),
    # so float64 scores fail inside the library: checked in float32
    Peer("tfr", "TF-Ranking under XLA", ("logistic", "hinge"), "session_mean_sum", _build_tfr,
         load=lambda: _load_tfr() and None, float64=False),
    Peer("allrank", "allRank (rankNet; lambdaLoss for LambdaRank)", ("logistic", "lambdarank"), "global_mean",
         _build_allrank,
         load=lambda: _load_allrank() and None, max_n=_ALLRANK_MAX_N,
         max_n_reason="allRank's rankNet indexes with a Python list of all n² index tuples (1e8 at n = 10,000)"),
    Peer("pytorchltr", "pytorchltr", ("logistic", "hinge", "lambdarank"), "pair_sum", _build_pytorchltr,
         load=lambda: _load_pytorchltr() and None),
    Peer("torch_lambdarank", "torch eager, padded n x n (|ΔNDCG| weights)", ("lambdarank",), "session_mean_sum",
         _build_torch("lambdarank")),
)


def reduction_of(peer: Peer, loss: str) -> str:
    """pytorchltr's RankNet is in bits (log2), its hinge in the loss's own units."""
    if peer.key == "pytorchltr" and loss == "logistic":
        return "pair_sum_log2"
    if peer.key == "pytorchltr" and loss == "lambdarank":
        return "different"  # LambdaNDCGLoss2 is LambdaLoss's NDCG-Loss2++ weighting, not |ΔNDCG|
    if peer.key == "rax" and loss == "lambdarank":
        return "global_mean_x_n"
    return peer.reduction
