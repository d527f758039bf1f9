"""kill -9 during training, 20 times, then --resume: checkpoints stay whole and the run ends as if never killed.

Each child process runs ``pairloss train`` (``--resume`` once a checkpoint exists) and is killed with SIGKILL
at a random point of an epoch: after its checkpoint has advanced by one epoch, at a random fraction of an
epoch's duration later, so kills land mid-epoch and now and then in the middle of a checkpoint write.
Children are forked from a forkserver that imported pairloss once, so 20 starts cost seconds, not minutes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import dump_svmlight_file

from pairloss.cli import main
from pairloss.ltr import make_toy_dataset
from pairloss.ltr.checkpoint import read_checkpoint

pytestmark = pytest.mark.kill9
KILLS = 20
BUDGET = "1000"  # epochs: never reached while killing
# Imported once in the forkserver so that each child starts in well under a second: Adam's constructor
# imports torch._dynamo and the curves callback matplotlib, seconds each on a busy machine.
PRELOAD = ["pairloss.cli", "pairloss.ltr", "pairloss.nn", "torch._dynamo", "sklearn.datasets", "matplotlib.figure",
           "matplotlib.backends.backend_agg"]


def _epoch(path: Path) -> int:
    return int(read_checkpoint(path)["epoch"]) if path.is_file() else 0


def _quiet_main(argv: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    main(argv)


def _run(ctx, argv: list[str]) -> None:
    child = ctx.Process(target=_quiet_main, args=(argv,))
    child.start()
    child.join(300)
    assert child.exitcode == 0, argv


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _wait_for_a_new_checkpoint(path: Path, child, timeout: float = 120.0) -> None:
    """Returns as soon as ``path`` is replaced (an epoch just finished); a stat per poll, no read."""
    start, old = time.monotonic(), _stamp(path)
    while _stamp(path) == old:
        assert child.is_alive(), f"training exited early (code {child.exitcode})"
        assert time.monotonic() - start < timeout, "no epoch finished in time"
        time.sleep(0.002)


def test_kill9_resume_loop(tmp_path: Path) -> None:
    train, _, _ = make_toy_dataset(n_queries=400, docs_per_query=16, n_features=16, seed=5)
    data = tmp_path / "train.svm"
    dump_svmlight_file(train.features, train.labels, str(data), zero_based=True, query_id=train.qids)
    common = ["train", "--data", str(data), "--patience", "0", "--model", "mlp", "--hidden", "16", "--dropout", "0.1",
              "--batch-size", "2", "--no-progress"]  # epochs of ~0.2 s: long against a loaded scheduler's slices
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)

    out, rng = tmp_path / "killed", np.random.default_rng(0)
    ckpt, epoch_seconds, mid_epoch = out / "checkpoint.pt", 0.2, 0
    for _ in range(KILLS):
        before = _epoch(ckpt)
        resume = ["train", "--resume", "--out", str(out), "--no-progress"]
        argv = [*common, "--epochs", BUDGET, "--out", str(out)] if before == 0 else resume
        child = ctx.Process(target=_quiet_main, args=(argv,))
        child.start()
        _wait_for_a_new_checkpoint(ckpt, child)
        time.sleep(rng.uniform(0.02, 0.5) * epoch_seconds)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL, "the child finished before the kill"
        epoch = _epoch(ckpt)  # read_checkpoint raises if the file were torn
        assert epoch > before
        mid_epoch += epoch == before + 1  # killed before the next epoch's checkpoint
        history = read_checkpoint(ckpt)["history"]
        epoch_seconds = float(np.median([r["seconds"] for r in history]))

    assert mid_epoch >= KILLS // 2, f"only {mid_epoch} of {KILLS} kills landed inside an epoch"
    # One more epoch after the last kill, and the same number of epochs without any kill: equal, bit for bit.
    epochs = str(_epoch(ckpt) + 1)
    _run(ctx, ["train", "--resume", "--out", str(out), "--epochs", epochs, "--no-progress"])
    _run(ctx, [*common, "--epochs", epochs, "--out", str(tmp_path / "straight")])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["epochs_run"] == int(epochs) and strip(b["history"]) == strip(a["history"])
    last_a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model_state"]
    last_b = torch.load(ckpt, weights_only=True)["model_state"]
    for key, value in last_a.items():
        assert torch.equal(last_b[key], value), key
