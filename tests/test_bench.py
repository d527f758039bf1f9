"""The benchmark harness runs and its equality checks hold (no timing is asserted: that is BENCHMARKS.md's job)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pairloss.bench import peers, suite
from pairloss.bench.timing import busy_core, interleaved, peak_extra_mib

torch = pytest.importorskip("torch")

TINY = [(10, 6), (40, 2)]


def _by_case(rows: list[suite.BenchRow]) -> dict[tuple[str, str, str], suite.BenchRow]:
    return {(r.section, r.case, r.baseline): r for r in rows}


def test_public_names_for_the_cli() -> None:
    from pairloss import _bench

    assert {"run_benchmarks", "to_markdown", "machine_summary"} <= set(_bench.__all__)
    assert "threads" in _bench.machine_summary(2)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_session_losses_tiny_run_checks_every_torch_peer(loss: str) -> None:
    rows = suite.run_benchmarks(quick=True, repeats=1, sizes=TINY, losses=(loss,), sections=("sessions",))
    spec = suite.LOSSES[loss]
    peer_rows = [r for r in rows if r.section == spec.section and r.kind == "peer"]
    labels = {r.baseline for r in peer_rows}
    assert "torch eager, masked n x n" in labels
    assert "torch eager, row-chunked (fwd+grad in one pass)" in labels
    for r in peer_rows:
        assert r.notes["check"].startswith("ok"), (r.baseline, r.notes["check"])
        assert r.baseline_s is not None and r.baseline_s > 0
    # a skipped peer says why
    for r in rows:
        if r.kind == "skipped":
            assert r.notes["skipped"] or r.notes.get("reason")
    # every case has its compute-limit rows
    assert {r.case for r in rows if r.kind == "limit"} == {f"n={n:,} x {s:,} sessions" for n, s in TINY}
    md = suite.to_markdown(rows)
    assert spec.section in md and "ratio median" in md
    # each loss is also measured against its limit timed in the same interleaved repeats: the logistic
    # against the limit loop, the hinge against one argsort per session, beside torch's own floor
    same_minutes = {r.case for r in rows if r.kind == "limit" and "interleaved" in r.baseline}
    assert same_minutes == {f"n={n:,} x {s:,} sessions" for n, s in TINY}
    assert "pairloss / limit, interleaved" in md
    less_floor = [r for r in rows if r.ours_label == "pairloss less the torch floor"]
    if loss == "hinge":
        assert len(less_floor) == len(TINY)
        for r in less_floor:
            front = next(f for f in rows if f.case == r.case and f.ours_label == "pairloss"
                         and f.baseline == r.baseline)
            assert 0 < float(r.notes["torch floor"].split()[0]) and r.ours_s < front.ours_s
    else:
        assert not less_floor


def test_lambdarank_slot_skips_cleanly_until_the_op_exists() -> None:
    spec = suite.LOSSES["lambdarank"]
    rows = suite.run_benchmarks(quick=True, repeats=1, sizes=TINY[:1], losses=("lambdarank",), sections=("sessions",))
    if spec.resolve() is None:
        assert any(r.kind == "skipped" and "no such op" in r.notes.get("reason", "") for r in rows)
    else:
        assert any(r.kind == "peer" for r in rows)


@pytest.mark.parametrize("reduction", ["session_mean_sum", "global_mean", "pair_sum", "pair_sum_log2"])
def test_reduction_weights_reproduce_the_peer_definitions(reduction: str) -> None:
    # a peer's value written directly from its definition equals sum_s g_s * (pairloss per-session mean)
    from pairloss import registry

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, 7))
    labels = rng.integers(0, 3, (4, 7))
    lens = np.full(4, 7)
    per_session = registry.kernel("PairWiseLoss")(scores.reshape(-1), labels.reshape(-1), lens)
    d = scores[:, :, None] - scores[:, None, :]
    m = labels[:, :, None] > labels[:, None, :]
    pair_loss = np.where(m, np.logaddexp(0.0, -d), 0.0)
    direct = {"session_mean_sum": (pair_loss.sum((1, 2)) / m.sum((1, 2))).sum(),
              "global_mean": pair_loss.sum() / m.sum(),
              "pair_sum": pair_loss.sum(),
              "pair_sum_log2": pair_loss.sum() / np.log(2.0)}[reduction]
    g = peers.session_weights(reduction, labels)
    assert np.dot(g, per_session) == pytest.approx(direct, rel=1e-12)


def test_sorted_hinge_equals_masked_hinge_with_ties_and_gradients() -> None:
    rng = np.random.default_rng(3)
    s = torch.from_numpy(rng.standard_normal((3, 50))).requires_grad_(True)
    lab = torch.from_numpy(rng.integers(0, 5, (3, 50)).astype(np.float64))
    a = peers.torch_sorted_hinge()(s, lab)
    (ga,) = torch.autograd.grad(a.sum(), s)
    b = peers.torch_masked("hinge")(s, lab)
    (gb,) = torch.autograd.grad(b.sum(), s)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


def test_optional_peers_are_skipped_with_a_reason_or_agree() -> None:
    # whichever optional peers are installed here must pass the float64 check; absent ones say why
    cfg = suite._Config(quick=True, threads=1, repeats=1, pair_budget=10**5, case_budget_s=1.0, sizes=TINY, mrc_n=10)
    for peer in peers.PEERS:
        if peer.key in ("torch_compile", "torch_lambdarank"):
            continue
        try:
            peer.load()
        except peers.PeerUnavailable as exc:
            reason = str(exc)
        else:
            reason = ""
        if reason:
            continue
        for loss in set(peer.losses) & {"logistic", "hinge"}:
            spec = suite.LOSSES[loss]
            status = suite._check_peer(peer, spec, spec.op_names[0], 12, cfg)
            assert status.startswith("ok"), (peer.key, loss, status)


def test_timing_helpers() -> None:
    calls = []
    t = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
                     "c": lambda: calls.append("c")}, 4, rewarm_below_s=0.0)
    # one warm-up call each, then rounds that call every contender once, each round in its own order
    assert calls[:3] == ["a", "b", "c"]
    rounds = [calls[3 + 3 * r:6 + 3 * r] for r in range(4)]
    assert len(calls) == 15 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1
    calls.clear()  # quick contenders get an untimed call before each timed one
    interleaved({"a": lambda: calls.append("a"), "slow": lambda: (calls.append("slow"), time.sleep(0.03))}, 2)
    assert calls.count("a") == 1 + 2 * 2 and calls.count("slow") == 1 + 2
    assert t["a"].repeats == 4 and t["a"].median >= 0 and t["a"].mean >= 0
    mib = peak_extra_mib(lambda: np.ones(4 * 2**20).sum())  # 32 MiB
    assert mib is None or mib >= 16
    with busy_core() as pid:
        assert pid > 0
