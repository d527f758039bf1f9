"""Data-parallel training: 2 processes under torchrun (gloo, 127.0.0.1) against 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pairloss.cli import app
from pairloss.ltr.distributed import current_context, launched_by_torchrun

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

# Uneven split on purpose: 16 sessions per global batch are dealt to ranks by session index, so a
# rank gets anywhere from 0 to 16 of them; the L2 penalty checks that it is added exactly once.
ARGS = ["--epochs", "2", "--batch-size", "16", "--l2", "1e-3", "--patience", "0", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "pairloss.ltr.distributed", *ARGS, "--out", str(tmp_path / "two")]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
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
    # Both ranks ended every epoch bit-identical: train() checks that across ranks, else it raises.


def test_outside_a_process_group_nothing_is_distributed(monkeypatch) -> None:
    assert current_context() is None
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_torchrun()
