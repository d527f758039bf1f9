"""Torch scorers mapping item features ``(N, F)`` to ranking scores ``(N,)``.

Every scorer preprocesses its raw features inside ``forward``, in this order:

1. a fixed elementwise transform (:data:`TRANSFORMS`: ``"none"``, or ``"log1p"``, the signed
   ``sign(x) log(1 + |x|)`` that tames heavy-tailed LETOR features such as counts, lengths and ranks);
2. missing values (``NaN``) replaced by a fill value per feature, :class:`MissingValues`;
3. a :class:`Standardizer`;
4. during training only, Gaussian input noise (``input_noise`` times a standard normal; DASALC's
   augmentation, Qin et al. 2021);
5. with ``missing_indicators``, one 0/1 input per feature that says it was missing (only for features
   that were missing somewhere in the training data: the others keep a zero input).

The fill values, means and standard deviations are *buffers*: they are fitted once on the training
features (:meth:`Scorer.fit_preprocessing`), then travel with ``state_dict()``, so a checkpoint, and the
ONNX export, score new data exactly like the model that was trained, without the training set at hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .config import FILLS, TRANSFORMS

__all__ = ["FILLS", "MODELS", "TRANSFORMS", "LinearScorer", "MLPScorer", "MissingValues", "Scorer", "Standardizer",
           "make_model", "score_items", "signed_log1p"]


# Items scored per forward pass by score_items: bounds memory on large data sets.
_SCORE_CHUNK = 65536


def _check_n_features(n_features: object) -> int:
    if not isinstance(n_features, int | np.integer) or isinstance(n_features, bool):
        raise TypeError(f"n_features must be an int; got {type(n_features).__name__} {n_features!r}")
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1; got {n_features}")
    return int(n_features)


def _as_float64(features: npt.ArrayLike | torch.Tensor, n_features: int) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        x = features.detach().cpu().double().numpy()
    else:
        x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features or x.shape[0] < 1:
        raise ValueError(f"features must have shape (n_items >= 1, {n_features}); got {tuple(x.shape)}")
    return x


class Standardizer(nn.Module):
    """Per-feature ``(x - mean) / std`` with statistics stored as buffers.

    Until :meth:`fit` is called it is the identity (mean 0, std 1).

    Args:
        n_features: Number of features.
        eps: Standard deviations below this are replaced by 1, so constant columns (e.g. the unused
            column 0 of a one-based LETOR file) are centred but not blown up by a near-zero divisor.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.n_features = _check_n_features(n_features)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))

    def fit(self, features: npt.ArrayLike | torch.Tensor) -> Standardizer:
        """Sets mean/std from training features (in place).

        Args:
            features: ``(N, F)`` training features, ``N >= 1``.

        Returns:
            ``self``.
        """
        x = _as_float64(features, self.n_features)
        if np.isnan(x).any():
            raise ValueError("features must not hold NaN here: fill missing values first (see MissingValues)")
        # float64 accumulation: float32 sums over millions of rows lose the digits that matter for std.
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std < self.eps, 1.0, std)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(mean))
            self.std.copy_(torch.from_numpy(std))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardises ``(N, F)`` features."""
        return (features - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}"


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: the identity near 0, logarithmic in the tails, odd, monotone."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class MissingValues(nn.Module):
    """Replaces ``NaN`` by a per-feature fill value; says which features were missing in training.

    The fill value of a feature comes from its present training values (0 for a feature never present):
    their mean (``"mean"``: a missing value sits at the centre and a missing indicator carries the
    information), or one standard deviation beyond their maximum (``"max"``) or minimum (``"min"``): a
    missing value is then an extreme one, e.g. "not ranked at all" for a feature that is a rank, as in
    LETOR 4.0's rank-aggregation sets.

    Args:
        n_features: Number of features.
        fill: One of :data:`FILLS`.
    """

    fill: torch.Tensor
    seen: torch.Tensor

    def __init__(self, n_features: int, fill: str = "mean") -> None:
        super().__init__()
        self.n_features = _check_n_features(n_features)
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}; got {fill!r}")
        self.fill_rule = fill
        self.register_buffer("fill", torch.zeros(self.n_features))
        self.register_buffer("seen", torch.zeros(self.n_features))

    def fit(self, features: npt.ArrayLike | torch.Tensor) -> MissingValues:
        """Sets ``fill`` and ``seen`` (1 where a feature is missing somewhere) from training features."""
        x = _as_float64(features, self.n_features)
        missing = np.isnan(x)
        present = (~missing).any(axis=0)
        fill = np.zeros(self.n_features)
        if present.any():
            values = x[:, present]
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            fill[present] = {"mean": lambda: mean, "max": lambda: np.nanmax(values, axis=0) + std,
                             "min": lambda: np.nanmin(values, axis=0) - std}[self.fill_rule]()
        with torch.no_grad():
            self.fill.copy_(torch.from_numpy(fill))
            self.seen.copy_(torch.from_numpy(missing.any(axis=0).astype(np.float64)))
        return self

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(filled features, indicators)``; an indicator is 1 where a feature seen missing is missing."""
        missing = torch.isnan(features)
        return torch.where(missing, self.fill, features), missing.to(features.dtype) * self.seen

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, fill={self.fill_rule!r}"


def _check_options(transform: object, missing_indicators: object, input_noise: object) -> None:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    if not isinstance(missing_indicators, bool):
        raise TypeError(f"missing_indicators must be a bool; got {missing_indicators!r}")
    if (not isinstance(input_noise, int | float) or isinstance(input_noise, bool) or not np.isfinite(input_noise)
            or input_noise < 0):
        raise ValueError(f"input_noise must be a finite number >= 0; got {input_noise!r}")


class Scorer(nn.Module):
    """Base class: preprocess (see the module docstring), then score each item independently.

    Subclasses implement :meth:`score_standardized` on :attr:`n_inputs` preprocessed inputs.

    Args:
        n_features: Number of input features.
        transform: One of :data:`TRANSFORMS`.
        missing_indicators: Add a missing indicator per feature to the inputs.
        missing_fill: Fill rule of missing values, one of :data:`FILLS`.
        input_noise: Standard deviation of the Gaussian noise added to the standardised features in
            training mode (0: none).
    """

    def __init__(self, n_features: int, *, transform: str = "none", missing_indicators: bool = False,
                 missing_fill: str = "mean", input_noise: float = 0.0) -> None:
        super().__init__()
        self.n_features = _check_n_features(n_features)
        _check_options(transform, missing_indicators, input_noise)
        self.transform, self.missing_indicators, self.input_noise = transform, missing_indicators, float(input_noise)
        self.missing = MissingValues(self.n_features, missing_fill)
        self.standardizer = Standardizer(self.n_features)

    @property
    def n_inputs(self) -> int:
        """Width of the preprocessed input: the features, plus their missing indicators if on."""
        return self.n_features * (2 if self.missing_indicators else 1)

    def _transformed(self, features: torch.Tensor) -> torch.Tensor:
        return signed_log1p(features) if self.transform == "log1p" else features

    @torch.no_grad()
    def fit_preprocessing(self, features: npt.ArrayLike | torch.Tensor, *, standardize: bool = True) -> Scorer:
        """Fits the fill values and (with ``standardize``) the standardiser on training features; returns ``self``.

        Args:
            features: ``(N, F)`` raw training features (``NaN`` = missing), ``N >= 1``.
            standardize: Fit the standardiser (else it stays the identity).
        """
        x = torch.from_numpy(_as_float64(features, self.n_features))
        x = self._transformed(x)
        self.missing.fit(x)
        if standardize:
            self.standardizer.fit(torch.where(torch.isnan(x), self.missing.fill.double().cpu(), x))
        return self

    def fit_standardizer(self, features: npt.ArrayLike | torch.Tensor) -> Scorer:
        """Same as :meth:`fit_preprocessing` with ``standardize=True``."""
        return self.fit_preprocessing(features)

    def preprocess(self, features: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, F)`` features -> the ``(N, n_inputs)`` inputs of :meth:`score_standardized`."""
        x, indicators = self.missing(self._transformed(features))
        x = self.standardizer(x)
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        return torch.cat([x, indicators], dim=1) if self.missing_indicators else x

    def score_standardized(self, x: torch.Tensor) -> torch.Tensor:
        """Scores preprocessed ``(N, n_inputs)`` inputs as ``(N,)``."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, F)`` features as ``(N,)``.

        Args:
            features: Floating tensor of shape ``(N, n_features)``, ``NaN`` for a missing value; it is cast
                to the model's dtype.

        Returns:
            Scores of shape ``(N,)``.
        """
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor; got {type(features).__name__}")
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features must have shape (N, {self.n_features}); got {tuple(features.shape)}")
        if not features.is_floating_point():
            raise TypeError(f"features must be a floating tensor; got dtype {features.dtype}")
        return self.score_standardized(self.preprocess(features.to(self.standardizer.mean.dtype)))


class LinearScorer(Scorer):
    """Linear scorer ``w . preprocess(x) + b``.

    Args:
        n_features: Number of input features.
        bias: Learn a bias. Pairwise losses are shift-invariant, so it only matters for
            pointwise objectives; it is on by default so the same class serves both.
        **options: ``transform``, ``missing_indicators``, ``missing_fill``, ``input_noise`` of :class:`Scorer`.
    """

    def __init__(self, n_features: int, *, bias: bool = True, **options: Any) -> None:
        super().__init__(n_features, **options)
        self.linear = nn.Linear(self.n_inputs, 1, bias=bias)

    def score_standardized(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLPScorer(Scorer):
    """Multi-layer perceptron scorer.

    Args:
        n_features: Number of input features.
        hidden: Widths of the hidden layers (may be empty: then it is a linear scorer).
        dropout: Dropout probability after each hidden activation, in ``[0, 1)``.
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        **options: ``transform``, ``missing_indicators``, ``missing_fill``, ``input_noise`` of :class:`Scorer`.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        activation: str = "relu",
        **options: Any,
    ) -> None:
        super().__init__(n_features, **options)
        if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of ints; got {type(hidden).__name__} {hidden!r}")
        for width in hidden:
            if not isinstance(width, int | np.integer) or isinstance(width, bool) or width < 1:
                raise ValueError(f"hidden must hold positive ints; got {list(hidden)!r}")
        if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}")
        self.hidden = tuple(int(w) for w in hidden)
        layers: list[nn.Module] = []
        width_in = self.n_inputs
        for width in self.hidden:
            layers += [nn.Linear(width_in, width), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def score_standardized(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


#: Model names accepted by :func:`make_model`.
MODELS: dict[str, type[Scorer]] = {"linear": LinearScorer, "mlp": MLPScorer}


def make_model(name: str, n_features: int, **kwargs: Any) -> Scorer:
    """Builds a scorer by name.

    Args:
        name: A key of :data:`MODELS` (``"linear"`` or ``"mlp"``).
        n_features: Number of input features.
        **kwargs: Constructor arguments of the chosen class (e.g. ``hidden``, ``dropout``).

    Returns:
        The (untrained, unstandardised) scorer.

    Raises:
        ValueError: If ``name`` is unknown.
        TypeError: If ``kwargs`` holds an argument the class does not take.

    Example:
        >>> make_model("mlp", 8, hidden=(4,))(torch.zeros(3, 8)).shape
        torch.Size([3])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str; got {type(name).__name__} {name!r}")
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None
    try:
        return cls(n_features, **kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TypeError(f"make_model({name!r}): {exc}") from None
        raise


@torch.no_grad()
def score_items(model: Scorer, features: np.ndarray) -> np.ndarray:
    """Scores ``(N, F)`` features with ``model`` in eval mode, in chunks, on the model's device.

    Returns:
        ``(N,)`` float64 scores.
    """
    model.eval()
    device = model.standardizer.mean.device
    out = [
        model(torch.from_numpy(features[i : i + _SCORE_CHUNK]).to(device)).double().cpu().numpy()
        for i in range(0, features.shape[0], _SCORE_CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros(0)
