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
EPOCHS = 2 * KILLS + 5  # a kill near an epoch's end may let one more epoch finish


def _epoch(path: Path) -> int:
    return int(read_checkpoint(path)["epoch"]) if path.is_file() else 0


def _quiet_main(argv: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    main(argv)


def _wait_for_epoch(path: Path, above: int, child, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while _epoch(path) <= above:
        assert child.is_alive() or _epoch(path) > above, f"training exited early (code {child.exitcode})"
        assert time.monotonic() - start < timeout, "no epoch finished in time"
        time.sleep(0.01)


def test_kill9_resume_loop(tmp_path: Path) -> None:
    train, _, _ = make_toy_dataset(n_queries=200, docs_per_query=16, n_features=16, seed=5)
    data = tmp_path / "train.svm"
    dump_svmlight_file(train.features, train.labels, str(data), zero_based=True, query_id=train.qids)
    common = ["train", "--data", str(data), "--epochs", str(EPOCHS), "--patience", "0", "--model", "mlp",
              "--hidden", "16", "--dropout", "0.1", "--no-progress"]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pairloss.cli", "pairloss.ltr", "pairloss.nn"])

    straight = ctx.Process(target=_quiet_main, args=([*common, "--out", str(tmp_path / "straight")],))
    straight.start()
    straight.join(300)
    assert straight.exitcode == 0

    out, rng = tmp_path / "killed", np.random.default_rng(0)
    ckpt, epoch_seconds, mid_epoch = out / "checkpoint.pt", 0.2, 0
    for _ in range(KILLS):
        before = _epoch(ckpt)
        resume = ["train", "--resume", "--out", str(out), "--no-progress"]
        argv = [*common, "--out", str(out)] if before == 0 else resume
        child = ctx.Process(target=_quiet_main, args=(argv,))
        child.start()
        _wait_for_epoch(ckpt, before, child)
        time.sleep(rng.uniform(0.05, 0.95) * epoch_seconds)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL, "the child finished before the kill"
        epoch = _epoch(ckpt)  # read_checkpoint raises if the file were torn
        assert before < epoch < EPOCHS
        mid_epoch += epoch == before + 1  # killed before the next epoch's checkpoint
        history = read_checkpoint(ckpt)["history"]
        epoch_seconds = 1.3 * float(np.median([r["seconds"] for r in history]))  # + validation and writes

    assert mid_epoch >= KILLS // 2, f"only {mid_epoch} of {KILLS} kills landed inside an epoch"
    final = ctx.Process(target=_quiet_main, args=(["train", "--resume", "--out", str(out), "--no-progress"],))
    final.start()
    final.join(300)
    assert final.exitcode == 0
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["epochs_run"] == EPOCHS and strip(b["history"]) == strip(a["history"])
    last_a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model_state"]
    last_b = torch.load(ckpt, weights_only=True)["model_state"]
    for key, value in last_a.items():
        assert torch.equal(last_b[key], value), key
