"""Learning-to-rank toolkit: session data, ranking metrics, scorers, and training on the pairwise losses.

Modules, each one concept (imports point down this list, never up):

* :mod:`~pairloss.ltr.metrics`: NDCG@k, MAP, MRR, pairwise accuracy, :func:`evaluate`.
* :mod:`~pairloss.ltr.config`: :class:`TrainConfig` and the one table of loss / optimizer / gain names.
* :mod:`~pairloss.ltr.batching`: batches of whole sessions, the same plan on every rank.
* :mod:`~pairloss.ltr.data`: :class:`RankingDataset`, SVMlight/LETOR and LightGBM loaders.
* :mod:`~pairloss.ltr.models`: torch scorers with a built-in feature standardiser.
* :mod:`~pairloss.ltr.objectives`: loss name -> loss on a batch (:mod:`pairloss.nn.functional`).
* :mod:`~pairloss.ltr.distributed`: process group set-up and DDP.
* :mod:`~pairloss.ltr.checkpoint`: atomic files, checkpoint format, resume check, :func:`load_model`.
* :mod:`~pairloss.ltr.trainer`: the fit loop, epoch and step.
* :mod:`~pairloss.ltr.callbacks`: validation, early stopping, checkpoints, metrics.json, curves, progress.
* :mod:`~pairloss.ltr.training`: :func:`train`, which puts them together.
* :mod:`~pairloss.ltr.api`: what the ``pairloss`` commands call, and the life of a run directory.
"""

from .api import evaluate_model, predict_file, resume_training, run_training
from .checkpoint import load_model
from .config import TrainConfig
from .data import RankingDataset, load, load_fold, load_lightgbm, load_svmlight
from .metrics import evaluate, mean_average_precision, mrr, ndcg_at, pairwise_accuracy, parse_metric
from .models import LinearScorer, MLPScorer, Scorer, Standardizer, make_model
from .toy_data import make_toy_dataset
from .training import TrainResult, train

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
    "resume_training",
    "run_training",
    "train",
]
