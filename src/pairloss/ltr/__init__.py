"""Learning-to-rank toolkit: session data sets and loaders, ranking metrics, scorers, training.

Submodules:

* :mod:`pairloss.ltr.data`: :class:`RankingDataset`, SVMlight/LETOR and LightGBM loaders.
* :mod:`pairloss.ltr.metrics`: NDCG@k, MAP, MRR, pairwise accuracy, :func:`evaluate`.
* :mod:`pairloss.ltr.models`: torch scorers with a built-in feature standardiser.
* :mod:`pairloss.ltr.train`: the training loop (checkpointing, early stopping, resume).
* :mod:`pairloss.ltr.api`: what the ``pairloss train`` / ``evaluate`` / ``predict`` commands call.
* :mod:`pairloss.ltr.distributed`: data-parallel training under ``torchrun``.
"""

from ._toy_data import make_toy_dataset
from .api import evaluate_model, predict_file, run_training
from .data import RankingDataset, load, load_fold, load_lightgbm, load_svmlight
from .metrics import evaluate, mean_average_precision, mrr, ndcg_at, pairwise_accuracy, parse_metric
from .models import LinearScorer, MLPScorer, Scorer, Standardizer, make_model
from .train import TrainConfig, TrainResult, load_model, train

__all__ = [
    "LinearScorer",
    "MLPScorer",
    "RankingDataset",
    "Scorer",
    "Standardizer",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "evaluate_model",
    "load",
    "load_fold",
    "load_lightgbm",
    "load_model",
    "load_svmlight",
    "make_model",
    "make_toy_dataset",
    "mean_average_precision",
    "mrr",
    "ndcg_at",
    "pairwise_accuracy",
    "parse_metric",
    "predict_file",
    "run_training",
    "train",
]
