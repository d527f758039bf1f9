"""The functional front end and the modules: drop-in equality with torch, references, edge cases, errors."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

import pairloss.nn as pnn
import pairloss.nn.functional as PF
from pairloss import registry
from pairloss._checks import FLT_EPSILON
from pairloss.ops import pairwise_hinge
from tests.nn._samples import LABELS, LENGTHS

SHAPES = [(), (7,), (4, 5)]
MARGINS = [0.0, 0.5, 1.0, -0.3]
REDUCTIONS = ["none", "mean", "sum"]


def _pairs(shape: tuple[int, ...], margin: float, dtype: torch.dtype, seed: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pairs with a third of them exactly on the kink: -y (x1 - x2) + margin == ±0."""
    g = torch.Generator().manual_seed(seed)
    x2 = torch.randint(-8, 9, shape, generator=g).to(dtype) / 4  # quarters: x2 ± margin is exact
    y = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    x1 = x2 + torch.randn(shape, generator=g, dtype=dtype)
    on_kink = torch.rand(shape, generator=g) < 0.35
    x1 = torch.where(on_kink, x2 + y * margin, x1)
    return x1, x2, y


# ---- margin_ranking_loss: a drop-in for torch's ------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_margin_ranking_loss_equals_torch_values_and_gradients(shape: tuple[int, ...], margin: float,
                                                               reduction: str) -> None:
    x1, x2, y = _pairs(shape, margin, torch.float64, seed=len(shape))
    a1, a2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    b1, b2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    ours = pnn.MarginRankingLoss(margin=margin, reduction=reduction)(a1, a2, y)
    theirs = torch.nn.MarginRankingLoss(margin=margin, reduction=reduction)(b1, b2, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    g = torch.randn(ours.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(torch.autograd.grad(ours, (a1, a2), g),
                               torch.autograd.grad(theirs, (b1, b2), g), rtol=0, atol=0)


@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0])
def test_margin_ranking_loss_float32_matches_torch(margin: float) -> None:
    x1, x2, y = _pairs((64,), margin, torch.float32, seed=3)
    a1, b1 = x1.clone().requires_grad_(), x1.clone().requires_grad_()
    ours = PF.margin_ranking_loss(a1, x2, y, margin=margin, reduction="none")
    theirs = torch.nn.functional.margin_ranking_loss(b1, x2, y, margin=margin, reduction="none")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(a1.grad, b1.grad, rtol=0, atol=0)


def test_margin_ranking_gradient_passes_at_signed_zero_kinks() -> None:
    # x1 == x2 and margin 0: the distance is -0.0 (y = +1) or +0.0 (y = -1); torch's clamp_min passes both
    x1 = torch.tensor([0.5, 0.5, -1.0, -1.0], dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    loss = PF.margin_ranking_loss(x1, x2, y, margin=0.0, reduction="sum")
    loss.backward()
    assert loss.item() == 0.0
    assert x1.grad.tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert x2.grad.tolist() == [1.0, -1.0, 1.0, -1.0]


def test_margin_ranking_loss_defaults_match_torch() -> None:
    ours, theirs = pnn.MarginRankingLoss(), torch.nn.MarginRankingLoss()
    assert (ours.margin, ours.reduction) == (theirs.margin, theirs.reduction) == (0.0, "mean")
    import inspect

    sig = inspect.signature(PF.margin_ranking_loss).parameters
    assert sig["margin"].default == 0.0 and sig["reduction"].default == "mean"
    assert registry.schema("MarginRankingCriterion").get_arg("margin").default == 1.0  # the op keeps Caffe2's


def test_margin_ranking_loss_accepts_integer_target_and_promotes_dtypes() -> None:
    x1 = torch.tensor([0.3, 0.1], dtype=torch.float32)
    x2 = torch.tensor([0.1, 0.3], dtype=torch.float64)
    out = PF.margin_ranking_loss(x1, x2, torch.tensor([1, 1]), margin=0.5, reduction="none")
    assert out.dtype == torch.float64
    expected = torch.nn.functional.margin_ranking_loss(x1.double(), x2, torch.tensor([1.0, 1.0], dtype=torch.float64),
                                                       margin=0.5, reduction="none")
    torch.testing.assert_close(out, expected)


def test_margin_ranking_mean_of_empty_input_is_nan_like_torch() -> None:
    e = torch.empty(0)
    assert math.isnan(PF.margin_ranking_loss(e, e, e).item())
    assert math.isnan(torch.nn.functional.margin_ranking_loss(e, e, e).item())
    assert PF.margin_ranking_loss(e, e, e, reduction="sum").item() == 0.0
    assert PF.margin_ranking_loss(e, e, e, reduction="none").shape == (0,)


# ---- pairwise logistic loss -------------------------------------------------------------------------
def _session_data(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    scores = (torch.randn(sum(LENGTHS), generator=g, dtype=torch.float64) * 2).to(dtype)
    return scores, torch.tensor(LABELS), torch.tensor(LENGTHS)


def test_pairwise_logistic_loss_matches_the_registry_reference_for_every_reduction() -> None:
    scores, labels, lengths = _session_data()
    ref = registry.reference("PairWiseLoss")(scores.numpy(), labels.numpy(), lengths.numpy())
    per_session = PF.pairwise_logistic_loss(scores, labels, lengths, reduction="none")
    assert per_session.shape == (len(LENGTHS),)
    np.testing.assert_allclose(per_session.numpy(), ref, rtol=1e-12, atol=1e-12)
    # the empty, one-item and all-tied sessions contribute 0, and "mean" does not count them
    assert per_session[1].item() == per_session[2].item() == per_session[3].item() == 0.0
    np.testing.assert_allclose(PF.pairwise_logistic_loss(scores, labels, lengths).item(), ref[[0, 4]].mean(),
                               rtol=1e-12)
    np.testing.assert_allclose(PF.pairwise_logistic_loss(scores, labels, lengths, reduction="sum").item(),
                               ref.sum(), rtol=1e-12)
    assert PF.pairwise_logistic_loss(scores, labels).shape == ()
    assert PF.pairwise_logistic_loss(scores, labels, reduction="none").shape == (1,)


def test_pairwise_logistic_lengths_split_equals_separate_calls() -> None:
    scores, labels, lengths = _session_data()
    together = PF.pairwise_logistic_loss(scores, labels, lengths, reduction="none")
    parts = [PF.pairwise_logistic_loss(s, lab, reduction="none")
             for s, lab in zip(scores.split(LENGTHS), labels.split(LENGTHS), strict=True)]
    torch.testing.assert_close(together, torch.cat(parts), rtol=1e-12, atol=0)


def test_pairwise_logistic_gradcheck_over_sessions() -> None:
    scores, labels, lengths = _session_data()
    scores.requires_grad_()
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda s, r=reduction: PF.pairwise_logistic_loss(s, labels, lengths, reduction=r), (scores,))
    column = scores.detach()[:4].reshape(4, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: PF.pairwise_logistic_loss(s, labels[:4], torch.tensor([1, 3])),
                                    (column,))


def test_pairwise_logistic_matches_a_plain_torch_formula() -> None:
    # stable-vs-plain (Optax style): log(1 + exp(-(s_hi - s_lo))) averaged per session, with autograd
    scores, labels, lengths = _session_data()
    a, b = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    ours = PF.pairwise_logistic_loss(a, labels, lengths, reduction="sum")
    total = b.new_zeros(())
    for s, lab in zip(b.split(LENGTHS), labels.split(LENGTHS), strict=True):
        hi, lo = torch.nonzero(lab[:, None] - lab[None, :] >= FLT_EPSILON, as_tuple=True)
        if hi.numel():
            total = total + torch.log1p(torch.exp(-(s[hi] - s[lo]))).mean()
    total.backward()
    ours.backward()
    torch.testing.assert_close(ours, total)
    torch.testing.assert_close(a.grad, b.grad)


# ---- pairwise hinge loss ----------------------------------------------------------------------------
def _hinge_numpy(scores: np.ndarray, labels: np.ndarray, lengths: list[int], margin: float) -> np.ndarray:
    out, offset = [], 0
    for n in lengths:
        s, lab = scores[offset:offset + n], labels[offset:offset + n]
        terms = [max(0.0, margin - (s[i] - s[j])) for i, j in itertools.permutations(range(n), 2)
                 if lab[i] - lab[j] >= FLT_EPSILON]
        out.append(sum(terms) / len(terms) if terms else 0.0)
        offset += n
    return np.array(out)


@pytest.mark.parametrize("margin", [1.0, 0.25])
def test_pairwise_hinge_loss_matches_a_brute_force_reference(margin: float) -> None:
    scores, labels, lengths = _session_data()
    ref = _hinge_numpy(scores.numpy(), labels.numpy(), LENGTHS, margin)
    out = PF.pairwise_hinge_loss(scores, labels, lengths, margin=margin, reduction="none")
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    with_pairs = [0, 4]  # sessions 1-3 (empty, one item, all tied) have no pair: "mean" skips them
    np.testing.assert_allclose(PF.pairwise_hinge_loss(scores, labels, lengths, margin=margin).item(),
                               ref[with_pairs].mean())


def test_pairwise_hinge_gradient_matches_the_float64_reference() -> None:
    scores, labels, lengths = _session_data()
    a = scores.clone().requires_grad_()
    PF.pairwise_hinge_loss(a, labels, lengths, reduction="sum").backward()
    ref = pairwise_hinge.reference_gradient(scores.numpy(), labels.numpy(), np.ones(len(LENGTHS)),
                                            lengths.numpy(), margin=1.0)
    np.testing.assert_allclose(a.grad.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda s: PF.pairwise_hinge_loss(s, labels, lengths, margin=0.3),
                                    (scores.clone().requires_grad_(),))


class _PassThroughMode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


def test_pairwise_hinge_runs_the_registry_op() -> None:
    s = torch.tensor([0.5, 0.0], requires_grad=True)
    out = PF.pairwise_hinge_loss(s, torch.tensor([1, 0]), reduction="none")
    assert out.tolist() == [0.5]
    # plain eager CPU autograd: the registry's fused kernels without the custom op's dispatch
    assert "EagerFusedLoss" in type(out.grad_fn).__name__
    # anything that may look inside the call (here a torch function mode) sees the custom op
    with _PassThroughMode():
        seen = PF.pairwise_hinge_loss(s, torch.tensor([1, 0]), reduction="none")
    assert seen.tolist() == [0.5]
    assert "pairwise_hinge_loss" in type(seen.grad_fn).__name__


# ---- low precision and huge scores ------------------------------------------------------------------
LOSSES = {
    "margin_ranking": lambda s, lab, lens: PF.margin_ranking_loss(s[:6], s[6:12], torch.tensor([1, -1] * 3),
                                                                  margin=0.5),
    "pairwise_logistic": lambda s, lab, lens: PF.pairwise_logistic_loss(s, lab, lens),
    "pairwise_hinge": lambda s, lab, lens: PF.pairwise_hinge_loss(s, lab, lens),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("loss", LOSSES)
def test_half_precision_inputs_give_finite_close_results(loss: str, dtype: torch.dtype) -> None:
    scores, labels, lengths = _session_data(torch.float32)
    low = scores.to(dtype).requires_grad_()
    value = LOSSES[loss](low, labels, lengths)
    value.backward()
    assert value.dtype == dtype and low.grad.dtype == dtype
    assert torch.isfinite(value) and torch.isfinite(low.grad).all()
    ref = scores.to(dtype).float().requires_grad_()
    ref_value = LOSSES[loss](ref, labels, lengths)
    ref_value.backward()
    torch.testing.assert_close(value.float(), ref_value, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(low.grad.float(), ref.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("loss", LOSSES)
def test_scores_of_1e30_give_no_nan_in_value_or_gradient(loss: str) -> None:
    base = torch.tensor([1e30, -1e30, 0.0, 1e30, -1e30, 3.0, 1e30, 1e30, -1e30, 0.0, 2.0, -1e30, 1e30],
                        dtype=torch.float32)
    scores = base.clone().requires_grad_()
    _, labels, lengths = _session_data()
    value = LOSSES[loss](scores, labels, lengths)
    value.backward()
    assert not torch.isnan(value) and torch.isfinite(value)
    assert not torch.isnan(scores.grad).any() and torch.isfinite(scores.grad).all()


# ---- Negative and NegateGradient --------------------------------------------------------------------
SPECIAL = torch.tensor([0.0, -0.0, 1.5, -2.25, float("inf"), float("-inf"), float("nan"), 1e-45, 3.4e38])


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


@pytest.mark.parametrize("scale", [1.0, 0.37, -2.0, 0.0])
def test_negate_gradient_is_an_exact_identity_forward_and_minus_scale_backward(scale: float) -> None:
    x = SPECIAL.clone().requires_grad_()
    y = PF.negate_gradient(x, scale=scale)
    assert torch.equal(_bits(y.detach()), _bits(SPECIAL))  # bit for bit, -0.0 and NaN included
    g = torch.randn(SPECIAL.shape, generator=torch.Generator().manual_seed(1))
    y.backward(g)
    assert torch.equal(x.grad, -scale * g)


def test_gradient_reversal_module_is_negate_gradient() -> None:
    assert issubclass(pnn.GradientReversal, pnn.NegateGradient)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = pnn.GradientReversal(scale=0.5)(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, -0.5))
    assert repr(pnn.GradientReversal(scale=0.5)) == "GradientReversal(scale=0.5)"


def test_negative_forward_backward_and_in_place() -> None:
    x = SPECIAL.clone().requires_grad_()
    y = PF.negative(x)
    assert torch.equal(_bits(y.detach()), _bits(torch.neg(SPECIAL)))  # a sign flip, NaN included
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, -torch.ones_like(x))
    # in place, outside autograd: the custom op writes into x's storage
    z = torch.tensor([1.0, -2.0])
    ptr = z.data_ptr()
    assert pnn.Negative(inplace=True)(z) is z and z.data_ptr() == ptr and z.tolist() == [-1.0, 2.0]
    # in place inside a graph: gradients still flow
    leaf = torch.tensor([1.0, 2.0], requires_grad=True)
    h = leaf * 3
    out = PF.negative(h, inplace=True)
    assert out is h
    out.sum().backward()
    assert leaf.grad.tolist() == [-3.0, -3.0]
    with pytest.raises(RuntimeError, match="leaf Variable"):
        PF.negative(torch.ones(2, requires_grad=True), inplace=True)


# ---- errors -----------------------------------------------------------------------------------------
def test_mismatched_shapes_raise_listing_all_three() -> None:
    with pytest.raises(ValueError, match=r"input1: \(3, 1\), input2: \(1, 3\), target: \(1, 1\)"):
        PF.margin_ranking_loss(torch.zeros(3, 1), torch.zeros(1, 3), torch.ones(1, 1))
    with pytest.raises(ValueError, match="same shape"):
        pnn.MarginRankingLoss()(torch.zeros(5, 4), torch.zeros(5, 4), torch.ones(5))


@pytest.mark.parametrize("call", [
    lambda r: PF.margin_ranking_loss(torch.zeros(2), torch.zeros(2), torch.ones(2), reduction=r),
    lambda r: PF.pairwise_logistic_loss(torch.zeros(2), torch.zeros(2), reduction=r),
    lambda r: PF.pairwise_hinge_loss(torch.zeros(2), torch.zeros(2), reduction=r),
    lambda r: pnn.MarginRankingLoss(reduction=r),
    lambda r: pnn.PairwiseLogisticLoss(reduction=r),
    lambda r: pnn.PairwiseHingeLoss(reduction=r),
], ids=["mrl", "logistic", "hinge", "MRL", "Logistic", "Hinge"])
def test_bad_reduction_raises_torchs_message(call: object) -> None:
    with pytest.raises(ValueError, match="abc is not a valid value for reduction"):
        call("abc")  # type: ignore[operator]


@pytest.mark.parametrize("fn", [PF.pairwise_logistic_loss, PF.pairwise_hinge_loss])
def test_bad_lengths_raise(fn: object) -> None:
    s, lab = torch.zeros(4), torch.tensor([1, 0, 1, 0])
    with pytest.raises(TypeError, match=r"lengths must be an integer tensor; got dtype=torch\.float32"):
        fn(s, lab, torch.tensor([2.0, 2.0]))  # type: ignore[operator]
    with pytest.raises(ValueError, match="lengths must be 1-D"):
        fn(s, lab, torch.tensor([[2, 2]]))  # type: ignore[operator]
    with pytest.raises(ValueError, match="sum to the number of scores N=4"):
        fn(s, lab, torch.tensor([2, 3]))  # type: ignore[operator]
    with pytest.raises(ValueError, match="non-negative"):
        fn(s, lab, torch.tensor([5, -1]))  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"lengths must be a torch\.Tensor"):
        fn(s, lab, [2, 2])  # type: ignore[operator]


def test_non_float_scores_and_bad_labels_raise() -> None:
    ints = torch.tensor([1, 2, 3])
    with pytest.raises(TypeError, match="scores must be a float16, bfloat16, float32 or float64 tensor"):
        PF.pairwise_logistic_loss(ints, ints)
    with pytest.raises(TypeError, match="scores must be a float16"):
        PF.pairwise_hinge_loss(ints, ints)
    with pytest.raises(TypeError, match="input1 must be a float16"):
        PF.margin_ranking_loss(ints, ints, ints)
    with pytest.raises(TypeError, match="input2 must be a float16"):
        PF.margin_ranking_loss(ints.float(), ints, ints)
    with pytest.raises(TypeError, match="target must be an integer or floating-point tensor"):
        PF.margin_ranking_loss(ints.float(), ints.float(), torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="labels must be an integer or floating-point tensor"):
        PF.pairwise_logistic_loss(ints.float(), ints.bool())
    with pytest.raises(ValueError, match="labels must have one entry per score: scores has N=3; labels has 2"):
        PF.pairwise_logistic_loss(ints.float(), ints[:2])
    with pytest.raises(ValueError, match=r"labels must have the shape of the padded scores \[B, L\] = \(2, 3\)"):
        PF.pairwise_logistic_loss(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"scores must have shape \(N,\) or \(N, 1\) .*or \(B, L\)"):
        PF.pairwise_logistic_loss(torch.zeros(2, 3, 1), torch.zeros(2))
    with pytest.raises(TypeError, match=r"input1 must be a torch\.Tensor; got list"):
        PF.margin_ranking_loss([1.0], torch.zeros(1), torch.ones(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        PF.margin_ranking_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 0.5]))
    with pytest.raises(TypeError, match="x must have a numeric dtype"):
        PF.negative(torch.ones(2, dtype=torch.bool))


def test_bad_margin_scale_and_devices_raise() -> None:
    with pytest.raises(ValueError, match="margin must be finite"):
        pnn.MarginRankingLoss(margin=float("nan"))
    with pytest.raises(TypeError, match="margin must be a real number"):
        PF.pairwise_hinge_loss(torch.zeros(2), torch.zeros(2), margin="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scale must be a real number"):
        pnn.NegateGradient(scale=True)
    with pytest.raises(ValueError, match="all tensors must be on one device; got input1: cpu, input2: meta"):
        PF.margin_ranking_loss(torch.zeros(2), torch.zeros(2, device="meta"), torch.ones(2))
    with pytest.raises(ValueError, match="one device"):
        PF.pairwise_logistic_loss(torch.zeros(2), torch.zeros(2), torch.tensor([2], device="meta"))


def test_module_reprs() -> None:
    assert repr(pnn.MarginRankingLoss(0.2)) == "MarginRankingLoss(margin=0.2, reduction='mean')"
    assert repr(pnn.PairwiseLogisticLoss("sum")) == "PairwiseLogisticLoss(reduction='sum')"
    assert repr(pnn.PairwiseHingeLoss()) == "PairwiseHingeLoss(margin=1.0, reduction='mean')"
    assert repr(pnn.Negative(inplace=True)) == "Negative(inplace=True)"
    assert repr(pnn.NegateGradient()) == "NegateGradient(scale=1.0)"


def test_public_api() -> None:
    assert sorted(pnn.__all__) == ["GradientReversal", "LambdaRankLoss", "MarginRankingLoss", "NegateGradient",
                                   "Negative", "PairwiseHingeLoss", "PairwiseLogisticLoss", "functional", "torch_op"]
    assert sorted(PF.__all__) == ["lambdarank_loss", "margin_ranking_loss", "negate_gradient", "negative",
                                  "pairwise_hinge_loss", "pairwise_logistic_loss"]
    for name in pnn.__all__:
        assert getattr(pnn, name) is not None


# ---- reductions of plain CPU tensors run in NumPy (no torch parallel region); the same values ----------
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("layout", ["flat", "padded", "one session"])
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.float32])
def test_host_reductions_equal_torch_reductions(reduction: str, layout: str, label_dtype: torch.dtype) -> None:
    from pairloss.nn import functional as functional_module

    rng = np.random.default_rng(4)
    lengths = torch.tensor([0, 3, 1, 5, 4, 0, 2])
    n = int(lengths.sum())
    scores = torch.from_numpy(rng.standard_normal(n)).requires_grad_(True)
    labels = torch.from_numpy(rng.integers(0, 3, n)).to(label_dtype)
    labels[8:12] = 1  # an all-tied session: no pair, not counted by the mean
    if layout == "padded":
        scores = torch.from_numpy(rng.standard_normal((3, 4))).requires_grad_(True)
        labels = torch.from_numpy(rng.integers(-1, 3, (3, 4))).to(label_dtype)
        labels[1] = torch.tensor([2, 2, -1, -1]).to(label_dtype)
        args: dict = {"padding_label": -1}
    else:
        args = {} if layout == "one session" else {"lengths": lengths}

    # eager: the fused kernels outside the custom op, summed on the host; host: the custom op, summed on the
    # host; torch: the custom op, reduced by torch
    grad_fns = {"eager": "_EagerFusedLossBackward", "host": "_HostSumBackward"}

    def run(path: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        with pytest.MonkeyPatch.context() as mp:
            if path != "eager":
                mp.setattr(functional_module, "eager_applies", lambda *_a: False)
            if path == "torch":
                mp.setattr(functional_module, "host_view", lambda _t: None)
            for fn in (PF.pairwise_logistic_loss, PF.pairwise_hinge_loss, PF.lambdarank_loss):
                scores.grad = None
                value = fn(scores, labels, reduction=reduction, **args)
                name = type(value.grad_fn).__name__
                assert name == grad_fns[path] if path in grad_fns else name not in grad_fns.values(), name
                value.backward()
                out.append((value.detach(), scores.grad.clone()))
        return out

    reference = run("torch")
    for path in ("eager", "host"):
        for (v, g), (v_torch, g_torch) in zip(run(path), reference, strict=True):
            torch.testing.assert_close(v, v_torch, rtol=1e-14, atol=1e-14)
            torch.testing.assert_close(g, g_torch, rtol=1e-14, atol=1e-14)
