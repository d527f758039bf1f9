"""LightGBM lambdarank on the folds ``pairloss cv`` uses, scored by the same metric code, beside pairloss's cv.json.

For every fold (``pairloss.ltr.cv.find_folds``: ``Fold1..FoldK`` or LETOR's rotation of ``S1..SK``) LightGBM
trains each setting of a small grid with early stopping on the fold's vali split, keeps the setting with the
best *vali* NDCG@10, and scores it on the fold's test split. NDCG@10 is pairloss's (``--gain``, queries whose
labels are all equal excluded, pessimistic ties), on data loaded by pairloss (``NULL`` / ``nan`` / absent
features are NaN, which LightGBM treats as missing). With ``--pairloss-cv runs/cv/cv.json`` the table gets
pairloss's per-fold test NDCG@10 beside LightGBM's.

LightGBM is not a pairloss dependency (``pip install "pairloss[bench]"``, or a separate venv whose
site-packages ``--lightgbm-site`` appends to ``sys.path``). From the repository root::

    pairloss cv ../shared/data/letor_mq2007_agg --out runs/cv-mq2007
    python benchmarks/quality_cv.py ../shared/data/letor_mq2007_agg --pairloss-cv runs/cv-mq2007/cv.json \\
        --lightgbm-site /work/lgb-venv/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pairloss.ltr.cv import find_folds, load_fold_splits
from pairloss.ltr.metrics import ndcg_at

#: The grid, chosen per fold on vali (early stopping on vali NDCG@10 picks the number of trees).
GRID = {"num_leaves": (15, 31, 63), "learning_rate": (0.05, 0.1), "min_child_samples": (20, 50)}


def _ndcg10(scores: np.ndarray, data: Any, gain: str) -> float:
    return float(ndcg_at(scores, data.labels, data.lengths, 10, gain=gain, exclude_all_equal=True))


def lightgbm_fold(spec: Any, gain: str, threads: int) -> dict[str, Any]:
    """Grid over :data:`GRID` with early stopping on vali; the setting with the best vali NDCG@10, on test."""
    import lightgbm as lgb

    train, vali, test = load_fold_splits(spec)
    label_gain = [2.0**i - 1 for i in range(32)] if gain == "exp2" else list(range(32))
    best: dict[str, Any] = {"valid": -math.inf}
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values, strict=True))
        model = lgb.LGBMRanker(objective="lambdarank", n_estimators=2000, label_gain=label_gain,
                               num_threads=threads, verbose=-1, random_state=0, **params)
        model.fit(train.features, train.labels, group=train.lengths, eval_set=[(vali.features, vali.labels)],
                  eval_group=[vali.lengths], eval_at=[10],
                  callbacks=[lgb.early_stopping(50, verbose=False)])
        valid = _ndcg10(model.predict(vali.features), vali, gain)
        if valid > best["valid"]:
            best = {"valid": valid, "test": _ndcg10(model.predict(test.features), test, gain), "params": params,
                    "trees": int(model.best_iteration_)}
    return best


def _mean_se(values: list[float]) -> str:
    x = np.asarray(values)
    return f"{x.mean():.4f} ± {x.std(ddof=1) / math.sqrt(x.size):.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="Directory with Fold1..FoldK or S1.txt..SK.txt.")
    parser.add_argument("--pairloss-cv", type=Path, help="cv.json of `pairloss cv` on the same directory.")
    parser.add_argument("--gain", choices=("exp2", "linear"), default="exp2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lightgbm-site", help="A site-packages directory that holds lightgbm (appended to sys.path).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    if args.lightgbm_site:
        sys.path.append(args.lightgbm_site)
    warnings.filterwarnings("ignore", message=".*eval_set.*deprecated")  # lightgbm 4.7; eval_X is newer
    started = time.perf_counter()
    specs = find_folds(args.data)
    lgb_folds = [lightgbm_fold(spec, args.gain, args.threads) for spec in specs]
    ours = None
    if args.pairloss_cv is not None:
        ours = {f["name"]: f for f in json.loads(args.pairloss_cv.read_text())["folds"]}
    print(f"NDCG@10 ({args.gain} gain, all-equal queries excluded) on {args.data}; "
          f"LightGBM {time.perf_counter() - started:.0f} s\n")
    print("| fold | pairloss cv (defaults) vali | test | LightGBM lambdarank, grid on vali | vali | test |")
    print("|---|---|---|---|---|---|")
    for spec, lgb_fold in zip(specs, lgb_folds, strict=True):
        mine = ours.get(spec.name) if ours else None
        setting = ", ".join(f"{k}={v}" for k, v in lgb_fold["params"].items()) + f", {lgb_fold['trees']} trees"
        print(f"| {spec.name} | {mine['valid']['ndcg@10']:.4f} | {mine['test']['ndcg@10']:.4f} |" if mine
              else f"| {spec.name} | - | - |", f"{setting} | {lgb_fold['valid']:.4f} | {lgb_fold['test']:.4f} |")
    mine_valid = [ours[s.name]["valid"]["ndcg@10"] for s in specs] if ours else None
    mine_test = [ours[s.name]["test"]["ndcg@10"] for s in specs] if ours else None
    print(f"| mean ± se | {_mean_se(mine_valid) if mine_valid else '-'} | {_mean_se(mine_test) if mine_test else '-'}"
          f" | | {_mean_se([f['valid'] for f in lgb_folds])} | {_mean_se([f['test'] for f in lgb_folds])} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"gain": args.gain, "grid": GRID, "lightgbm": lgb_folds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
