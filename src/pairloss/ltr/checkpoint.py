"""Files of a run: atomic writes, the checkpoint format, the resume check, loading a trained scorer.

``checkpoint.pt`` holds everything needed to continue a run exactly (format :data:`FORMAT`): the config,
what the run was started with (data paths), the model and optimizer state after the last finished
epoch, the early-stopping state, the best epoch's weights and the history. ``best.pt`` holds the best
epoch's weights alone. Both are written through a temporary file and ``os.replace``, so a crash or
``kill -9`` at any moment leaves the previous file whole; they are read with ``weights_only=True``, so
a foreign file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RESUMABLE_FIELDS, TrainConfig
from .data import RankingDataset
from .models import Scorer, make_model

__all__ = [
    "FORMAT",
    "atomic_write",
    "check_resumable",
    "fingerprint",
    "json_safe",
    "load_model",
    "read_checkpoint",
    "read_epoch",
    "save",
    "stored_config",
    "write_json",
]

#: Version of the checkpoint layout. Format 3 added the scorer's missing-value buffers and the
#: preprocessing fields of the config; format 2 files still load as models (see :func:`stored_config`).
FORMAT = 3
# What a format-2 run did, whatever today's defaults are: no transform, no indicators, no noise.
_FORMAT_2_FIELDS = {"transform": "none", "missing_indicators": False, "missing_fill": "mean", "input_noise": 0.0}
_CHECKPOINT_KEYS = ("format", "epoch", "config", "model_state", "optimizer_state", "best_state", "best_epoch",
                    "best_metric", "bad_epochs", "history", "train_fingerprint", "run")


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Writes through a temporary file in the same directory, then renames it over ``path``."""
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


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (strict JSON has no NaN) and tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Writes ``value`` as indented strict JSON, atomically."""
    text = json.dumps(json_safe(value), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def save(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` of ``state``, atomically."""
    atomic_write(path, lambda f: torch.save(dict(state), f))


def fingerprint(data: RankingDataset) -> str:
    """A cheap identity of a training set for the resume check: sizes, labels and a sample of rows."""
    h = hashlib.sha256()
    h.update(np.asarray(data.features.shape, dtype=np.int64).tobytes())
    h.update(data.lengths.tobytes())
    h.update(data.labels.tobytes())
    h.update(data.features[:: max(1, data.n_items // 1024)].tobytes())
    return h.hexdigest()


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: not a checkpoint written by pairloss")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors alike: the file is not (or no longer) ours
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a checkpoint written by pairloss, or is damaged ({first_line})") from None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The training state in ``checkpoint.pt``; ``ValueError`` naming the file if it is not one."""
    state = _read(path)
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a checkpoint written by pairloss")
    if state["format"] != FORMAT:
        raise ValueError(f"{path} has checkpoint format {state['format']!r}; this pairloss reads format {FORMAT}")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} is a damaged checkpoint: it lacks {', '.join(missing)}")
    return state


def stored_config(state: Mapping[str, Any], path: Path) -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint was written with (fields it lacks take their defaults).

    A format-2 checkpoint predates the preprocessing fields: it gets the values its run used.
    """
    legacy = _FORMAT_2_FIELDS if state.get("format", FORMAT) == 2 else {}
    try:
        return TrainConfig.from_dict({**legacy, **state["config"]})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} holds an invalid training config: {exc}") from None


def check_resumable(state: Mapping[str, Any], config: TrainConfig, train_fingerprint: str, path: Path) -> None:
    """Raises ``ValueError`` unless ``config`` and the training data continue the run in ``state``.

    Only :data:`pairloss.ltr.config.RESUMABLE_FIELDS` may differ from the stored config.
    """
    saved = stored_config(state, path)
    differing = [name for name in saved.differences(config) if name not in RESUMABLE_FIELDS]
    if differing:
        changes = ", ".join(f"{k}: {getattr(saved, k)!r} -> {getattr(config, k)!r}" for k in differing)
        raise ValueError(
            f"cannot resume from {path}: config differs in {changes} (only {' and '.join(RESUMABLE_FIELDS)} "
            "may change when resuming)"
        )
    if state["train_fingerprint"] != train_fingerprint:
        raise ValueError(f"cannot resume from {path}: the training data differs from the data the run was trained on")


def read_epoch(path: Path) -> int | None:
    """The last finished epoch recorded in ``path``, or ``None`` if there is no readable checkpoint."""
    try:
        return int(read_checkpoint(path)["epoch"])
    except (OSError, ValueError):
        return None


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Scorer:
    """Rebuilds a trained scorer from ``best.pt`` or ``checkpoint.pt``, in eval mode, standardiser included."""
    p = Path(os.fspath(path))
    state = _read(p)
    if not isinstance(state, dict) or "config" not in state or "model_state" not in state:
        raise ValueError(f"{p} is not a checkpoint written by pairloss")
    config = stored_config(state, p)
    try:
        n_features = int(state["model_state"]["standardizer.mean"].shape[0])
        model = make_model(config.model, n_features, **config.model_kwargs())
        # format 2 had no missing-value buffers: its files were read with absent features as 0
        model_state = {"missing.fill": torch.zeros(n_features), "missing.seen": torch.zeros(n_features),
                       **state["model_state"]}
        model.load_state_dict(model_state)
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:
            raise ValueError(f"it holds NaN or infinite weights in {', '.join(bad)}")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p} is a damaged checkpoint: {first_line}") from None
    return model.to(map_location).eval()
