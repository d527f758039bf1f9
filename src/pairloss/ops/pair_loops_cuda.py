r"""The CUDA pair loops of the pairwise losses (PairWiseLoss, PairWiseHingeLoss, LambdaRankLoss), in Triton.

One Triton program takes a block of consecutive **items** (rows), whatever sessions they belong to, and
walks the columns from the first row's session start to the last row's session end (the forward: up to
the last row, pairs j < i only), masking pairs from different sessions. So a block of small sessions
does a few short tiles and a huge session is split over many programs: no per-session grid, no
n x n tensor, and every program writes only its own rows (no atomics on results, deterministic). Row
sums are reduced per session by ``torch.segment_reduce`` in float64.

Arithmetic: float32 for float16/bfloat16/float32 scores and float64 for float64 in the logistic losses
(softplus is relu(z) + log1p(exp(-|z|)) with Kahan's log1p, as Triton has no portable log1p; the sigmoid is
the stable one); the hinge decides activity in float64 whatever the dtype, exactly as the CPU kernel.
Labels are compared in float64. Non-finite labels are counted by the kernels themselves, and the one host
synchronisation of a call (besides copying ``lengths`` to the host when it lives on the GPU) reads those
counts after every kernel has been queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pairloss._backends import HAS_TRITON, float64_bits, tl, triton
from pairloss._checks import FLT_EPSILON, check_lengths

__all__ = [
    "HINGE",
    "LOGISTIC",
    "CudaSessions",
    "check_loss_grad",
    "pair_rows",
    "prepare_sessions_cuda",
    "raise_if_bad_labels",
    "scale_rows",
    "session_mean",
    "session_sums",
]

LOGISTIC = 0
HINGE = 1
_FLOATS = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class CudaSessions:
    """Validated session inputs on the device."""

    scores: Any  # as given (for the output shape and dtype)
    flat: Any  # (N,) contiguous scores
    labels: Any  # (N,) float64
    lens: np.ndarray  # (S,) int64, host
    lens_dev: Any  # (S,) int64, device
    start: Any  # (N,) int64: first item of each item's session
    end: Any  # (N,) int64: one past its last item
    session: Any  # (N,) int64: its session index
    max_len: int


def _tensor_dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def prepare_sessions_cuda(scores: Any, labels: Any, lengths: Any) -> CudaSessions:
    """The checks of ``ops.sessions.prepare_sessions`` on tensors, so no kernel reads past an input."""
    import torch

    if _tensor_dtype_name(scores) not in _FLOATS:
        msg = f"scores must be a float16, bfloat16, float32 or float64 tensor; got dtype={scores.dtype}"
        raise TypeError(msg)
    if scores.dim() == 0 or any(d != 1 for d in scores.shape[1:]):
        msg = f"scores must have shape (N,) or (N, 1) (one score per item); got shape {tuple(scores.shape)}"
        raise ValueError(msg)
    n = scores.shape[0]
    if labels.dtype == torch.bool or labels.is_complex():
        msg = f"labels must be an integer or float tensor; got dtype={labels.dtype}"
        raise TypeError(msg)
    if labels.dim() not in (1, 2) or (labels.dim() == 2 and labels.shape[1] != 1) or labels.shape[0] != n:
        msg = f"labels must have shape ({n},) or ({n}, 1), one per score; got shape {tuple(labels.shape)}"
        raise ValueError(msg)
    if labels.device != scores.device or (lengths is not None and lengths.device.type not in ("cpu",
                                                                                               scores.device.type)):
        msg = f"labels and lengths must be on the device of scores ({scores.device}) or, for lengths, the CPU"
        raise ValueError(msg)
    lens = check_lengths(None if lengths is None else lengths.detach().cpu().numpy(), n)
    device = scores.device
    lens_dev = torch.from_numpy(lens).to(device, non_blocking=True)
    session = torch.repeat_interleave(torch.arange(lens.size, device=device), lens_dev, output_size=n)
    offsets = torch.zeros(lens.size + 1, dtype=torch.int64, device=device)
    torch.cumsum(lens_dev, 0, out=offsets[1:])
    return CudaSessions(scores, scores.reshape(n).contiguous(), labels.reshape(n).to(torch.float64).contiguous(),
                        lens, lens_dev, offsets[session], offsets[session + 1], session,
                        int(lens.max(initial=0)))


def session_sums(values: Any, sessions: CudaSessions) -> Any:
    """Per-session sums (float64) of per-item values; 0 for an empty session."""
    import torch

    if values.numel() == 0:
        return torch.zeros(sessions.lens.size, dtype=torch.float64, device=values.device)
    return torch.segment_reduce(values.to(torch.float64), "sum", lengths=sessions.lens_dev, unsafe=True)


def raise_if_bad_labels(bad: Any) -> None:
    """The one host synchronisation: the kernels counted non-finite labels."""
    count = int(bad.item())
    if count:
        msg = f"labels must be finite; got {count} NaN or infinite label(s)"
        raise ValueError(msg)


def _blocks(max_len: int) -> tuple[int, int]:
    """(rows, columns) of a tile: small sessions get small tiles, so fewer masked pairs are computed."""
    if max_len <= 16:
        return 16, 32
    if max_len <= 64:
        return 32, 64
    return 64, 64


if HAS_TRITON:

    @triton.jit
    def _log1p(q):
        # Kahan's log1p from log: u = 1 + q rounds, and log(u) * q / (u - 1) cancels that rounding
        u = 1.0 + q
        return tl.where(u == 1.0, q, tl.log(u) * (q / tl.where(u == 1.0, 1.0, u - 1.0)))

    @triton.jit
    def _pair_rows_kernel(x_ptr, lab_ptr, start_ptr, end_ptr, gain_ptr, disc_ptr, val_ptr, cnt_ptr, bad_ptr,
                          n, eps, margin_bits, LOSS: tl.constexpr, FORWARD: tl.constexpr,
                          WEIGHTED: tl.constexpr, IS_F64: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                          BLOCK_COLS: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n
        r_start = tl.load(start_ptr + rows, mask=row_ok, other=0)
        r_end = tl.load(end_ptr + rows, mask=row_ok, other=0)
        xi = tl.load(x_ptr + rows, mask=row_ok, other=0.0)
        xi = xi.to(tl.float64) if IS_F64 else xi.to(tl.float32)
        li = tl.load(lab_ptr + rows, mask=row_ok, other=0.0)
        bad = row_ok & ((li - li) != 0.0)  # NaN and +-inf: x - x is NaN
        tl.atomic_add(bad_ptr, tl.sum(bad.to(tl.int32), axis=0))
        if WEIGHTED:
            gi = tl.load(gain_ptr + rows, mask=row_ok, other=0.0)
            di = tl.load(disc_ptr + rows, mask=row_ok, other=0.0)
        margin = margin_bits.to(tl.int64).to(tl.float64, bitcast=True)
        c_lo = tl.min(tl.where(row_ok, r_start, n), axis=0)
        if FORWARD:  # noqa: SIM108 - Triton compiles a constexpr if, not every ternary
            c_hi = tl.max(tl.where(row_ok, rows, 0), axis=0)  # pairs (i, j < i)
        else:
            c_hi = tl.max(tl.where(row_ok, r_end, 0), axis=0)
        acc = tl.zeros([BLOCK_ROWS], dtype=tl.float64 if IS_F64 else tl.float32)
        cnt = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
        for c0 in range(c_lo, c_hi, BLOCK_COLS):
            cols = c0 + tl.arange(0, BLOCK_COLS)
            col_ok = cols < c_hi
            c_start = tl.load(start_ptr + cols, mask=col_ok, other=-1)
            xj = tl.load(x_ptr + cols, mask=col_ok, other=0.0)
            xj = xj.to(tl.float64) if IS_F64 else xj.to(tl.float32)
            lj = tl.load(lab_ptr + cols, mask=col_ok, other=0.0)
            dl = li[:, None] - lj[None, :]
            counted = ((r_start[:, None] == c_start[None, :]) & row_ok[:, None] & col_ok[None, :]
                       & (tl.abs(dl) >= eps))
            if FORWARD:
                counted = counted & (cols[None, :] < rows[:, None])
            z = tl.where(dl > 0, xj[None, :] - xi[:, None], xi[:, None] - xj[None, :])  # x_lo - x_hi
            if LOSS == 0:
                if FORWARD:
                    val = tl.maximum(z, 0.0) + _log1p(tl.exp(-tl.abs(z)))
                else:
                    ez = tl.exp(-tl.abs(z))
                    sig = tl.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))  # sigma(x_lo - x_hi)
                    val = tl.where(dl > 0, -sig, sig)
            else:
                h = margin + z.to(tl.float64)  # margin - (x_hi - x_lo), decided in float64 as on the CPU
                if FORWARD:  # noqa: SIM108
                    val = tl.where(h < 0, 0.0, h)  # NaN stays NaN
                else:
                    val = tl.where(h < 0, 0.0, tl.where(dl > 0, -1.0, 1.0))  # the kink and NaN pass
            if WEIGHTED:
                gj = tl.load(gain_ptr + cols, mask=col_ok, other=0.0)
                dj = tl.load(disc_ptr + cols, mask=col_ok, other=0.0)
                val = val * (tl.abs(gi[:, None] - gj[None, :]) * tl.abs(di[:, None] - dj[None, :]))
            acc += tl.sum(tl.where(counted, val, 0.0), axis=1).to(acc.dtype)
            cnt += tl.sum(counted.to(tl.int32), axis=1)
        tl.store(val_ptr + rows, acc.to(tl.float64), mask=row_ok)
        tl.store(cnt_ptr + rows, cnt, mask=row_ok)


def pair_rows(sessions: CudaSessions, *, loss: int, forward: bool, weights: tuple[Any, Any] | None = None,
              margin: float = 0.0, scores: Any = None) -> tuple[Any, Any, Any]:
    """Per-item row sums (float64) and partner counts (int32), and the non-finite-label count (device).

    ``forward``: the loss over pairs j < i (each unordered pair once); else the derivative of the pair sum
    with respect to each item over all its partners (each pair counted from both ends). ``scores``
    replaces ``sessions.flat`` (LambdaRank scales them by sigma).
    """
    import torch

    x = sessions.flat if scores is None else scores
    n = x.numel()
    device = x.device
    values = torch.empty(n, dtype=torch.float64, device=device)
    counts = torch.empty(n, dtype=torch.int32, device=device)
    bad = torch.zeros(1, dtype=torch.int32, device=device)
    if n:
        rows, cols = _blocks(sessions.max_len)
        gain, disc = weights if weights is not None else (sessions.labels, sessions.labels)
        _pair_rows_kernel[(triton.cdiv(n, rows),)](
            x, sessions.labels, sessions.start, sessions.end, gain, disc, values, counts, bad, n, FLT_EPSILON,
            float64_bits(margin), LOSS=loss, FORWARD=forward, WEIGHTED=weights is not None,
            IS_F64=x.dtype == torch.float64 or loss == HINGE, BLOCK_ROWS=rows, BLOCK_COLS=cols)
    return values, counts, bad


def session_mean(sessions: CudaSessions, values: Any, counts: Any, *, pairs_counted_twice: bool) -> tuple[Any, Any]:
    """(per-session sum / pairs or 0, pairs per session), float64."""
    import torch

    total = session_sums(values, sessions)
    pairs = session_sums(counts, sessions)
    if pairs_counted_twice:
        pairs = pairs / 2
    return torch.where(pairs > 0, total / pairs.clamp_min(1), torch.zeros_like(total)), pairs


def scale_rows(sessions: CudaSessions, values: Any, pairs: Any, loss_grad: Any, factor: float = 1.0) -> Any:
    """values * factor * loss_grad[s] / pairs[s] per item, in the scores' shape and dtype."""
    import torch

    g = loss_grad.to(torch.float64) * factor
    scale = torch.where(pairs > 0, g / pairs.clamp_min(1), torch.zeros_like(g))
    return (values * scale[sessions.session]).reshape(sessions.scores.shape).to(sessions.scores.dtype)


def check_loss_grad(loss_grad: Any, sessions: CudaSessions) -> None:
    if _tensor_dtype_name(loss_grad) not in _FLOATS:
        msg = f"loss_grad must be a float tensor; got dtype={loss_grad.dtype}"
        raise TypeError(msg)
    if tuple(loss_grad.shape) != (sessions.lens.size,):
        msg = (f"loss_grad must have one entry per session, shape ({sessions.lens.size},); "
               f"got shape {tuple(loss_grad.shape)}")
        raise ValueError(msg)
