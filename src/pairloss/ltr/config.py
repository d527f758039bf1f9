"""What a training run is: :class:`TrainConfig` and the one table of loss, optimizer, gain and model names.

The command line builds its choices, short names and defaults from this module (``pairloss train
--help`` shows :data:`LOSSES`' short names and :class:`TrainConfig`'s defaults), so a name or a default
is written down once. Importing it imports neither torch nor the operators.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import parse_metric

__all__ = [
    "FILLS",
    "GAINS",
    "LOSSES",
    "MODEL_NAMES",
    "OPTIMIZERS",
    "RESUMABLE_FIELDS",
    "TRANSFORMS",
    "LossSpec",
    "TrainConfig",
    "loss_by_short_name",
]


@dataclass(frozen=True)
class LossSpec:
    """One training loss.

    Attributes:
        short_name: The name ``pairloss train --loss`` takes.
        pairs: ``"sessions"``: the loss takes whole sessions (scores, labels, lengths);
            ``"sampled"``: it takes pairs, which training samples inside sessions.
        summary: One line for ``--help``.
    """

    short_name: str
    pairs: str
    summary: str


#: Loss names of :class:`TrainConfig` (keys) and how each is offered; the functions are in
#: :mod:`pairloss.ltr.objectives`.
LOSSES: dict[str, LossSpec] = {
    "pairwise_logistic": LossSpec("pairwise", "sessions", "PairWiseLoss: logistic (RankNet) over in-session pairs"),
    "pairwise_hinge": LossSpec("hinge", "sessions", "PairWiseHingeLoss: hinge over in-session pairs"),
    "margin_ranking": LossSpec("margin", "sampled", "MarginRankingLoss over pairs sampled inside sessions"),
    "lambdarank": LossSpec("lambdarank", "sessions",
                           "LambdaRankLoss: logistic over in-session pairs weighted by |delta NDCG| (--gain, --topn)"),
}
#: Optimizer names: ``torch.optim.Adam`` and ``torch.optim.SGD``.
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
#: NDCG gains: ``2**label - 1`` and ``label``.
GAINS: tuple[str, ...] = ("exp2", "linear")
#: Scorer names of :func:`pairloss.ltr.models.make_model`.
MODEL_NAMES: tuple[str, ...] = ("linear", "mlp")
#: Feature transforms a scorer applies before everything else (:mod:`pairloss.ltr.models`; ``"log1p"``:
#: signed ``log(1 + |x|)``).
TRANSFORMS: tuple[str, ...] = ("none", "log1p")
#: Where a scorer puts a missing value (:class:`pairloss.ltr.models.MissingValues`): at the mean of the
#: feature's present training values, one standard deviation above their maximum, or one below their
#: minimum (a feature never present: 0).
FILLS: tuple[str, ...] = ("mean", "max", "min")
#: Config fields that a resumed run may change: they decide when to stop, not what an epoch computes.
RESUMABLE_FIELDS: tuple[str, ...] = ("epochs", "patience")

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def loss_by_short_name(short_name: str) -> str:
    """The :data:`LOSSES` key whose short name (or full name) is ``short_name``."""
    for name, spec in LOSSES.items():
        if short_name in (name, spec.short_name):
            return name
    valid = ", ".join(spec.short_name for spec in LOSSES.values())
    raise ValueError(f"unknown loss {short_name!r}; valid losses: {valid}")


def _fail(name: str, expected: str, value: object, exc: type[Exception] = ValueError) -> None:
    raise exc(f"{name} must be {expected}; got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`pairloss.ltr.train`; everything that determines the result.

    The defaults are the recipe chosen by 5-fold cross-validation on development data (mean *vali*
    NDCG@10 over LETOR MQ2007-agg's folds, checked on LightGBM's example data; BENCHMARKS.md): an MLP on
    signed-log1p features, missing values filled beyond the maximum plus missing indicators, the
    pairwise logistic loss, Adam at 1e-3 on batches of 16 sessions, early stopping with patience 8.

    Attributes:
        loss: A key of :data:`LOSSES`.
        model: One of :data:`MODEL_NAMES`.
        hidden: Hidden layer widths of the ``"mlp"`` model.
        dropout: Dropout of the ``"mlp"`` model.
        optimizer: One of :data:`OPTIMIZERS`.
        lr: Learning rate.
        momentum: SGD momentum (ignored by Adam).
        margin: Margin of the hinge and margin-ranking losses.
        sigma: Score scale of the ``"lambdarank"`` loss, ``log(1 + exp(-sigma (s_i - s_j)))``.
        topn: ``"lambdarank"``: only pairs with an item in the current top ``topn`` carry weight
            (0: all pairs); its NDCG gain is ``gain``.
        l1: L1 penalty on weight matrices (biases are not penalised: ranking is shift-invariant).
        l2: L2 penalty on weight matrices.
        epochs: Maximum number of epochs.
        sessions_per_batch: Sessions per batch.
        max_items_per_batch: If set, batches are packed up to this many items instead and
            ``sessions_per_batch`` is ignored (a larger session still forms one batch).
        pairs_per_session: Discordant pairs sampled per session for ``"margin_ranking"``.
        patience: Stop after this many epochs without a validation improvement; ``None`` never
            stops early.
        min_delta: Smallest increase of ``eval_metric`` that counts as an improvement.
        eval_metric: Validation metric to maximise (see :func:`pairloss.ltr.metrics.parse_metric`).
        metrics: Further validation metrics recorded in the history.
        exclude_all_equal: Leave sessions whose labels are all equal out of the validation
            metrics (they score 1 whatever the model does, which only compresses differences).
        gain: One of :data:`GAINS`, the NDCG gain of the validation metrics.
        standardize: Fit the model's feature standardiser on the training features.
        transform: One of :data:`TRANSFORMS`, applied to the raw features before everything else.
        missing_indicators: Give the model a 0/1 input per feature that says the value was missing
            (``NaN``: ``NULL``, ``nan`` or absent in the file); missing values are filled either way.
        missing_fill: One of :data:`FILLS`: a missing value becomes the mean of the feature's present
            training values, or one standard deviation beyond their maximum or minimum.
        input_noise: Standard deviation of the Gaussian noise added to the standardised training
            features (augmentation; 0: none).
        seed: Seed of the initialisation, batch order, pair sampling and dropout.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    """

    loss: str = "pairwise_logistic"
    model: str = "mlp"
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.0
    margin: float = 1.0
    sigma: float = 1.0
    topn: int = 0
    l1: float = 0.0
    l2: float = 0.0
    epochs: int = 40
    sessions_per_batch: int = 16
    max_items_per_batch: int | None = None
    pairs_per_session: int = 64
    patience: int | None = 8
    min_delta: float = 0.0
    eval_metric: str = "ndcg@10"
    metrics: tuple[str, ...] = ("ndcg@10", "map", "mrr")
    exclude_all_equal: bool = True
    gain: str = "exp2"
    standardize: bool = True
    transform: str = "log1p"
    missing_indicators: bool = True
    missing_fill: str = "max"
    input_noise: float = 0.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        # Lists arrive from JSON and numpy scalars from hyper-parameter grids; store plain values so
        # the config stays hashable, comparable and JSON-serialisable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            elif isinstance(value, np.integer | np.floating):
                object.__setattr__(self, f.name, value.item())
        self._check_names()
        self._check_numbers()
        self._check_counts()
        self._check_metrics_and_flags()

    def _check_names(self) -> None:
        for name, choices in (("loss", tuple(LOSSES)), ("model", MODEL_NAMES), ("optimizer", OPTIMIZERS),
                              ("gain", GAINS), ("transform", TRANSFORMS), ("missing_fill", FILLS)):
            if getattr(self, name) not in choices:
                _fail(name, f"one of {', '.join(choices)}", getattr(self, name))
        if not isinstance(self.device, str):
            _fail("device", "a str such as 'cpu' or 'cuda'", self.device, TypeError)
        if not _DEVICE.match(self.device):
            _fail("device", "a torch device string such as 'cpu', 'cuda' or 'cuda:0'", self.device)

    def _check_numbers(self) -> None:
        for name in ("dropout", "lr", "momentum", "margin", "sigma", "l1", "l2", "min_delta", "input_noise"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                _fail(name, "a finite number", value, TypeError if not _is_number(value) else ValueError)
        if not 0.0 <= self.dropout < 1.0:
            _fail("dropout", "in [0, 1)", self.dropout)
        if self.lr <= 0:
            _fail("lr", "> 0", self.lr)
        if self.sigma <= 0:
            _fail("sigma", "> 0", self.sigma)
        for name in ("momentum", "l1", "l2", "min_delta", "input_noise"):
            if getattr(self, name) < 0:
                _fail(name, ">= 0", getattr(self, name))

    def _check_counts(self) -> None:
        if not isinstance(self.hidden, tuple) or not all(_is_int(w) and w > 0 for w in self.hidden):
            _fail("hidden", "a tuple of positive ints", self.hidden)
        for name in ("epochs", "sessions_per_batch", "pairs_per_session"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                _fail(name, "a positive int", value, TypeError if not _is_int(value) else ValueError)
        for name in ("max_items_per_batch", "patience"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                _fail(name, "a positive int or None", value)
        if not _is_int(self.topn) or self.topn < 0:
            _fail("topn", "an int >= 0 (0: all pairs)", self.topn, TypeError if not _is_int(self.topn) else ValueError)
        if not _is_int(self.seed) or self.seed < 0:
            _fail("seed", "an int >= 0", self.seed)

    def _check_metrics_and_flags(self) -> None:
        if not isinstance(self.eval_metric, str):
            _fail("eval_metric", "a metric name (str)", self.eval_metric, TypeError)
        if not isinstance(self.metrics, tuple) or not all(isinstance(m, str) for m in self.metrics):
            _fail("metrics", "a tuple of metric names", self.metrics, TypeError)
        for field_name, names in (("eval_metric", (self.eval_metric,)), ("metrics", self.metrics)):
            for name in names:
                try:
                    parse_metric(name)
                except ValueError as exc:
                    raise ValueError(f"{field_name}: {exc}") from None
        for name in ("exclude_all_equal", "standardize", "missing_indicators"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, "a bool", getattr(self, name), TypeError)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``eval_metric`` then ``metrics``, without repeats: what each validation computes."""
        return tuple(dict.fromkeys((self.eval_metric, *self.metrics)))

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-compatible primitives (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; fields missing from ``data`` take their defaults; unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of the fields whose values differ from ``other``'s, in field order."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the configured model."""
        options = {"transform": self.transform, "missing_indicators": self.missing_indicators,
                   "missing_fill": self.missing_fill, "input_noise": self.input_noise}
        if self.model == "mlp":
            return {"hidden": self.hidden, "dropout": self.dropout, **options}
        return options
