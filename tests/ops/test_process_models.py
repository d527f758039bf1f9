"""Process models (issue: fork safety and threading): a child forked after the parent ran the parallel
kernels, torch DataLoader workers, concurrent threads, and the GNU OpenMP layer's fork guard.

Every operator runs above its parallel threshold in the parent first, so the threading layer is live
when the children start.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numba
import numpy as np
import pytest

import pairloss
from pairloss import _backends

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
ROOT = Path(__file__).resolve().parents[2]


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = np.array([900, 300, 5, 7])  # one session large enough for the parallel pair loops
    n = int(lengths.sum())
    return {"scores": rng.standard_normal(n).astype(np.float32), "labels": rng.integers(0, 4, n),
            "lengths": lengths, "g": np.ones(lengths.size, np.float32),
            "x1": rng.standard_normal(1 << 16), "x2": rng.standard_normal(1 << 16),
            "y": rng.choice(np.array([-1, 1]), 1 << 16), "big": rng.standard_normal(1 << 19)}


def _every_op(d: dict[str, np.ndarray]) -> list[np.ndarray]:
    s, lab, lens, g = d["scores"], d["labels"], d["lengths"], d["g"]
    return [pairloss.pairwise_loss(s, lab, lens), pairloss.pairwise_loss_gradient(s, lab, g, lens),
            pairloss.pairwise_hinge_loss(s, lab, lens), pairloss.pairwise_hinge_loss_gradient(s, lab, g, lens),
            pairloss.lambdarank_loss(s, lab, lens), pairloss.lambdarank_loss_gradient(s, lab, g, lens),
            pairloss.margin_ranking_criterion(d["x1"], d["x2"], d["y"]),
            *pairloss.margin_ranking_criterion_gradient(d["x1"], d["x2"], d["y"], d["x1"]),
            pairloss.negative(d["big"]), pairloss.negate_gradient(d["big"])]


def _assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to the last bits: a parallel kernel and its serial twin are separate compilations of the same
    loops, and the pair loops allow reassociation (fastmath), so a row's sum may round differently."""
    assert a.dtype == b.dtype and a.shape == b.shape
    eps = float(np.finfo(a.dtype).eps) if a.dtype.kind == "f" else 0.0
    np.testing.assert_allclose(a, b, rtol=16 * eps, atol=16 * eps * float(np.max(np.abs(a), initial=0.0)))


def _child(queue: multiprocessing.Queue) -> None:  # pragma: no cover - runs in the forked child
    queue.put(_every_op(_inputs()))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the parallel kernels need two threads")
def test_forked_child_runs_every_op_after_the_parent_ran_the_parallel_paths() -> None:
    parent = _every_op(_inputs())
    assert _backends._state["launched"], "the parent should have launched parallel kernels"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    results = queue.get(timeout=240)
    child.join(timeout=60)
    assert child.exitcode == 0
    for a, b in zip(parent, results, strict=True):
        _assert_same(a, b)


def test_dataloader_workers_run_every_op() -> None:
    import torch

    import pairloss.nn.functional as PF

    _every_op(_inputs())  # the parent's parallel paths first

    class Sessions(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(index)
            scores = torch.randn(300, generator=g, requires_grad=True)
            labels = torch.randint(0, 3, (300,), generator=g)
            lengths = torch.tensor([200, 100])
            loss = (PF.pairwise_logistic_loss(scores, labels, lengths) + PF.pairwise_hinge_loss(scores, labels, lengths)
                    + PF.lambdarank_loss(scores, labels, lengths)
                    + PF.margin_ranking_loss(scores[:150], scores[150:], torch.ones(150)))
            loss.backward()
            return torch.stack([loss.detach(), scores.grad.abs().sum(), PF.negative(scores).sum().detach()])

    in_parent = torch.stack([Sessions()[i] for i in range(4)])  # also warms torch's first-call imports up
    loader = torch.utils.data.DataLoader(Sessions(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    in_workers = torch.stack(list(loader))
    torch.testing.assert_close(in_workers, in_parent)


def test_concurrent_threads_get_the_same_results() -> None:
    d = _inputs()
    want = _every_op(d)
    got: list[list[np.ndarray]] = []
    threads = [threading.Thread(target=lambda: got.append(_every_op(d))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3
    for results in got:
        for a, b in zip(want, results, strict=True):
            _assert_same(a, b)


_OPENMP_FORK = textwrap.dedent("""
    import multiprocessing, numpy as np, numba
    import pairloss
    rng = np.random.default_rng(0)
    s, lab, lens = rng.standard_normal(1200), rng.integers(0, 4, 1200), np.array([900, 300])
    want = pairloss.pairwise_loss_gradient(s, lab, np.ones(2), lens)
    print("layer", numba.threading_layer())
    def child(q):
        q.put(pairloss.pairwise_loss_gradient(s, lab, np.ones(2), lens))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    got = q.get(timeout=120)
    p.join()
    # the child runs the serial twin (see _assert_same)
    assert p.exitcode == 0 and np.allclose(want, got, rtol=1e-13, atol=1e-16)
    print("fork-ok")
""")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the parallel kernels need two threads")
def test_the_fork_guard_keeps_gnu_openmp_children_alive() -> None:
    # GNU OpenMP kills a forked child that enters a parallel region; the guard makes it run serial twins
    env = dict(os.environ, NUMBA_THREADING_LAYER="omp", PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", _OPENMP_FORK], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    if "layer" not in done.stdout and "No threading layer" in done.stderr:
        pytest.skip("no OpenMP threading layer on this machine")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "fork-ok" in done.stdout


def test_cores_free_for_counts_the_other_runnable_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    monkeypatch.setattr(_backends, "_runnable_tasks", lambda: 1)  # the caller alone
    assert _backends.cores_free_for(cores) and not _backends.cores_free_for(cores + 1)
    monkeypatch.setattr(_backends, "_runnable_tasks", lambda: 2)  # one other task holds a core
    assert not _backends.cores_free_for(cores) and _backends.cores_free_for(cores - 1)
    monkeypatch.setattr(_backends, "_runnable_tasks", lambda: None)  # no count to read: as if idle
    assert _backends.cores_free_for(cores + 1)


def test_the_runnable_count_is_read_where_linux_has_it() -> None:
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg on this system")
    count = _backends._runnable_tasks()
    assert count is not None and count >= 1  # this thread is running

