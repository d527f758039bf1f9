"""Prototype search for session-aware scorers on the ``pairloss cv`` folds, by mean *vali* NDCG@10 only.

Issue 12's third round. A compact re-implementation of ``pairloss.ltr.train``'s loop (Adam, batches of
whole sessions, pairwise logistic loss, early stopping on vali NDCG@10 with exp2 gain and all-equal-label
sessions excluded, patience 8, at most 40 epochs) on *padded* batches, so that a scorer can see the whole
session. With ``--arch mlp`` and no other option it is the library's default recipe (a control: 0.5862 over
8 seeds against ``quality_search.py``'s 0.5861).

* ``--arch mlp``: the default MLP (per item); ``--activation``, ``--hidden``, ``--dropout``, ``--noise``;
* ``--arch ctx``: the MLP on the item's preprocessed inputs plus per-session context inputs computed from the
  session itself: ``--ctx zscore`` (deviation from the session mean over the session standard deviation),
  ``rank`` (rank percentile in the session), ``mean`` (deviation from the session mean), or a ``+`` of them;
* ``--arch attn``: DASALC (Qin et al., ICLR 2021): an MLP item encoder (``--width``), one multi-head
  self-attention block over the session's items (``--heads``, padding masked) combined by ``--cross``
  (``residual``: layer norm of the sum; ``latent``: DASALC's latent cross ``h * (1 + norm(attn))``;
  ``concat``), then an MLP head per item;
* ``--arch mlp+attn``: the default MLP's score plus an ``attn`` correction whose last layer starts at zero;
* training options: ``--lr``, ``--wd`` (AdamW), ``--sched cosine|plateau``, ``--ema`` (validate an
  exponential moving average of the weights), ``--pair-weight gain|label`` (pairs weighted by
  ``2**l_i - 2**l_j`` or ``l_i - l_j``), ``--batch``, ``--patience``, ``--train-frac`` (a learning-curve
  point: only the first fraction of the training sessions).

Features are preprocessed by the library's scorer (log1p, fill max, standardiser, missing indicators),
fitted on the training split (``--encoding library``, the default). Issue 12's fourth round adds two input
encodings (Gorishniy et al., NeurIPS 2022), both fitted on the training split only:

* ``--encoding quantile``: each feature's present (non-NaN) raw training values define an empirical-quantile
  map to a standard normal (sklearn's ``QuantileTransformer``, 1000 quantiles, no subsampling); missing values
  stay missing and then go through the library's preprocessing with transform ``"none"`` (fill max,
  standardiser, missing indicators);
* ``--encoding ple``: piecewise-linear encoding of the library-preprocessed value (log1p, fill max,
  standardised) over ``--bins`` quantile bins of the feature's present training values (unique edges, so a
  feature with few distinct values gets fewer bins): bin ``t`` is 0 below it, 1 above it, linear inside
  (clipped to [0, 1] at both ends, so a missing value, filled beyond the maximum, encodes as all ones and is
  told apart by its indicator), concatenated with the missing indicators; ``--ple-dim d`` (> 0) adds a
  per-feature linear layer ``bins -> d`` + ReLU before the MLP.

The test split is loaded by ``load_fold_splits`` but never scored.
``--save-scores`` keeps each fold's and seed's best vali scores for ``quality_ensemble.py``.

Issue 12's fifth round: ``--save-curves FILE.npz`` trains every fold and seed for the full ``--epochs`` (no
early stop) and keeps every epoch's vali scores (float32, shape ``(epochs, n_vali_items)``, key
``"<fold>/<seed>"``) for ``quality_stopping.py``. The reported best vali value and epoch are still the
patience rule's (training after the stop does not change the epochs before it, so they equal a run without
the option); ``vali_full_argmax`` / ``full_argmax_epochs`` add the argmax over all epochs. One thread,
one process per call::

    python benchmarks/quality_search_ctx.py ../shared/data/letor_mq2007_agg --arch attn --cross latent --seeds 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import numpy as np
import torch
from torch import nn

import pairloss.nn.functional as PF
from pairloss.ltr.config import TrainConfig
from pairloss.ltr.cv import find_folds, load_fold_splits
from pairloss.ltr.data import RankingDataset
from pairloss.ltr.metrics import ndcg_at
from pairloss.ltr.models import make_model


class PLE(nn.Module):
    """Piecewise-linear encoding of the first ``F`` inputs; the remaining inputs (indicators) pass through.

    ``edges[j]``: the increasing bin edges of feature ``j`` (fewer than two: no bins). With ``dim > 0`` each
    feature's bins go through its own linear layer ``bins -> dim`` and a ReLU.
    """

    def __init__(self, edges: list[np.ndarray], dim: int, n_rest: int) -> None:
        super().__init__()
        f, b = len(edges), max(1, *(len(e) - 1 for e in edges))
        lo, width = np.zeros((f, b), np.float32), np.full((f, b), np.inf, np.float32)
        for j, e in enumerate(edges):
            k = max(len(e) - 1, 0)
            lo[j, :k], width[j, :k] = e[:-1], np.diff(e)
        self.register_buffer("lo", torch.from_numpy(lo))
        self.register_buffer("width", torch.from_numpy(width))  # inf for a padded bin: it encodes as 0
        self.register_buffer("keep", torch.from_numpy(np.flatnonzero(np.isfinite(width).ravel())))
        self.dim = dim
        if dim:
            bound = 1 / math.sqrt(b)
            self.w = nn.Parameter(torch.empty(f, b, dim).uniform_(-bound, bound))
            self.b = nn.Parameter(torch.empty(f, dim).uniform_(-bound, bound))
        self.out_width = (f * dim if dim else len(self.keep)) + n_rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.lo.shape[0]
        z = ((x[..., :f].unsqueeze(-1) - self.lo) / self.width).clamp(0, 1)  # (..., F, bins)
        if self.dim:
            h = torch.relu(torch.einsum("...fb,fbd->...fd", z, self.w) + self.b).flatten(-2)
        else:
            h = z.flatten(-2)[..., self.keep]
        return torch.cat([h, x[..., f:]], -1)


def ple_edges(x: np.ndarray, present: np.ndarray, bins: int) -> list[np.ndarray]:
    """Per feature: the unique ``bins``-quantile edges of its present (training) values of ``x``."""
    out = []
    for j in range(present.shape[1]):
        v = x[present[:, j], j]
        q = np.quantile(v, np.linspace(0, 1, bins + 1)).astype(np.float32) if len(v) else np.zeros(0, np.float32)
        out.append(np.unique(q))
    return out


def quantile_normal(train: np.ndarray, vali: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw features through a per-feature quantile map to N(0, 1) fitted on ``train``'s present values; NaN kept."""
    from sklearn.preprocessing import QuantileTransformer

    cols = np.flatnonzero((~np.isnan(train)).sum(0) >= 2)  # features never (or once) present stay as they are
    qt = QuantileTransformer(n_quantiles=1000, output_distribution="normal", subsample=None, random_state=0)
    qt.fit(train[:, cols])
    out = []
    for x in (train, vali):
        y = x.copy()
        y[:, cols] = qt.transform(x[:, cols])
        out.append(y)
    return out[0], out[1]


def padded(x: np.ndarray, data: RankingDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(S, L, D)`` inputs, ``(S, L)`` labels (-1 padding), ``(S, L)`` bool mask."""
    off, n = data.session_offsets, data.lengths
    s, length = data.n_sessions, int(n.max())
    out = np.zeros((s, length, x.shape[1]), np.float32)
    lab = np.full((s, length), -1.0, np.float32)
    mask = np.zeros((s, length), bool)
    for i in range(s):
        out[i, : n[i]] = x[off[i] : off[i + 1]]
        lab[i, : n[i]] = data.labels[off[i] : off[i + 1]]
        mask[i, : n[i]] = True
    return torch.from_numpy(out), torch.from_numpy(lab), torch.from_numpy(mask)


def session_context(x: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-session context inputs of padded ``x`` (see the module docstring)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    n = m.sum(1, keepdim=True).clamp_min(1)
    parts = [x]
    if "zscore" in kind:
        mean = (x * m).sum(1, keepdim=True) / n
        var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / n
        parts.append((x - mean) / torch.sqrt(var + 1e-2) * m)
    if "rank" in kind:
        # fraction of the session's items with a smaller value (+ half the ties): in [0, 1)
        less = (x.unsqueeze(2) > x.unsqueeze(1)).to(x.dtype) + 0.5 * (x.unsqueeze(2) == x.unsqueeze(1)).to(x.dtype)
        less = (less * m.unsqueeze(1)).sum(2) - 0.5
        parts.append(less / n * m)
    if "mean" in kind:
        mean = (x * m).sum(1, keepdim=True) / n
        parts.append((x - mean) * m)
    return torch.cat(parts, -1)


ACT: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
ACTIVATION = "relu"


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), ACT[ACTIVATION]()] + ([nn.Dropout(dropout)] if dropout else [])
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class Net(nn.Module):
    def __init__(self, d: int, arch: str, ctx: str, hidden: list[int], heads: int, width: int, dropout: float,
                 cross: str, encoder: PLE | None = None) -> None:
        super().__init__()
        self.arch, self.ctx, self.cross = arch, ctx, cross
        self.encoder = encoder  # a fixed (or per-feature learned) input encoding in front of everything
        if encoder is not None:
            d = encoder.out_width
        if arch == "mlp":
            self.net = mlp([d, *hidden, 1], dropout)
        elif arch == "ctx":
            k = 1 + ("zscore" in ctx) + ("rank" in ctx) + ("mean" in ctx)
            self.net = mlp([d * k, *hidden, 1], dropout)
        else:
            if arch == "mlp+attn":  # the default MLP plus an attention correction that starts at zero
                self.base = mlp([d, *hidden, 1], dropout)
            self.enc = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True, dropout=dropout)
            self.norm = nn.LayerNorm(width)
            self.head = mlp([width * (2 if cross == "concat" else 1), *hidden, 1], dropout)
            if arch == "mlp+attn":
                last = self.head[-1]
                assert isinstance(last, nn.Linear)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder(x)
        if self.arch == "mlp":
            return self.net(x).squeeze(-1)
        if self.arch == "ctx":
            return self.net(session_context(x, mask, self.ctx)).squeeze(-1)
        h = self.enc(x)
        a, _ = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)
        if self.cross == "residual":
            z = self.norm(h + a)
        elif self.cross == "latent":  # DASALC's latent cross
            z = h * (1 + self.norm(a))
        else:
            z = torch.cat([h, self.norm(a)], -1)
        out = self.head(z).squeeze(-1)
        return out + self.base(x).squeeze(-1) if self.arch == "mlp+attn" else out


def weighted_pairwise(s: torch.Tensor, lab: torch.Tensor, m: torch.Tensor, kind: str) -> torch.Tensor:
    """Pairwise logistic loss per session with pair weights, mean over sessions with a pair.

    ``kind``: ``"gain"`` weighs a pair by ``2**l_i - 2**l_j``, ``"label"`` by ``l_i - l_j``.
    """
    li, lj = lab.unsqueeze(2), lab.unsqueeze(1)
    valid = (li > lj) & m.unsqueeze(2) & m.unsqueeze(1)
    w = (torch.pow(2.0, li) - torch.pow(2.0, lj)) if kind == "gain" else (li - lj)
    w = torch.where(valid, w, torch.zeros_like(w))
    pair = nn.functional.softplus(-(s.unsqueeze(2) - s.unsqueeze(1)))
    tot = w.sum((1, 2))
    per = (w * pair).sum((1, 2)) / tot.clamp_min(1e-12)
    return per[tot > 0].mean()


def scores_of(net: Net, x: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(x[i : i + 256], mask[i : i + 256]) for i in range(0, x.shape[0], 256)])
    net.train()
    return out.double()[mask].numpy()


def run(args: argparse.Namespace, spec_data: tuple[RankingDataset, RankingDataset],
        seed: int) -> tuple[float, int, np.ndarray, np.ndarray | None]:
    """Trains one fold/seed: the patience rule's best vali NDCG@10, its epoch and scores, and (with
    ``--save-curves``) every epoch's vali scores as an ``(epochs, n_vali_items)`` float32 array, else None."""
    train_data, vali = spec_data
    cfg = TrainConfig()
    torch.manual_seed(seed)
    raw_t, raw_v, kwargs = train_data.features, vali.features, cfg.model_kwargs()
    if args.encoding == "quantile":  # quantile map to N(0, 1), then the library's fill max + indicators
        raw_t, raw_v = quantile_normal(raw_t, raw_v)
        kwargs = {**kwargs, "transform": "none"}
    pre = make_model("mlp", train_data.n_features, **kwargs)
    pre.fit_preprocessing(raw_t, standardize=True)
    pre.eval()
    with torch.no_grad():
        xt = pre.preprocess(torch.from_numpy(raw_t).double()).float().numpy()
        xv = pre.preprocess(torch.from_numpy(raw_v).double()).float().numpy()
    tx, tl, tm = padded(xt, train_data)
    keep = torch.tensor([len(np.unique(r[r >= 0])) > 1 for r in tl.numpy()])
    tx, tl, tm = tx[keep], tl[keep], tm[keep]
    vx, _, vm = padded(xv, vali)
    torch.manual_seed(seed)
    encoder = None
    if args.encoding == "ple":  # bins of the preprocessed values of the present training entries
        f = train_data.n_features
        edges = ple_edges(xt[:, :f], ~np.isnan(train_data.features), args.bins)
        encoder = PLE(edges, args.ple_dim, tx.shape[-1] - f)
    net = Net(tx.shape[-1], args.arch, args.ctx, args.hidden, args.heads, args.width, args.dropout, args.cross,
              encoder)
    params = net.parameters()
    opt = (torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd) if args.wd
           else torch.optim.Adam(params, lr=args.lr))
    sched = None
    if args.sched == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    elif args.sched == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=3)
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema)) if args.ema else None
    rng = np.random.default_rng(seed)
    best, best_epoch, bad, best_scores = -math.inf, 0, 0, np.zeros(0)
    curve: list[np.ndarray] | None = [] if args.save_curves else None
    stopped = False  # with --save-curves training goes on past the patience stop, which then only freezes `best`
    bs = args.batch
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(tx.shape[0])
        for i in range(0, len(order), bs):
            idx = torch.from_numpy(order[i : i + bs])
            m = tm[idx]
            keep_cols = int(m.sum(1).max())
            x, lab, m = tx[idx, :keep_cols], tl[idx, :keep_cols], m[:, :keep_cols]
            if args.noise:
                x = x + args.noise * torch.randn_like(x)
            s = net(x, m)
            if args.pair_weight == "none":
                loss = PF.pairwise_logistic_loss(s[m], lab[m], m.sum(1), reduction="mean")
            else:
                loss = weighted_pairwise(s, lab, m, args.pair_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
        sc = scores_of(ema.module if ema is not None else net, vx, vm)
        v = float(ndcg_at(sc, vali.labels, vali.lengths, 10, gain="exp2", exclude_all_equal=True))
        if sched is not None:
            sched.step(v) if args.sched == "plateau" else sched.step()
        if curve is not None:
            curve.append(sc.astype(np.float32))  # exact: the net's scores are float32 widened to float64
            if stopped:
                continue
        if v > best:
            best, best_epoch, bad, best_scores = v, epoch, 0, sc
        else:
            bad += 1
            if bad >= args.patience:
                if curve is None:
                    break
                stopped = True
    return best, best_epoch, best_scores, None if curve is None else np.stack(curve)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--arch", choices=("mlp", "ctx", "attn", "mlp+attn"), default="mlp")
    p.add_argument("--ctx", default="zscore")
    p.add_argument("--cross", choices=("residual", "latent", "concat"), default="residual")
    p.add_argument("--hidden", type=json.loads, default=[64, 32])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--sched", choices=("none", "cosine", "plateau"), default="none")
    p.add_argument("--ema", type=float, default=0.0, help="evaluate an EMA of the weights with this decay")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--folds", default=None)
    p.add_argument("--tag", default="")
    p.add_argument("--train-frac", type=float, default=1.0, help="train on this leading fraction of the sessions")
    p.add_argument("--activation", choices=tuple(ACT), default="relu")
    p.add_argument("--pair-weight", choices=("none", "gain", "label"), default="none")
    p.add_argument("--encoding", choices=("library", "quantile", "ple"), default="library",
                   help="input encoding (see the module docstring); library: today's preprocessing")
    p.add_argument("--bins", type=int, default=16, help="PLE: quantile bins per feature (at most)")
    p.add_argument("--ple-dim", type=int, default=0, help="PLE: per-feature linear layer bins -> d + ReLU (0: none)")
    p.add_argument("--save-scores", default=None, help="an .npz for the best vali scores of each fold/seed")
    p.add_argument("--save-curves", default=None,
                   help="an .npz for every epoch's vali scores of each fold/seed; trains all --epochs (no early stop)")
    args = p.parse_args()
    torch.set_num_threads(1)
    global ACTIVATION
    ACTIVATION = args.activation
    specs = [s for s in find_folds(args.data) if args.folds is None or s.name in args.folds.split(",")]
    report: dict[str, dict[str, object]] = {}
    saved: dict[str, np.ndarray] = {}
    curves: dict[str, np.ndarray] = {}
    for spec in specs:
        t0 = time.perf_counter()
        train_data, vali, _ = load_fold_splits(spec)  # the test split is loaded by the helper but never used
        if args.train_frac < 1:  # the first sessions (partitions) only: a learning-curve point
            train_data = train_data.subset(np.arange(round(args.train_frac * train_data.n_sessions)))
        per_seed, epochs, ens = [], [], np.zeros(vali.n_items)
        full_best: list[float] = []
        full_epochs: list[int] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            v, e, sc, curve = run(args, (train_data, vali), seed)
            if curve is not None:
                full = [float(ndcg_at(c.astype(np.float64), vali.labels, vali.lengths, 10, gain="exp2",
                                      exclude_all_equal=True)) for c in curve]
                full_best.append(round(max(full), 4))
                full_epochs.append(int(np.argmax(full)) + 1)
                curves[f"{spec.name}/{seed}"] = curve
            per_seed.append(round(v, 4))
            epochs.append(e)
            ens += (sc - sc.mean()) / (sc.std() + 1e-12)
            saved[f"{spec.name}/{seed}"] = sc
        ev = float(ndcg_at(ens, vali.labels, vali.lengths, 10, gain="exp2", exclude_all_equal=True))
        report[spec.name] = {"vali_per_seed": per_seed, "best_epochs": epochs, "vali_ensemble": round(ev, 4),
                             "seconds": round(time.perf_counter() - t0, 1)}
        if args.save_curves:
            report[spec.name] |= {"vali_full_argmax": full_best, "full_argmax_epochs": full_epochs}
        print(spec.name, report[spec.name], flush=True)
    if args.save_scores:
        np.savez(args.save_scores, **saved)
    if args.save_curves:
        np.savez(args.save_curves, **curves)
    seed_means = [float(np.mean(r["vali_per_seed"])) for r in report.values()]  # type: ignore[arg-type]
    per_seed_5fold = np.mean([r["vali_per_seed"] for r in report.values()], axis=0).round(4).tolist()
    ensembles = [float(r["vali_ensemble"]) for r in report.values()]  # type: ignore[arg-type]
    print("RESULT", json.dumps({"tag": args.tag, "args": {k: v for k, v in vars(args).items() if k != "data"},
                                "mean_vali_per_seed": round(float(np.mean(seed_means)), 4),
                                "fold_mean_by_seed": per_seed_5fold,
                                "mean_vali_ensemble": round(float(np.mean(ensembles)), 4),
                                "folds": report}), flush=True)


if __name__ == "__main__":
    main()
