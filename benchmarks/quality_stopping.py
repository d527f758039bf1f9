"""Stopping and snapshot-averaging rules judged without bias, by cross-fitting within each fold's *vali* split.

Issue 12's fifth round. ``quality_search_ctx.py --save-curves FILE.npz`` keeps every epoch's vali scores of
each fold and seed. Choosing the stopping epoch on vali and scoring it on the same vali flatters the argmax
rule (it wins on the very data it was chosen on), so here each fold's scored vali sessions (all-equal-label
sessions are excluded by the metric anyway) are split at random into halves A and B (``--splits`` fixed
seeds, the same halves for every rule, seed and file); a rule's free choices (epoch, window, epoch count)
are made on A and the result is scored by NDCG@10 (exp2 gain, all-equal excluded, pessimistic ties) on B,
and vice versa. The test split is never loaded.

Rules (epochs 1-based; "curve" = the half's mean NDCG@10 per epoch):

* ``R0``: today's rule: the best epoch with patience 8 (stop scanning after 8 epochs without a strict
  improvement), at most 40 epochs; ``R0'``: the argmax over all epochs;
* ``R1 w``: the argmax of the curve smoothed by a centred moving average of ``w`` epochs (truncated at the ends);
* ``R2 top k``: the mean of the standardised scores (per epoch: ``(s - mean) / std`` over the fold's vali
  items) of the ``k`` best epochs; ``R2 R0+-2``: of the epochs within 2 of R0's; ``R2 R1w+-h``: within ``h``
  of R1's epoch (the snapshot version of R1);
* ``R3 m``: the argmax over epochs >= ``m``;
* ``R4``: one epoch count for all folds: the argmax of the folds' mean curve (per seed); ``R2 R4+-2``: the
  epochs within 2 of it, averaged;
* ``ens <rule>``: the mean over seeds of each seed's rule-chosen (standardised) scores.

For each rule the table gives the mean NDCG@10 on the scoring halves (over splits, both directions, seeds
and folds), the paired difference against R0 (same split, direction, seed, fold) and four standard errors
of it: ``se`` across the (split, seed) units as asked (optimistic: all splits reuse the same sessions and
training runs), ``se_seed`` across seeds (the training-run noise), ``se_nb``, the Nadeau-Bengio corrected
resampled-t standard error across splits, ``sd * sqrt(1/J + n_B/n_A)`` with ``n_B/n_A = 1``, which accounts
for the overlap of the splits, and ``se_fold`` across the five folds (each its own sessions and training
data, so it carries the session-sampling noise too; only 4 degrees of freedom). Then the mean chosen epoch per
fold (for averages: the mean of the averaged epochs). Ensemble rows compare with the mean over seeds of
single-seed R0 (units: splits only)::

    python benchmarks/quality_stopping.py /tmp/w5/curves_default.npz --data ../shared/data/letor_mq2007_agg
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np

from pairloss.ltr.cv import find_folds, load_fold_splits
from pairloss.ltr.data import RankingDataset
from pairloss.ltr.metrics import ndcg_at

Selection = tuple[int, ...]  # 0-based epochs whose standardised scores are averaged (one: a plain snapshot)
Selector = Callable[[np.ndarray], list[Selection]]  # (folds, epochs) curves -> one selection per fold


def session_ndcg(scores: np.ndarray, vali: RankingDataset) -> np.ndarray:
    """Per-session NDCG@10 (exp2 gain, all-equal-label sessions NaN) of ``scores`` on ``vali``."""
    out = ndcg_at(scores, vali.labels, vali.lengths, 10, gain="exp2", exclude_all_equal=True, per_query=True)
    return np.asarray(out, np.float64)


def standardise(curve: np.ndarray) -> np.ndarray:
    """Each epoch's scores (rows of ``curve``) as ``(s - mean) / std`` over the vali items, in float64."""
    c = curve.astype(np.float64)
    return (c - c.mean(1, keepdims=True)) / (c.std(1, keepdims=True) + 1e-12)


def patience_argmax(c: np.ndarray, patience: int = 8, max_epochs: int = 40) -> int:
    """0-based epoch that early stopping keeps on curve ``c``: the first strict maximum, scanning stopped after
    ``patience`` epochs without improvement, over at most ``max_epochs`` epochs (as ``quality_search_ctx.run``)."""
    best, best_e, bad = -np.inf, 0, 0
    for e, v in enumerate(c[:max_epochs]):
        if v > best:
            best, best_e, bad = v, e, 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best_e


def moving_average(c: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average of ``c`` over ``w`` (odd) epochs; at the ends over the epochs that exist."""
    k = np.ones(w)
    return np.convolve(c, k, "same") / np.convolve(np.ones_like(c), k, "same")


def window(e: int, h: int, n: int) -> Selection:
    """The epochs within ``h`` of ``e``, clipped to ``[0, n)``."""
    return tuple(range(max(0, e - h), min(n, e + h + 1)))


def per_fold(pick: Callable[[np.ndarray], Selection]) -> Selector:
    """A selector that applies a one-curve rule to each fold's curve separately."""
    return lambda cur: [pick(c) for c in cur]


def shared_epoch(cur: np.ndarray) -> list[Selection]:
    """R4: the argmax of the mean curve over folds, the same epoch for every fold."""
    e = int(np.argmax(cur.mean(0)))
    return [(e,)] * cur.shape[0]


def shared_window(cur: np.ndarray, h: int = 2) -> list[Selection]:
    """R4 +-h: the epochs within ``h`` of R4's shared epoch, averaged, for every fold."""
    e = int(np.argmax(cur.mean(0)))
    return [window(e, h, cur.shape[1])] * cur.shape[0]


def rules() -> dict[str, Selector]:
    """The rules, by name; ``R0`` first (the reference of every paired difference)."""
    out: dict[str, Selector] = {
        "R0 patience 8": per_fold(lambda c: (patience_argmax(c),)),
        "R0' argmax": per_fold(lambda c: (int(np.argmax(c)),)),
    }
    for w in (3, 5):
        out[f"R1 smooth w{w}"] = per_fold(lambda c, w=w: (int(np.argmax(moving_average(c, w))),))
    for k in (3, 5):
        out[f"R2 top {k} avg"] = per_fold(lambda c, k=k: tuple(sorted(np.argsort(-c, kind="stable")[:k].tolist())))
    out["R2 R0+-2 avg"] = per_fold(lambda c: window(patience_argmax(c), 2, len(c)))
    for w, h in ((3, 1), (5, 2)):
        out[f"R2 R1w{w}+-{h} avg"] = per_fold(
            lambda c, w=w, h=h: window(int(np.argmax(moving_average(c, w))), h, len(c)))
    for m in (3, 5):
        out[f"R3 epoch>={m}"] = per_fold(lambda c, m=m: (m - 1 + int(np.argmax(c[m - 1 :])),))
    out["R4 shared epoch"] = shared_epoch
    out["R2 R4+-2 avg"] = shared_window
    return out


def half_splits(kept: np.ndarray, n_sessions: int, n_splits: int, fold_index: int) -> np.ndarray:
    """``(n_splits, n_sessions)`` bool: half A of the scored sessions ``kept`` for each split (B: the rest of
    ``kept``); split ``j`` of fold ``i`` is drawn from ``default_rng([j, i])``, so it is fixed across runs."""
    out = np.zeros((n_splits, n_sessions), bool)
    for j in range(n_splits):
        perm = np.random.default_rng([j, fold_index]).permutation(kept)
        out[j, perm[: len(kept) // 2]] = True
    return out


class FoldCurves:
    """One fold's vali split with every seed's standardised per-epoch scores and per-session NDCG@10."""

    def __init__(self, vali: RankingDataset, curves: list[np.ndarray]) -> None:
        self.vali = vali
        self.z = [standardise(c) for c in curves]  # per seed: (epochs, items)
        # (seeds, epochs, sessions); float32 scores widened exactly, as the training script scored them
        self.p = np.stack([[session_ndcg(e.astype(np.float64), vali) for e in c] for c in curves])
        self.kept = np.flatnonzero(~np.isnan(self.p[0, 0]))
        assert all(np.array_equal(np.isnan(self.p[0, 0]), np.isnan(q)) for q in self.p.reshape(-1, self.p.shape[2]))
        self._cache: dict[tuple[Selection, ...], np.ndarray] = {}

    def averaged(self, sel: tuple[Selection, ...]) -> np.ndarray:
        """Per-session NDCG@10 of the mean over seeds (``sel[s]`` for seed ``s``, empty: seed left out) of the mean
        of each seed's selected standardised epochs (cached: many splits choose the same epochs)."""
        if sel not in self._cache:
            parts = [self.z[s][list(e)].mean(0) for s, e in enumerate(sel) if e]
            self._cache[sel] = session_ndcg(np.mean(parts, 0), self.vali)
        return self._cache[sel]


def check_subset_metric(fc: FoldCurves, half: np.ndarray) -> None:
    """The mean of per-session values over a half equals ``ndcg_at`` on that half's sessions alone."""
    idx = np.flatnonzero(half)
    off = fc.vali.session_offsets
    items = np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
    sub = fc.vali.subset(idx)
    direct = float(ndcg_at(fc.z[0][0][items], sub.labels, sub.lengths, 10, gain="exp2", exclude_all_equal=True))
    assert abs(direct - float(np.nanmean(fc.p[0, 0, idx]))) < 1e-12, direct


def evaluate(folds: list[FoldCurves], n_splits: int) -> dict[str, dict[str, np.ndarray]]:
    """Cross-fitted values: per rule ``"b"`` (scored-half NDCG@10) and ``"epoch"`` (mean chosen epoch, 1-based),
    shape ``(splits, 2 directions, seeds, folds)``; ensemble rules ``"ens ..."`` have no seed axis."""
    n_seeds = folds[0].p.shape[0]
    masks = [half_splits(fc.kept, fc.p.shape[2], n_splits, i) for i, fc in enumerate(folds)]
    check_subset_metric(folds[0], masks[0][0])
    # half curves (direction, fold, seed, split, epoch): direction 0 chooses on A, scores on B; 1 the reverse
    halves = []
    for fc, a in zip(folds, masks, strict=True):
        b = np.zeros_like(a)
        b[:, fc.kept] = ~a[:, fc.kept]
        p0 = np.nan_to_num(fc.p)
        ca = np.einsum("js,kes->kje", a.astype(np.float64), p0) / a.sum(1)[None, :, None]
        cb = np.einsum("js,kes->kje", b.astype(np.float64), p0) / b.sum(1)[None, :, None]
        halves.append((ca, cb, a, b))
    choose = np.stack([np.stack([h[0] for h in halves]), np.stack([h[1] for h in halves])])
    score = choose[::-1]
    half_masks = [[h[3] for h in halves], [h[2] for h in halves]]  # the scoring half per direction and fold
    sel = rules()
    n_folds = len(folds)
    out: dict[str, dict[str, np.ndarray]] = {}
    chosen: dict[str, list[list[list[list[Selection]]]]] = {}  # rule -> split -> direction -> seed -> folds
    for name, selector in sel.items():
        b = np.zeros((n_splits, 2, n_seeds, n_folds))
        ep = np.zeros_like(b)
        ch: list[list[list[list[Selection]]]] = []
        for j in range(n_splits):
            ch.append([])
            for d in range(2):
                ch[j].append([])
                for s in range(n_seeds):
                    picks = selector(choose[d, :, s, j])
                    ch[j][d].append(picks)
                    for f, e in enumerate(picks):
                        ep[j, d, s, f] = np.mean(e) + 1
                        if len(e) == 1:
                            b[j, d, s, f] = score[d, f, s, j, e[0]]
                        else:
                            one = tuple(e if t == s else () for t in range(n_seeds))
                            b[j, d, s, f] = folds[f].averaged(one)[half_masks[d][f][j]].mean()
        out[name] = {"b": b, "epoch": ep}
        chosen[name] = ch
    if n_seeds > 1:
        for name in sel:
            b = np.zeros((n_splits, 2, n_folds))
            ep = np.zeros_like(b)
            for j in range(n_splits):
                for d in range(2):
                    for f in range(n_folds):
                        key = tuple(chosen[name][j][d][s][f] for s in range(n_seeds))
                        b[j, d, f] = folds[f].averaged(key)[half_masks[d][f][j]].mean()
                        ep[j, d, f] = np.mean([np.mean(e) for e in key]) + 1
            out[f"ens {name}"] = {"b": b, "epoch": ep}
    # references, not rules: R0 chosen and scored on the same half (the biased yardstick of rounds 1-4)
    b = np.zeros((n_splits, 2, n_seeds, n_folds))
    for j in range(n_splits):
        for d in range(2):
            for s in range(n_seeds):
                for f in range(n_folds):
                    b[j, d, s, f] = choose[d, f, s, j, patience_argmax(choose[d, f, s, j])]
    out["(ref) R0 in-sample"] = {"b": b, "epoch": out["R0 patience 8"]["epoch"]}
    return out


def table(res: dict[str, dict[str, np.ndarray]], fold_names: Sequence[str]) -> str:
    """Markdown table: mean, paired difference against R0 with its standard errors, mean epoch per fold."""
    r0 = res["R0 patience 8"]["b"]
    r0_seedmean = r0.mean(2)
    head = ("| rule | mean NDCG@10 (B) | diff vs R0 | se (split x seed) | se_seed | se_nb | se_fold | diff/se_seed | "
            "diff/se_nb | diff/se_fold | " + " | ".join(f"epoch {f}" for f in fold_names) + " |")
    lines = [head, "|" + "---|" * (10 + len(fold_names))]
    for name, v in res.items():
        b = v["b"]
        if b.ndim == 4:
            dd = b - r0
            units = dd.mean((1, 3)).ravel()  # (split, seed)
            per_seed = dd.mean((0, 1, 3))
            se_seed = per_seed.std(ddof=1) / np.sqrt(len(per_seed)) if len(per_seed) > 1 else np.nan
            per_split = dd.mean((1, 2, 3))
            ep = v["epoch"].mean((0, 1, 2))
        else:
            dd = b - r0_seedmean
            units = dd.mean((1, 2))
            se_seed = np.nan
            per_split = units
            ep = v["epoch"].mean((0, 1))
        per_fold_d = dd.reshape(-1, dd.shape[-1]).mean(0)
        diff = float(dd.mean())
        se = units.std(ddof=1) / np.sqrt(len(units))
        j = len(per_split)
        se_nb = per_split.std(ddof=1) * np.sqrt(1 / j + 1)
        se_fold = per_fold_d.std(ddof=1) / np.sqrt(len(per_fold_d))
        ratios = [diff / x if x > 0 else np.nan for x in (se_seed, se_nb, se_fold)]
        lines.append(f"| {name} | {b.mean():.5f} | {diff:+.5f} | {se:.5f} | {se_seed:.5f} | {se_nb:.5f} | "
                     f"{se_fold:.5f} | " + " | ".join(f"{r:+.1f}" for r in ratios) + " | "
                     + " | ".join(f"{e:.1f}" for e in ep) + " |")
    return "\n".join(lines)


def ensemble_gain_table(res: dict[str, dict[str, np.ndarray]]) -> str:
    """Markdown table: per rule, its single-seed and seed-ensemble gain over R0 (single resp. ensemble), to see
    whether the snapshot-averaging and seed-averaging gains add up (differences of paired differences)."""
    r0, r0e = res["R0 patience 8"]["b"], res["ens R0 patience 8"]["b"]
    lines = ["| rule | single seed: diff vs R0 | ensemble: diff vs ens R0 | se (splits) | se_nb | se_fold | "
             "ensemble vs single R0 | sum of the two gains |", "|---|---|---|---|---|---|---|---|"]
    for name in res:
        if name.startswith(("ens ", "(ref)")):
            continue
        single = float((res[name]["b"] - r0).mean())
        de = res[f"ens {name}"]["b"] - r0e
        units = de.mean((1, 2))
        se_nb = units.std(ddof=1) * np.sqrt(1 / len(units) + 1)
        per_fold_d = de.mean((0, 1))
        se_fold = per_fold_d.std(ddof=1) / np.sqrt(len(per_fold_d))
        seed_gain = float((r0e - r0.mean(2)).mean())
        total = float((res[f"ens {name}"]["b"] - r0.mean(2)).mean())
        lines.append(f"| {name} | {single:+.5f} | {float(de.mean()):+.5f} | "
                     f"{units.std(ddof=1) / np.sqrt(len(units)):.5f} | {se_nb:.5f} | {se_fold:.5f} | {total:+.5f} | "
                     f"{single + seed_gain:+.5f} |")
    return "\n".join(lines)


def main() -> None:
    """Loads the vali splits and each curves file, and prints its tables."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("curves", nargs="+", help=".npz files written by quality_search_ctx.py --save-curves")
    p.add_argument("--data", required=True, help="the cross-validation directory the curves were trained on")
    p.add_argument("--splits", type=int, default=50, help="random A/B halvings of each fold's vali sessions")
    args = p.parse_args()
    specs = find_folds(args.data)
    valis = {s.name: load_fold_splits(s)[1] for s in specs}  # only the vali split: test is never scored
    for path in args.curves:
        t0 = time.perf_counter()
        npz = np.load(path)
        keys = sorted(npz.files)
        fold_names = sorted({k.split("/")[0] for k in keys})
        seeds = sorted({int(k.split("/")[1]) for k in keys})
        folds = []
        for f in fold_names:
            curves = [npz[f"{f}/{s}"] for s in seeds]
            assert all(c.shape == (curves[0].shape[0], valis[f].n_items) for c in curves), f
            folds.append(FoldCurves(valis[f], curves))
        n_epochs = folds[0].p.shape[1]
        res = evaluate(folds, args.splits)
        full = np.array([[np.nanmean(fc.p[s], 1) for s in range(len(seeds))] for fc in folds])  # (fold, seed, ep)
        r0_full = np.mean([[c[patience_argmax(c)] for c in fs] for fs in full])
        argmax_full = full.max(2).mean()
        print(f"## {path}: folds {' '.join(fold_names)}, seeds {seeds}, {n_epochs} epochs, {args.splits} splits\n")
        print(f"Whole-vali references (chosen and scored on all of vali, biased): R0 {r0_full:.5f}, "
              f"argmax over all epochs {argmax_full:.5f}, mean curve at epoch 40 {full[:, :, -1].mean():.5f}.\n")
        print(table(res, fold_names))
        if len(seeds) > 1:
            print("\nDo the gains add up? (single seed vs ensemble of all seeds, each rule on each seed)\n")
            print(ensemble_gain_table(res))
        print(f"\n({time.perf_counter() - t0:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
