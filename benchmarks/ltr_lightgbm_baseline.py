"""LightGBM lambdarank on the LightGBM sample split, scored with pairloss's own NDCG (the README's baseline).

Needs ``pip install lightgbm`` (not a pairloss dependency). Run from the repository root:

    python benchmarks/ltr_lightgbm_baseline.py ../shared/data/lightgbm_rank

Measured (lightgbm 4.7.0, 2 cores): defaults 0.7650; 100 trees, lr 0.1, bagging 0.8, seeds 0-4:
0.7789 0.7634 0.7888 0.7754 0.7802 (mean 0.7773). NDCG@10, linear gain, all-equal queries excluded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pairloss.ltr.data import load
from pairloss.ltr.metrics import ndcg_at


def main(data_dir: str) -> None:
    import lightgbm as lgb

    root = Path(data_dir)
    train = load(str(root / "rank.train"))
    test = load(str(root / "rank.test"), n_features=train.n_features)

    def ndcg10(model: lgb.LGBMRanker) -> float:
        model.fit(train.features, train.labels, group=train.lengths)
        return float(ndcg_at(model.predict(test.features), test.labels, test.lengths, 10, gain="linear",
                             exclude_all_equal=True))

    print(f"lightgbm defaults: {ndcg10(lgb.LGBMRanker(objective='lambdarank', verbose=-1)):.4f}")
    bagged = [ndcg10(lgb.LGBMRanker(objective="lambdarank", n_estimators=100, learning_rate=0.1, subsample=0.8,
                                    subsample_freq=1, colsample_bytree=0.8, random_state=seed, verbose=-1))
              for seed in range(5)]
    print("lightgbm bagged, seeds 0-4:", " ".join(f"{v:.4f}" for v in bagged), f"(mean {np.mean(bagged):.4f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lightgbm_rank")
