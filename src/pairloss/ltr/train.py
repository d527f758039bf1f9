"""Training loop for pairwise learning-to-rank scorers.

:func:`train` optimises a scorer from :mod:`pairloss.ltr.models` with a pairwise loss over batches
of whole sessions, evaluates it on a validation set after every epoch, stops early when the
validation metric stops improving, and writes into ``out_dir``:

* ``checkpoint.pt``: the state after the last finished epoch (model, optimizer, epoch, early-stopping
  state, history, config), rewritten atomically every epoch;
* ``best.pt``: the weights of the best epoch so far (see :func:`load_model`);
* ``metrics.json``: config, per-epoch history and the best epoch's validation metrics;
* ``curves.png``: training loss and validation metrics per epoch.

**Resuming** (``resume=True``) continues from ``checkpoint.pt`` and produces bit-for-bit the result
of an uninterrupted run: the batch order of epoch ``e`` is drawn from a generator seeded with
``(seed, e)``, and dropout and pair sampling from one seeded with ``(seed, e, rank)``, rather than
from running streams, so no RNG state needs carrying over.

**Distributed training**: when a ``torch.distributed`` process group with several ranks is
initialised, :func:`train` trains data-parallel (each rank on its session shard, gradients summed
exactly, rank 0 writing the files); see :mod:`pairloss.ltr.distributed`.

**Losses** are looked up by name in ``pairloss.nn.functional`` when :func:`train` is called (see
:data:`LOSSES`), or supplied with ``loss_fn``, which must have the signature of the named loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import RankingDataset
from .metrics import evaluate, parse_metric
from .models import MODELS, Scorer, make_model

__all__ = ["LOSSES", "TrainConfig", "TrainResult", "load_model", "resolve_loss", "train"]

#: Loss names accepted by :class:`TrainConfig` and the ``pairloss.nn.functional`` function of each.
#: ``pairwise_logistic_loss(scores, labels, lengths, reduction)`` and
#: ``pairwise_hinge_loss(scores, labels, lengths, margin, reduction)`` take whole sessions;
#: ``margin_ranking_loss(input1, input2, target, margin, reduction)`` takes pairs, which the loop
#: samples inside sessions (at most ``pairs_per_session`` discordant pairs each).
LOSSES: dict[str, str] = {
    "pairwise_logistic": "pairwise_logistic_loss",
    "pairwise_hinge": "pairwise_hinge_loss",
    "margin_ranking": "margin_ranking_loss",
}
OPTIMIZERS = ("adam", "sgd")
GAINS = ("exp2", "linear")
_CHECKPOINT_FORMAT = 1
# Fields that may change between an interrupted run and its resumption without invalidating it.
_RESUMABLE_CHANGES = frozenset({"epochs", "patience", "min_delta"})
# Items scored per forward pass during validation: bounds memory on large validation sets.
_EVAL_CHUNK = 65536


def _fail(name: str, expected: str, value: object, exc: type[Exception] = ValueError) -> None:
    raise exc(f"{name} must be {expected}; got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train`; everything that determines the result.

    Attributes:
        loss: A key of :data:`LOSSES`.
        model: A key of :data:`pairloss.ltr.models.MODELS` (``"linear"`` or ``"mlp"``).
        hidden: Hidden layer widths of the ``"mlp"`` model.
        dropout: Dropout of the ``"mlp"`` model.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: Learning rate.
        momentum: SGD momentum (ignored by Adam).
        margin: Margin of the hinge and margin-ranking losses.
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
        gain: NDCG gain of the validation metrics, ``"exp2"`` (``2**label - 1``) or ``"linear"``.
        standardize: Fit the model's feature standardiser on the training features.
        seed: Seed of the initialisation, batch order, pair sampling and dropout.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    """

    loss: str = "pairwise_logistic"
    model: str = "linear"
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.0
    margin: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    epochs: int = 20
    sessions_per_batch: int = 32
    max_items_per_batch: int | None = None
    pairs_per_session: int = 64
    patience: int | None = 5
    min_delta: float = 0.0
    eval_metric: str = "ndcg@10"
    metrics: tuple[str, ...] = ("ndcg@10", "map", "mrr")
    exclude_all_equal: bool = True
    gain: str = "exp2"
    standardize: bool = True
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        # Lists arrive from JSON / CLI parsing; store tuples so the config stays hashable and equal.
        if isinstance(self.hidden, list):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        if isinstance(self.metrics, list):
            object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.loss not in LOSSES:
            _fail("loss", f"one of {', '.join(LOSSES)}", self.loss)
        if self.model not in MODELS:
            _fail("model", f"one of {', '.join(MODELS)}", self.model)
        if self.optimizer not in OPTIMIZERS:
            _fail("optimizer", f"one of {', '.join(OPTIMIZERS)}", self.optimizer)
        if self.gain not in GAINS:
            _fail("gain", f"one of {', '.join(GAINS)}", self.gain)
        if not isinstance(self.hidden, tuple) or not all(_is_int(w) and w > 0 for w in self.hidden):
            _fail("hidden", "a tuple of positive ints", self.hidden)
        for name in ("dropout", "lr", "momentum", "margin", "l1", "l2", "min_delta"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                _fail(name, "a finite number", value, TypeError if not _is_number(value) else ValueError)
        if not 0.0 <= self.dropout < 1.0:
            _fail("dropout", "in [0, 1)", self.dropout)
        if self.lr <= 0:
            _fail("lr", "> 0", self.lr)
        for name in ("momentum", "l1", "l2", "min_delta"):
            if getattr(self, name) < 0:
                _fail(name, ">= 0", getattr(self, name))
        for name in ("epochs", "sessions_per_batch", "pairs_per_session"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                _fail(name, "a positive int", value, TypeError if not _is_int(value) else ValueError)
        for name in ("max_items_per_batch", "patience"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                _fail(name, "a positive int or None", value)
        if not _is_int(self.seed) or self.seed < 0:
            _fail("seed", "an int >= 0", self.seed)
        if not isinstance(self.eval_metric, str):
            _fail("eval_metric", "a metric name (str)", self.eval_metric, TypeError)
        parse_metric(self.eval_metric)
        if not isinstance(self.metrics, tuple) or not all(isinstance(m, str) for m in self.metrics):
            _fail("metrics", "a tuple of metric names", self.metrics, TypeError)
        for name in self.metrics:
            parse_metric(name)
        for name in ("exclude_all_equal", "standardize"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, "a bool", getattr(self, name), TypeError)
        # numpy scalars (e.g. from a hyper-parameter grid) would make to_dict() JSON-unserialisable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.integer):
                object.__setattr__(self, f.name, int(value))
            elif isinstance(value, np.floating):
                object.__setattr__(self, f.name, float(value))
        if not isinstance(self.device, str):
            _fail("device", "a str such as 'cpu' or 'cuda'", self.device, TypeError)
        try:
            torch.device(self.device)
        except RuntimeError:
            _fail("device", "a torch device string such as 'cpu' or 'cuda:0'", self.device)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-compatible primitives (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the configured model."""
        if self.model == "mlp":
            return {"hidden": self.hidden, "dropout": self.dropout}
        return {}


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: The scorer with the best epoch's weights, in eval mode.
        best_epoch: Epoch (1-based) whose weights ``model`` holds: the best validation epoch, or
            the last epoch without a validation set.
        best_metric: ``eval_metric`` at ``best_epoch`` (``None`` without a validation set).
        best_valid: All validation metrics at ``best_epoch``.
        epochs_run: Epochs completed, including those before a resumption.
        stopped_early: Whether early stopping ended the run.
        resumed_from_epoch: The checkpoint's epoch if the run resumed, else ``None``.
        history: One record per epoch: ``epoch``, ``train_loss``, ``valid`` (metrics), ``seconds``.
        out_dir: The output directory.
        checkpoint_path: ``out_dir / "checkpoint.pt"``.
        best_path: ``out_dir / "best.pt"``.
        metrics_path: ``out_dir / "metrics.json"``.
        curves_path: ``out_dir / "curves.png"``.
    """

    model: Scorer
    best_epoch: int
    best_metric: float | None
    best_valid: dict[str, float]
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int | None
    history: list[dict[str, Any]] = field(repr=False)
    out_dir: Path
    checkpoint_path: Path
    best_path: Path
    metrics_path: Path
    curves_path: Path


def resolve_loss(name: str) -> Callable[..., torch.Tensor]:
    """Imports the ``pairloss.nn.functional`` implementation of a loss name.

    Args:
        name: A key of :data:`LOSSES`.

    Returns:
        The loss function.

    Raises:
        ValueError: If ``name`` is not a known loss.
        ImportError: If the implementation is not available.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    attr = LOSSES[name]
    hint = "pass loss_fn=... to train() to supply an implementation"
    try:
        module = importlib.import_module("pairloss.nn.functional")
    except ImportError as exc:
        raise ImportError(f"loss {name!r} needs pairloss.nn.functional.{attr}: {exc}; {hint}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise ImportError(f"loss {name!r} needs pairloss.nn.functional.{attr}, which does not exist; {hint}")
    return fn  # type: ignore[no-any-return]


#: ``(scores, labels, lengths, batch, pair_rng) -> (mean loss, number of terms averaged)``; the count
#: weights a rank's share of the global batch in distributed training.
Objective = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, RankingDataset, np.random.Generator], tuple[torch.Tensor, int]
]


def _sample_pairs(batch: RankingDataset, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_pairs`` (higher, lower) label-discordant item pairs per session, batch indices."""
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    for start, n in zip(batch.session_offsets[:-1].tolist(), batch.lengths.tolist(), strict=True):
        labels = batch.labels[start : start + n]
        hi, lo = np.nonzero(labels[:, None] > labels[None, :])
        if hi.size > max_pairs:
            pick = rng.choice(hi.size, size=max_pairs, replace=False)
            hi, lo = hi[pick], lo[pick]
        firsts.append(hi + start)
        seconds.append(lo + start)
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _make_objective(config: TrainConfig, loss_fn: Callable[..., torch.Tensor] | None) -> Objective:
    fn = loss_fn if loss_fn is not None else resolve_loss(config.loss)
    # Training batches hold only sessions with at least one pair, so the session losses' "mean"
    # averages over all batch.n_sessions sessions.
    if config.loss == "pairwise_logistic":
        return lambda scores, labels, lengths, batch, rng: (
            fn(scores, labels, lengths, reduction="mean"),
            batch.n_sessions,
        )
    if config.loss == "pairwise_hinge":
        return lambda scores, labels, lengths, batch, rng: (
            fn(scores, labels, lengths, margin=config.margin, reduction="mean"),
            batch.n_sessions,
        )

    def margin_ranking(
        scores: torch.Tensor,
        labels: torch.Tensor,
        lengths: torch.Tensor,
        batch: RankingDataset,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, int]:
        first, second = _sample_pairs(batch, config.pairs_per_session, rng)
        i = torch.from_numpy(first).to(scores.device)
        j = torch.from_numpy(second).to(scores.device)
        target = torch.ones(i.shape[0], dtype=scores.dtype, device=scores.device)
        return fn(scores[i], scores[j], target, margin=config.margin, reduction="mean"), int(i.shape[0])

    return margin_ranking


def _penalty(model: torch.nn.Module, l1: float, l2: float) -> torch.Tensor | None:
    if l1 == 0 and l2 == 0:
        return None
    weights = [p for p in model.parameters() if p.ndim >= 2]
    total = weights[0].new_zeros(())
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.pow(2).sum()
    return total


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _fingerprint(data: RankingDataset) -> str:
    # Cheap identity check for resumption: sizes, labels and a sample of rows, not all features.
    h = hashlib.sha256()
    h.update(np.asarray(data.features.shape, dtype=np.int64).tobytes())
    h.update(data.lengths.tobytes())
    h.update(data.labels.tobytes())
    h.update(data.features[:: max(1, data.n_items // 1024)].tobytes())
    return h.hexdigest()


def _informative_sessions(data: RankingDataset) -> np.ndarray:
    starts = data.session_offsets[:-1]
    lo = np.minimum.reduceat(data.labels, starts)
    hi = np.maximum.reduceat(data.labels, starts)
    return np.flatnonzero(hi > lo)


@torch.no_grad()
def _predict(model: Scorer, features: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    out = [
        model(torch.from_numpy(features[i : i + _EVAL_CHUNK]).to(device)).double().cpu().numpy()
        for i in range(0, features.shape[0], _EVAL_CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def _validate(
    model: Scorer, data: RankingDataset, config: TrainConfig, names: tuple[str, ...], device: torch.device
) -> dict[str, float]:
    scores = _predict(model, data.features, device)
    return evaluate(
        scores, data.labels, data.lengths, names, exclude_all_equal=config.exclude_all_equal, gain=config.gain
    )


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Writes through a temporary file in the same directory, then renames it over ``path``.

    A crash mid-write leaves the previous file intact, so a resumable checkpoint always exists.
    """
    # Not tempfile.mkstemp: its files are mode 0600, and results should get the umask's usual mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _plot_curves(history: list[dict[str, Any]], names: tuple[str, ...], best_epoch: int, path: Path) -> None:
    # Figure + the Agg canvas directly, not pyplot: no global backend switch, no GUI, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    for name in names:
        values = [r["valid"].get(name, math.nan) for r in history]
        if any(math.isfinite(v) for v in values):
            ax_metric.plot(epochs, values, marker="o", label=name)
    if history:
        ax_metric.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
    ax_metric.set(xlabel="epoch", ylabel="validation metric", title="Validation")
    ax_metric.legend(loc="lower right")
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        disable=not enabled,
    ) as bar:
        yield bar


def _check_inputs(
    config: object, train_data: object, valid_data: object, loss_fn: object, on_epoch_end: object
) -> None:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    if not isinstance(train_data, RankingDataset):
        raise TypeError(f"train_data must be a RankingDataset; got {type(train_data).__name__}")
    if valid_data is not None:
        if not isinstance(valid_data, RankingDataset):
            raise TypeError(f"valid_data must be a RankingDataset or None; got {type(valid_data).__name__}")
        if valid_data.n_features != train_data.n_features:
            raise ValueError(
                f"valid_data has {valid_data.n_features} features but train_data has "
                f"{train_data.n_features}; load it with n_features=train_data.n_features"
            )
        probe = evaluate(
            valid_data.labels,
            valid_data.labels,
            valid_data.lengths,
            [config.eval_metric],
            exclude_all_equal=config.exclude_all_equal,
            gain=config.gain,
        )
        if math.isnan(probe[config.eval_metric]):
            raise ValueError(
                f"valid_data has no session on which {config.eval_metric} is defined (every session lacks "
                "a relevant item or has all-equal labels), so early stopping would have nothing to track"
            )
    for name, fn in (("loss_fn", loss_fn), ("on_epoch_end", on_epoch_end)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None; got {type(fn).__name__}")


def train(
    config: TrainConfig,
    train_data: RankingDataset,
    valid_data: RankingDataset | None,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    resume: bool = False,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Trains a scorer with a pairwise loss; see the module docstring for the files written.

    Sessions whose labels are all equal (including single items) form no pair and are left out of
    the training batches; the count is reported in ``metrics.json``.

    Args:
        config: Hyper-parameters.
        train_data: Training sessions.
        valid_data: Validation sessions for early stopping and model selection, or ``None`` (then
            the last epoch is kept).
        out_dir: Directory for checkpoints, metrics and plots (created if needed).
        progress: Show a rich progress bar on stderr.
        resume: Continue from ``out_dir/checkpoint.pt`` if it exists (otherwise start fresh). The
            checkpoint's config must equal ``config`` except ``epochs``, ``patience`` and
            ``min_delta``, and the training data must be the same. Without ``resume`` an existing
            run in ``out_dir`` is overwritten.
        loss_fn: Implementation of ``config.loss`` with the signature of its
            ``pairloss.nn.functional`` counterpart (see :data:`LOSSES`); default: that function.
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is
            written.

    Under an initialised ``torch.distributed`` process group of several ranks, every rank calls
    :func:`train` with the same arguments (the full ``train_data``); each trains on its session
    shard, gradients are summed across ranks, and only rank 0 writes to ``out_dir`` (see
    :mod:`pairloss.ltr.distributed`). Every rank returns the same result.

    Returns:
        The :class:`TrainResult`.

    Raises:
        ValueError: On inconsistent data (feature counts, no trainable session, an unusable
            validation set), an incompatible checkpoint, or an unavailable device.
        FloatingPointError: If the loss becomes NaN or infinite.
    """
    _check_inputs(config, train_data, valid_data, loss_fn, on_epoch_end)
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"config.device is {config.device!r} but CUDA is not available")
        if device.index is None:  # "cuda" means the current device (set per rank by distributed runs)
            device = torch.device("cuda", torch.cuda.current_device())
    # Imported here, not at the top: `python -m pairloss.ltr.distributed` must be able to run that
    # module as __main__ without the package having imported it first (runpy warns otherwise).
    from .distributed import current_context

    dist = current_context(device)
    writer = dist is None or dist.is_main  # only rank 0 writes files and shows progress
    rank = 0 if dist is None else dist.rank
    out = Path(os.fspath(out_dir))
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    checkpoint_path, best_path = out / "checkpoint.pt", out / "best.pt"
    metrics_path, curves_path = out / "metrics.json", out / "curves.png"

    objective = _make_objective(config, loss_fn)
    used = _informative_sessions(train_data)
    if used.size == 0:
        raise ValueError("train_data has no session with two different labels; a pairwise loss has no pair")
    train_used = train_data.subset(used)
    # Distributed: this rank owns sessions rank, rank + W, ... of train_used; global session g is
    # local session g // W. Batches are planned over all sessions, then each rank takes its part.
    local = train_used if dist is None else train_used.shard(dist.rank, dist.world_size)
    names = tuple(dict.fromkeys((config.eval_metric, *config.metrics)))
    fingerprint = _fingerprint(train_data)
    cuda_devices = [device.index] if device.type == "cuda" else []

    # fork_rng: seeding for reproducibility must not reset the caller's global RNG stream.
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        model = make_model(config.model, train_data.n_features, **config.model_kwargs())
        if config.standardize:
            model.fit_standardizer(train_data.features)
        model.to(device)
        optimizer = _make_optimizer(config, model)
        epoch, bad_epochs = 0, 0
        best_epoch: int | None = None
        best_metric: float | None = None
        history: list[dict[str, Any]] = []
        resumed_from: int | None = None
        ckpt: dict[str, Any] | None = None
        problem: str | None = None
        if resume and writer and checkpoint_path.exists():
            try:
                ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
                _check_resumable(ckpt, config, fingerprint, checkpoint_path)
            except ValueError as exc:
                problem = str(exc)
        if dist is not None:
            # Every rank must fail together (a lone failure would leave the others in a collective).
            ckpt, problem = dist.broadcast_object((ckpt, problem) if resume else (None, None))
        if problem is not None:
            raise ValueError(problem)
        if ckpt is not None:
            model.load_state_dict(ckpt["model_state"])
            optimizer.load_state_dict(ckpt["optimizer_state"])
            epoch, bad_epochs = ckpt["epoch"], ckpt["bad_epochs"]
            best_epoch, best_metric, history = ckpt["best_epoch"], ckpt["best_metric"], ckpt["history"]
            resumed_from = epoch
        if dist is not None:
            dist.broadcast_module(model)
        params = [p for p in model.parameters() if p.requires_grad]

        stopped_early = config.patience is not None and bad_epochs >= config.patience
        stopped_early = stopped_early and 0 < epoch < config.epochs
        with _progress_bar(progress and writer) as bar:
            while not stopped_early and epoch < config.epochs:
                epoch += 1
                started = time.perf_counter()
                seed = _epoch_seed(config.seed, epoch)
                # Dropout and pair sampling: a fresh stream per (seed, epoch, rank), so resuming
                # needs no RNG state and ranks draw independent masks.
                stream = np.random.SeedSequence([config.seed, epoch, rank])
                torch.manual_seed(int(stream.generate_state(1)[0]))
                pair_rng = np.random.default_rng(stream)
                # Only the index plan is materialised; each batch's rows are copied when it is used,
                # so an epoch never holds a second copy of the training set.
                plan = train_used._plan_batches(
                    config.max_items_per_batch,
                    None if config.max_items_per_batch else config.sessions_per_batch,
                    True,
                    seed,
                )
                task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=len(plan), info="")
                model.train()
                loss_sum, weight = 0.0, 0
                for step, global_idx in enumerate(plan):
                    session_idx = global_idx
                    if dist is not None:
                        mine = global_idx % dist.world_size == dist.rank
                        session_idx = global_idx[mine] // dist.world_size
                    batch = local._take_sessions(session_idx)
                    loss: torch.Tensor | None = None
                    n_terms = 0
                    if batch.n_sessions:
                        x = torch.from_numpy(batch.features).to(device)
                        y = torch.from_numpy(batch.labels).to(device)
                        lengths = torch.from_numpy(batch.lengths).to(device)
                        loss, n_terms = objective(model(x), y, lengths, batch, pair_rng)
                    penalty = _penalty(model, config.l1, config.l2)
                    bad = (loss is not None and not bool(torch.isfinite(loss))) or (
                        penalty is not None and not bool(torch.isfinite(penalty))
                    )
                    share = 1.0
                    if dist is not None:
                        stats = torch.tensor([float(n_terms), float(bad)], dtype=torch.float64, device=device)
                        dist.all_reduce_sum(stats)
                        total_terms, bad = stats[0].item(), stats[1].item() > 0
                        share = n_terms / total_terms if total_terms else 0.0
                    if bad:
                        value = (loss if loss is not None else 0.0) + (penalty if penalty is not None else 0.0)
                        shown = (
                            float(value.detach()) if isinstance(value, torch.Tensor) else "non-finite on another rank"
                        )
                        raise FloatingPointError(
                            f"loss became {shown} at epoch {epoch}, batch {step}; "
                            f"try a smaller learning rate (lr={config.lr})"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    if loss is not None:
                        (loss if dist is None else loss * share).backward()
                    if dist is not None:
                        # Sum of the ranks' share-weighted gradients = gradient of the global batch mean.
                        dist.all_reduce_gradients(params)
                    if penalty is not None:
                        penalty.backward()  # after the reduction: the penalty counts once
                    optimizer.step()
                    if loss is not None:
                        loss_sum += float(loss.detach()) * batch.n_sessions
                        weight += batch.n_sessions
                    bar.advance(task)
                if dist is not None:
                    totals = dist.all_reduce_sum(
                        torch.tensor([loss_sum, float(weight)], dtype=torch.float64, device=device)
                    )
                    loss_sum, weight = totals[0].item(), int(totals[1].item())
                train_loss = loss_sum / weight
                if dist is not None:
                    dist.check_in_sync(model, f"in epoch {epoch}")
                valid: dict[str, float] = {}
                if valid_data is not None:
                    valid = _validate(model, valid_data, config, names, device) if writer else {}
                    if dist is not None:
                        valid = dist.broadcast_object(valid)
                current = valid.get(config.eval_metric)
                if (
                    current is not None
                    and math.isfinite(current)
                    and (best_metric is None or current > best_metric + config.min_delta)
                ):
                    best_epoch, best_metric, bad_epochs = epoch, current, 0
                    if writer:
                        _save_best(best_path, model, config, epoch, current)
                elif valid_data is not None:
                    bad_epochs += 1
                record = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "valid": valid,
                    "seconds": time.perf_counter() - started,
                }
                history.append(record)
                info = f"loss {train_loss:.4f}" + (
                    f"  {config.eval_metric} {current:.4f}" if current is not None else ""
                )
                bar.update(task, info=info)
                if writer:
                    state = {
                        "format": _CHECKPOINT_FORMAT,
                        "epoch": epoch,
                        "config": config.to_dict(),
                        "train_fingerprint": fingerprint,
                        "model_state": model.state_dict(),
                        "optimizer_state": optimizer.state_dict(),
                        "best_epoch": best_epoch,
                        "best_metric": best_metric,
                        "bad_epochs": bad_epochs,
                        "history": history,
                    }
                    _atomic_write(checkpoint_path, lambda f, c=state: torch.save(c, f))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                stopped_early = config.patience is not None and bad_epochs >= config.patience
                stopped_early = stopped_early and epoch < config.epochs

    if valid_data is None or best_epoch is None:
        # Nothing to select on: the final weights are the result.
        best_epoch, best_metric = epoch, None
        if writer:
            _save_best(best_path, model, config, epoch, None)
    best_state = torch.load(best_path, map_location="cpu", weights_only=True)["model_state"] if writer else None
    if dist is not None:
        best_state = dist.broadcast_object(best_state)
    model.load_state_dict(best_state)
    model.eval()
    best_valid = history[best_epoch - 1]["valid"] if history else {}
    if writer:
        summary = {
            "config": config.to_dict(),
            "eval_metric": config.eval_metric,
            "best_epoch": best_epoch,
            "best_metric": best_metric,
            "best_valid": best_valid,
            "epochs_run": epoch,
            "stopped_early": stopped_early,
            "resumed_from_epoch": resumed_from,
            "world_size": 1 if dist is None else dist.world_size,
            "train_sessions": {
                "total": train_data.n_sessions,
                "used": int(used.size),
                "skipped_without_pairs": train_data.n_sessions - int(used.size),
            },
            "history": history,
        }
        text = json.dumps(_json_safe(summary), indent=2)
        _atomic_write(metrics_path, lambda f: f.write(text.encode()))
        _plot_curves(history, names if valid_data is not None else (), best_epoch, curves_path)
    if dist is not None:
        dist.barrier()  # every rank returns only once rank 0's files are complete
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        best_metric=best_metric,
        best_valid=dict(best_valid),
        epochs_run=epoch,
        stopped_early=stopped_early,
        resumed_from_epoch=resumed_from,
        history=history,
        out_dir=out,
        checkpoint_path=checkpoint_path,
        best_path=best_path,
        metrics_path=metrics_path,
        curves_path=curves_path,
    )


def _save_best(path: Path, model: Scorer, config: TrainConfig, epoch: int, metric: float | None) -> None:
    state = {
        "format": _CHECKPOINT_FORMAT,
        "epoch": epoch,
        "metric": metric,
        "config": config.to_dict(),
        "n_features": model.n_features,
        "model_state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    _atomic_write(path, lambda f: torch.save(state, f))


def _check_resumable(ckpt: Mapping[str, Any], config: TrainConfig, fingerprint: str, path: Path) -> None:
    if ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {ckpt.get('format')!r}")
    current = config.to_dict()
    defaults = TrainConfig().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in ckpt["config"]}, **ckpt["config"]}
    differing = sorted(
        k for k in set(saved) | set(current) if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if differing:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing)
        raise ValueError(
            f"cannot resume from {path}: config differs in {changes} (only epochs, patience and "
            "min_delta may change); use another out_dir or resume=False"
        )
    if ckpt["train_fingerprint"] != fingerprint:
        raise ValueError(f"cannot resume from {path}: train_data differs from the data it was trained on")


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Scorer:
    """Rebuilds a trained scorer from ``best.pt`` or ``checkpoint.pt``.

    Args:
        path: A file written by :func:`train`.
        map_location: Device to load the weights onto.

    Returns:
        The scorer in eval mode, standardiser included.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: no such file: {os.fspath(path)}")
    not_ours = f"{os.fspath(path)} is not a checkpoint written by pairloss.ltr.train"
    try:
        state = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not a checkpoint
        raise ValueError(f"{not_ours} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict) or "config" not in state or "model_state" not in state:
        raise ValueError(not_ours)
    try:
        config = TrainConfig.from_dict(state["config"])
        n_features = int(state["model_state"]["standardizer.mean"].shape[0])
        model = make_model(config.model, n_features, **config.model_kwargs())
        model.load_state_dict(state["model_state"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{not_ours} or is damaged: {exc}") from exc
    return model.to(map_location).eval()
