"""Data-parallel training: 2 processes under torchrun (gloo, 127.0.0.1, DDP) against 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import dump_svmlight_file
from torch.nn.parallel import DistributedDataParallel
from typer.testing import CliRunner

from pairloss.cli import app
from pairloss.ltr import make_toy_dataset
from pairloss.ltr.distributed import ProcessGroup, SingleProcess, join_from_env, launched_by_torchrun
from pairloss.ltr.models import LinearScorer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

# Uneven split on purpose: 16 sessions per global batch are dealt to 2 ranks, and the last batch of an
# epoch holds fewer; the L2 penalty checks that it is added exactly once.
ARGS = ["--model", "linear", "--epochs", "2", "--batch-size", "16", "--l2", "1e-3", "--patience", "0", "--no-progress"]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node N -m pairloss ARGS`` on 127.0.0.1, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "pairloss", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    two = torchrun(["train", *ARGS, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count("Trained linear / pairwise_logistic on 2 processes") == 1  # rank 0 alone prints
    assert "NDCG@10" in two.stdout

    one = CliRunner().invoke(app, ["train", *ARGS, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output

    files = {p.name for p in (tmp_path / "two").iterdir()}
    assert files == {"best.pt", "checkpoint.pt", "metrics.json", "curves.png"}  # one writer, no temporaries
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["valid"] == pytest.approx(ra["valid"], abs=1e-4)
    assert b["test"] == pytest.approx(a["test"], abs=1e-4)
    sa = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model_state"]
    sb = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model_state"]
    # The bias gets no gradient from a pairwise loss (scores are compared within sessions), only
    # rounding noise that Adam normalises into steps of size lr; it does not change any ranking.
    for key in ("standardizer.mean", "standardizer.std", "linear.weight"):
        torch.testing.assert_close(sb[key], sa[key], rtol=1e-4, atol=1e-6)


def test_a_rank_without_sessions_still_joins_every_step(tmp_path: Path) -> None:
    # 3 ranks and batches of 2 sessions: rank 2 never gets a session, yet DDP's all-reduce needs it in
    # every backward pass; a rank that skipped one would hang the others until the timeout.
    train, _, _ = make_toy_dataset(n_queries=60, docs_per_query=8, n_features=5, seed=2)
    data = tmp_path / "small.svm"
    dump_svmlight_file(train.features, train.labels, str(data), zero_based=True, query_id=train.qids)
    args = ["train", "--data", str(data), "--epochs", "1", "--batch-size", "2", "--no-progress"]
    three = torchrun([*args, "--out", str(tmp_path / "3")], tmp_path, nproc=3)
    assert three.returncode == 0, three.stdout[-3000:] + three.stderr[-3000:]
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "1")])
    assert one.exit_code == 0, one.output
    a = json.loads((tmp_path / "1" / "metrics.json").read_text())
    b = json.loads((tmp_path / "3" / "metrics.json").read_text())
    assert b["world_size"] == 3
    assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"], rel=1e-5)


def test_multi_process_training_is_ddp(tmp_path: Path, monkeypatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_torchrun()
    assert isinstance(join_from_env("cpu"), SingleProcess) and not isinstance(join_from_env("cpu"), ProcessGroup)
    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        group = ProcessGroup(torch.device("cpu"), 0, 2)  # what join_from_env gives a rank of two
        model = LinearScorer(3)
        assert isinstance(group.wrap(model), DistributedDataParallel)
        assert group.is_writer and not ProcessGroup(torch.device("cpu"), 1, 2).is_writer
    finally:
        torch.distributed.destroy_process_group()
