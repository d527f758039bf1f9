"""Recipe search on the ``pairloss cv`` folds, by mean *vali* NDCG@10 only (issue 12's second round).

For each fold (``pairloss.ltr.cv.find_folds``) it trains ``pairloss.ltr.train`` with the defaults changed
by ``--set`` for each of ``--seeds`` seeds, early stopping on vali, and reports each seed's best vali
NDCG@10 (exp2 gain, all-equal-label queries excluded, as ``pairloss cv``) and that of the seed ensemble
(the mean of the members' scores). Test splits are never read: settings are compared by vali alone.

``--query-norm`` rewrites each split's features per query before training (prototype of a session-aware
preprocessing step; ``NaN`` stays missing, the model's transform, fill, standardiser and indicators follow):

* ``minmax``: ``(x - min) / (max - min)`` over the query's present values (0 where they are all equal);
* ``divmax``: ``x / max`` over the query's present values;
* ``rank``: the value's rank among the query's present values divided by their count;
* ``raw+minmax``, ``raw+rank``: the raw features followed by the normalised ones (2F inputs);
* ``raw+count``: the raw features followed by ``log1p`` of the query's count of present values per feature.

``--loss-fn listnet`` (softmax cross-entropy against ``2**label - 1``) or ``pairwise+listnet`` replaces the
configured loss. From the repository root, one process per call, one thread::

    python benchmarks/quality_search.py ../shared/data/letor_mq2007_agg --query-norm minmax
    python benchmarks/quality_search.py ../shared/data/letor_mq2007_agg --seeds 3 --set dropout=0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

import pairloss.nn.functional as PF
from pairloss.ltr.config import TrainConfig
from pairloss.ltr.cv import find_folds, load_fold_splits
from pairloss.ltr.data import RankingDataset
from pairloss.ltr.metrics import ndcg_at
from pairloss.ltr.models import score_items
from pairloss.ltr.training import train

QUERY_NORMS = ("none", "minmax", "divmax", "rank", "raw+minmax", "raw+rank", "raw+count")


def _normalise_query(q: np.ndarray, mode: str) -> np.ndarray:
    missing = np.isnan(q)
    present = np.where(missing, np.inf, q)
    lo = present.min(axis=0)
    hi = np.where(missing, -np.inf, q).max(axis=0)
    count = (~missing).sum(axis=0)
    base = mode.removeprefix("raw+")
    if base == "count":
        return np.concatenate([q, np.broadcast_to(np.log1p(count), q.shape)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if base == "minmax":
            span = hi - lo
            z = np.where(span > 0, (q - lo) / np.where(span > 0, span, 1.0), 0.0)
        elif base == "divmax":
            z = q / np.where(hi > 0, hi, 1.0)
        else:  # rank
            z = (np.argsort(np.argsort(present, axis=0, kind="stable"), axis=0) + 1) / np.maximum(count, 1)
    z = np.where(missing, np.nan, z)
    return np.concatenate([q, z], axis=1) if mode.startswith("raw+") else z


def query_normalised(data: RankingDataset, mode: str) -> RankingDataset:
    """``data`` with every query's features rewritten by ``mode`` (one of :data:`QUERY_NORMS`)."""
    if mode not in QUERY_NORMS:
        raise ValueError(f"mode must be one of {', '.join(QUERY_NORMS)}; got {mode!r}")
    if mode == "none":
        return data
    x = data.features.astype(np.float64)
    off = data.session_offsets
    parts = [_normalise_query(x[off[s]:off[s + 1]], mode) for s in range(data.n_sessions)]
    return RankingDataset(np.concatenate(parts).astype(np.float32), data.labels, data.qids, data.lengths)


def listnet_loss(scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, reduction: str = "mean",
                 **_: object) -> torch.Tensor:
    """Mean over sessions of the cross-entropy between ``softmax(scores)`` and ``gain / sum(gain)``."""
    n = lengths.shape[0]
    ids = torch.repeat_interleave(torch.arange(n, device=scores.device), lengths)
    top = torch.full((n,), -torch.inf, dtype=scores.dtype).scatter_reduce(0, ids, scores.detach(), "amax")
    lse = torch.log(scores.new_zeros(n).index_add(0, ids, torch.exp(scores - top[ids]))) + top
    gain = torch.pow(2.0, labels.to(scores.dtype)) - 1
    target = gain / scores.new_zeros(n).index_add(0, ids, gain).clamp_min(1e-12)[ids]
    return -scores.new_zeros(n).index_add(0, ids, target * (scores - lse[ids])).mean()


def pairwise_plus_listnet(scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
                          reduction: str = "mean", **_: object) -> torch.Tensor:
    """The pairwise logistic loss plus :func:`listnet_loss`."""
    return PF.pairwise_logistic_loss(scores, labels, lengths, reduction="mean") + listnet_loss(scores, labels, lengths)


LOSS_FNS: dict[str, Callable[..., torch.Tensor] | None] = {
    "config": None, "listnet": listnet_loss, "pairwise+listnet": pairwise_plus_listnet}


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="cv data directory (Fold1..K or S1..SK.txt)")
    parser.add_argument("--query-norm", choices=QUERY_NORMS, default="none")
    parser.add_argument("--loss-fn", choices=tuple(LOSS_FNS), default="config")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per fold (ensembled too)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--folds", default=None, help="comma-separated fold names (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="a TrainConfig field, e.g. dropout=0.1 or hidden=[128,64]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = dict(item.split("=", 1) for item in args.set)
    config = TrainConfig(**{k: _value(v) for k, v in overrides.items()})
    specs = [s for s in find_folds(args.data) if args.folds is None or s.name in args.folds.split(",")]
    report: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            started = time.perf_counter()
            train_data, vali, _ = load_fold_splits(spec)
            train_data, vali = query_normalised(train_data, args.query_norm), query_normalised(vali, args.query_norm)
            per_seed, ensemble = [], np.zeros(vali.n_items)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                result = train(dataclasses.replace(config, seed=seed), train_data, vali, f"{tmp}/{spec.name}-{seed}",
                               progress=False, loss_fn=LOSS_FNS[args.loss_fn])
                per_seed.append(round(float(result.best_metric), 4))
                ensemble += score_items(result.model, vali.features)
            ens = float(ndcg_at(ensemble, vali.labels, vali.lengths, 10, gain=config.gain, exclude_all_equal=True))
            report[spec.name] = {"vali_per_seed": per_seed, "vali_ensemble": round(ens, 4),
                                 "seconds": round(time.perf_counter() - started, 1)}
            print(spec.name, report[spec.name], flush=True)
    seed_means = [float(np.mean(r["vali_per_seed"])) for r in report.values()]  # type: ignore[arg-type]
    ensembles = [float(r["vali_ensemble"]) for r in report.values()]  # type: ignore[arg-type]
    print(json.dumps({"query_norm": args.query_norm, "loss_fn": args.loss_fn, "set": overrides, "seeds": args.seeds,
                      "mean_vali_per_seed": round(float(np.mean(seed_means)), 4),
                      "mean_vali_ensemble": round(float(np.mean(ensembles)), 4), "folds": report}))


if __name__ == "__main__":
    main()
