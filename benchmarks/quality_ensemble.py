"""Mean vali NDCG@10 of rank-averaged ensembles of ``quality_search_ctx.py --save-scores`` runs.

Each argument is one ensemble: ``+``-joined ``.npz`` files, each optionally followed by ``:k`` (its first
``k`` seeds). Within every vali session each member's scores become rank percentiles (plus 1e-3 times the
member's standardised score, so that averaged ranks do not tie: the metric breaks ties pessimistically);
each file weighs equally, its seeds share its weight. Vali only: test scores are never saved::

    python benchmarks/quality_ensemble.py ../shared/data/letor_mq2007_agg runs/mlp.npz+runs/attn.npz:2
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import rankdata

from pairloss.ltr.cv import find_folds, load_fold_splits
from pairloss.ltr.data import RankingDataset
from pairloss.ltr.metrics import ndcg_at


def rank_within(scores: np.ndarray, data: RankingDataset) -> np.ndarray:
    """Each item's rank percentile in its session, in ``(0, 1]``."""
    out = np.empty_like(scores)
    off = data.session_offsets
    for i in range(data.n_sessions):
        out[off[i] : off[i + 1]] = rankdata(scores[off[i] : off[i + 1]]) / (off[i + 1] - off[i])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("ensembles", nargs="+")
    args = parser.parse_args()
    valis = {spec.name: load_fold_splits(spec)[1] for spec in find_folds(args.data)}
    for ensemble in args.ensembles:
        members = [m.rpartition(":") if m.rpartition(":")[2].isdigit() else (m, "", "") for m in ensemble.split("+")]
        per_fold = []
        for fold, vali in valis.items():
            total = np.zeros(vali.n_items)
            for path, _, k in members:
                saved = np.load(path)
                keys = [key for key in saved.files if key.startswith(fold + "/")][: int(k) if k else None]
                for key in keys:
                    s = saved[key]
                    total += (rank_within(s, vali) + 1e-3 * (s - s.mean()) / s.std()) / len(keys) / len(members)
            per_fold.append(float(ndcg_at(total, vali.labels, vali.lengths, 10, gain="exp2", exclude_all_equal=True)))
        print(ensemble, round(float(np.mean(per_fold)), 4), [round(v, 4) for v in per_fold])


if __name__ == "__main__":
    main()
