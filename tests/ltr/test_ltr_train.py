"""Tests of pairloss.ltr.train (the fit loop, callbacks, checkpoints) with pure-torch stand-in losses.

The real losses live in pairloss.nn.functional; these stand-ins have the same signatures and are injected
through ``loss_fn`` so the training loop is tested on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pairloss.nn.functional as PF
from pairloss.ltr import TrainConfig, load_model, make_toy_dataset, train
from pairloss.ltr.config import LOSSES
from pairloss.ltr.data import RankingDataset
from pairloss.ltr.metrics import ndcg_at
from pairloss.ltr.objectives import LOSS_FUNCTIONS


def _padded(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(torch.split(values, lengths.tolist())), batch_first=True)


def _session_pair_loss(scores, labels, lengths, pair_loss, reduction):
    if lengths is None:
        lengths = torch.tensor([scores.shape[0]])
    s, y = _padded(scores, lengths), _padded(labels, lengths)
    m = s.shape[1]
    valid = torch.arange(m)[None, :] < lengths[:, None]
    pairs = (y[:, :, None] > y[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    per_pair = pair_loss(s[:, :, None] - s[:, None, :]) * pairs
    per_session = per_pair.sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)
    return per_session.mean() if reduction == "mean" else per_session


def ranknet_standin(scores, labels, lengths=None, reduction="mean"):
    """Per-session mean RankNet loss over label-discordant pairs (padded n x n)."""
    return _session_pair_loss(scores, labels, lengths, lambda d: F.softplus(-d), reduction)


def hinge_standin(scores, labels, lengths=None, margin=1.0, reduction="mean"):
    return _session_pair_loss(scores, labels, lengths, lambda d: F.relu(margin - d), reduction)


STANDINS = {
    "pairwise_logistic": ranknet_standin,
    "pairwise_hinge": hinge_standin,
    "margin_ranking": F.margin_ranking_loss,  # pairloss's version is a drop-in for torch's
}


@pytest.fixture(scope="module")
def toy() -> tuple[RankingDataset, RankingDataset, RankingDataset]:
    return make_toy_dataset(n_queries=150, docs_per_query=12, n_features=8, seed=1)


def run(cfg: TrainConfig, toy, out: Path, **kw):
    train_data, valid_data, _ = toy
    kw.setdefault("loss_fn", STANDINS[cfg.loss])
    kw.setdefault("progress", False)
    return train(cfg, train_data, valid_data, out, **kw)


def test_training_learns_and_writes_outputs(toy, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=6, lr=0.05, patience=None, sessions_per_batch=16)
    before = torch.get_rng_state()
    result = run(cfg, toy, tmp_path / "run")
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream is untouched
    _, valid, test = toy
    assert result.epochs_run == 6 and not result.stopped_early and len(result.history) == 6
    curve = [r["valid"]["ndcg@10"] for r in result.history]
    assert result.best_metric == max(curve) and curve[result.best_epoch - 1] == result.best_metric
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with torch.no_grad():
        test_scores = result.model(torch.from_numpy(test.features)).numpy()
    assert ndcg_at(test_scores, test.labels, test.lengths, 10, exclude_all_equal=True) > 0.8
    for path in (result.checkpoint_path, result.best_path, result.metrics_path, result.curves_path):
        assert path.is_file()
    assert result.curves_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.metrics_path.read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["config"]["lr"] == 0.05
    assert summary["train_sessions"]["skipped_without_pairs"] > 0  # toy data has single/tied sessions
    assert [r["epoch"] for r in summary["history"]] == list(range(1, 7))
    assert not list(result.out_dir.glob("*.tmp"))  # atomic writes leave no temporaries
    reloaded = load_model(result.best_path)
    x = torch.from_numpy(valid.features)
    torch.testing.assert_close(reloaded(x), result.model(x))


def _strip_times(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(model="mlp", hidden=(16,), dropout=0.3, epochs=5, patience=None, lr=0.02),
        TrainConfig(loss="margin_ranking", pairs_per_session=5, epochs=5, patience=2, lr=0.02),
    ],
    ids=["mlp-dropout", "sampled-pairs"],
)
def test_resume_matches_uninterrupted_run(toy, tmp_path: Path, cfg: TrainConfig) -> None:
    straight = run(cfg, toy, tmp_path / "straight")

    def crash_after_two(epoch: int, record: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, toy, tmp_path / "resumed", on_epoch_end=crash_after_two)
    resumed = run(cfg, toy, tmp_path / "resumed", resume=True)
    assert resumed.resumed_from_epoch == 2
    assert _strip_times(resumed.history) == _strip_times(straight.history)
    assert resumed.best_epoch == straight.best_epoch and resumed.epochs_run == straight.epochs_run
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    last = torch.load(resumed.checkpoint_path, weights_only=True)["model_state"]
    for key, value in torch.load(straight.checkpoint_path, weights_only=True)["model_state"].items():
        assert torch.equal(last[key], value), key


def test_resume_can_extend_epochs(toy, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=4, patience=None)
    straight = run(cfg, toy, tmp_path / "a")
    run(TrainConfig(epochs=2, patience=None), toy, tmp_path / "b")
    extended = run(cfg, toy, tmp_path / "b", resume=True)
    assert _strip_times(extended.history) == _strip_times(straight.history)
    again = run(cfg, toy, tmp_path / "b", resume=True)  # already finished: nothing left to run
    assert again.epochs_run == 4 and _strip_times(again.history) == _strip_times(straight.history)


def test_resume_rejects_other_config_or_data(toy, tmp_path: Path) -> None:
    run(TrainConfig(epochs=1), toy, tmp_path / "r")
    with pytest.raises(ValueError, match=r"config differs in lr: 0\.001 -> 0\.5"):
        run(TrainConfig(epochs=2, lr=0.5), toy, tmp_path / "r", resume=True)
    other = make_toy_dataset(n_queries=150, docs_per_query=12, n_features=8, seed=2)
    with pytest.raises(ValueError, match="the training data differs"):
        run(TrainConfig(epochs=2), other, tmp_path / "r", resume=True)
    fresh = run(TrainConfig(epochs=1, lr=0.5), toy, tmp_path / "r")  # resume=False overwrites
    assert fresh.resumed_from_epoch is None


def test_early_stopping(toy, tmp_path: Path) -> None:
    # min_delta=1 makes every epoch after the first a non-improvement.
    result = run(TrainConfig(epochs=10, patience=2, min_delta=1.0), toy, tmp_path / "es")
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    best = torch.load(result.best_path, weights_only=True)
    assert best["epoch"] == 1
    for key, value in best["model_state"].items():
        assert torch.equal(result.model.state_dict()[key], value)


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(loss="pairwise_hinge", optimizer="sgd", momentum=0.9, lr=0.01, l1=1e-3, l2=1e-3, epochs=2),
        TrainConfig(loss="margin_ranking", max_items_per_batch=60, epochs=2, margin=0.5),
        TrainConfig(model="mlp", hidden=(8, 4), epochs=2, standardize=False, metrics=("pairwise_accuracy",)),
    ],
    ids=["hinge-sgd-penalties", "margin-item-batches", "mlp-unstandardized"],
)
def test_other_options_train(toy, tmp_path: Path, cfg: TrainConfig) -> None:
    result = run(cfg, toy, tmp_path / "o")
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    assert set(result.best_valid) == {cfg.eval_metric, *cfg.metrics}


def test_without_validation_keeps_last_epoch(toy, tmp_path: Path) -> None:
    train_data, _, _ = toy
    result = train(TrainConfig(epochs=2), train_data, None, tmp_path / "nv", progress=False, loss_fn=ranknet_standin)
    assert result.best_epoch == 2 and result.best_metric is None and result.history[-1]["valid"] == {}
    assert result.curves_path.is_file()


def test_progress_bar_runs(toy, tmp_path: Path, capsys) -> None:
    run(TrainConfig(epochs=1), toy, tmp_path / "p", progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_losses_are_the_nn_functional_ones_and_can_be_replaced(toy, tmp_path: Path) -> None:
    assert set(LOSS_FUNCTIONS) == set(LOSSES) == {"pairwise_logistic", "pairwise_hinge", "margin_ranking",
                                                  "lambdarank"}
    assert LOSS_FUNCTIONS["lambdarank"] is PF.lambdarank_loss
    assert LOSS_FUNCTIONS["pairwise_logistic"] is PF.pairwise_logistic_loss
    assert LOSS_FUNCTIONS["pairwise_hinge"] is PF.pairwise_hinge_loss
    assert LOSS_FUNCTIONS["margin_ranking"] is PF.margin_ranking_loss
    calls = []

    def logistic(*args, **kwargs):
        calls.append(kwargs)
        return ranknet_standin(*args, **kwargs)

    train_data, valid_data, _ = toy
    train(TrainConfig(loss="pairwise_logistic", epochs=1), train_data, valid_data, tmp_path / "own", progress=False,
          loss_fn=logistic)
    assert calls and calls[0] == {"reduction": "mean"}


def test_resume_without_a_checkpoint_is_an_error(toy, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds no checkpoint\.pt"):
        run(TrainConfig(epochs=1), toy, tmp_path / "empty", resume=True)


def test_bad_training_inputs(toy, tmp_path: Path) -> None:
    train_data, valid_data, _ = toy
    cfg = TrainConfig(epochs=1)
    kw = {"progress": False, "loss_fn": ranknet_standin}
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train({"epochs": 1}, train_data, valid_data, tmp_path, **kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_data must be a RankingDataset"):
        train(cfg, train_data.features, valid_data, tmp_path, **kw)  # type: ignore[arg-type]
    narrow = RankingDataset(valid_data.features[:, :3], valid_data.labels, valid_data.qids, valid_data.lengths)
    with pytest.raises(ValueError, match="valid_data has 3 features but train_data has 8"):
        train(cfg, train_data, narrow, tmp_path, **kw)
    flat = RankingDataset(train_data.features, np.zeros(train_data.n_items), train_data.qids, train_data.lengths)
    with pytest.raises(ValueError, match="no session with two different labels"):
        train(cfg, flat, valid_data, tmp_path, **kw)
    with pytest.raises(ValueError, match="valid_data has no session on which ndcg@10 is defined"):
        train(cfg, train_data, flat, tmp_path, **kw)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        train(cfg, train_data, valid_data, tmp_path, progress=False, loss_fn="ranknet")  # type: ignore[arg-type]
    with pytest.raises(FloatingPointError, match="epoch 1, batch 0"):
        train(cfg, train_data, valid_data, tmp_path, progress=False, loss_fn=lambda s, *a, **k: s.sum() * np.nan)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"loss": "listnet"}, ValueError, "loss must be one of pairwise_logistic"),
        ({"model": "tree"}, ValueError, "model must be one of linear, mlp"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of adam, sgd"),
        ({"lr": 0}, ValueError, "lr must be > 0"),
        ({"lr": "fast"}, TypeError, "lr must be a finite number"),
        ({"l2": -1.0}, ValueError, "l2 must be >= 0"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
        ({"epochs": 0}, ValueError, "epochs must be a positive int"),
        ({"epochs": 2.0}, TypeError, "epochs must be a positive int"),
        ({"patience": 0}, ValueError, "patience must be a positive int or None"),
        ({"hidden": (8, -1)}, ValueError, "hidden must be a tuple of positive ints"),
        ({"eval_metric": "auc"}, ValueError, "unknown metric 'auc'"),
        ({"metrics": ("ndcg@10", "p@5")}, ValueError, "unknown metric 'p@5'"),
        ({"standardize": 1}, TypeError, "standardize must be a bool"),
        ({"gain": "log"}, ValueError, "gain must be one of exp2, linear"),
        ({"device": "gpu0"}, ValueError, "device must be a torch device string"),
    ],
)
def test_config_validation(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        TrainConfig(**kwargs)


def test_config_round_trip() -> None:
    cfg = TrainConfig(
        model="mlp", hidden=(4, 2), metrics=("map",), patience=None, lr=np.float64(0.1), epochs=np.int64(3)
    )
    assert type(cfg.lr) is float and type(cfg.epochs) is int
    data = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_linear_gain_and_checkpoints_from_before_the_gain_field(toy, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, gain="linear", patience=None)
    first = run(cfg, toy, tmp_path / "g")
    _, valid, _ = toy
    with torch.no_grad():
        scores = first.model(torch.from_numpy(valid.features)).numpy()
    assert first.best_metric == pytest.approx(
        ndcg_at(scores, valid.labels, valid.lengths, 10, gain="linear", exclude_all_equal=True)
    )
    # A checkpoint written before TrainConfig had `gain` resumes as gain="exp2" (the default).
    plain = run(TrainConfig(epochs=1, patience=None), toy, tmp_path / "old")
    ckpt = torch.load(plain.checkpoint_path, weights_only=True)
    del ckpt["config"]["gain"]
    torch.save(ckpt, plain.checkpoint_path)
    resumed = run(TrainConfig(epochs=2, patience=None), toy, tmp_path / "old", resume=True)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 2
    with pytest.raises(ValueError, match="gain: 'exp2' -> 'linear'"):
        run(TrainConfig(epochs=3, patience=None, gain="linear"), toy, tmp_path / "old", resume=True)
