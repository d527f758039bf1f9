"""The registry → torch.library bridge: every op defined, opcheck-clean, gradcheck-correct, and an op
registered later is bridged without touching the bridge."""

from __future__ import annotations

import doctest
from typing import Any

import numpy as np
import pytest
import torch

from pairloss import registry
from pairloss.nn import _torch_ops
from pairloss.nn._torch_ops import scale_gradient, snake_case, torch_op
from pairloss.registry import GI, GO, gradient_def, operator_schema
from tests.nn._samples import Sample, forward_ops, gradient_samples, sampler

# The gradient-reversal layer's registered gradient is, by design, minus the derivative of its forward.
DELIBERATE_GRADIENT_SIGN = {"NegateGradient": -1.0}


def _opcheck_cases() -> list[Any]:
    cases: dict[str, list[Sample]] = {}
    for name in forward_ops():
        try:
            cases.setdefault(name, []).extend(sampler(name)(requires_grad=registry.has_gradient(name)))
        except LookupError:
            pass  # reported by test_every_forward_op_has_torch_samples
    for name, samples in gradient_samples().items():
        cases.setdefault(name, []).extend(samples)
    params = []
    for name in registry.operators():
        for k, sample in enumerate(cases.get(name, [])):
            params.append(pytest.param(name, sample, id=f"{name}-{k}-{sample.desc}"))
    for name, s in ((s.name, s) for s in registry.all_schemas()):
        if (0, 0) in s.inplace:
            sample = sampler(name)()[0]
            params.append(pytest.param(f"{name}_", sample, id=f"{name}_-inplace"))
    return params


OPCHECK_CASES = _opcheck_cases()


# ---- registration ------------------------------------------------------------------------------------
def test_every_registry_schema_has_a_torch_op_with_its_signature() -> None:
    for s in registry.all_schemas():
        op = torch_op(s.name)
        assert op.name() == f"pairloss::{snake_case(s.name)}"
        schema = op._schema
        tensors = [a for a in schema.arguments if not a.kwarg_only]
        scalars = {a.name: a for a in schema.arguments if a.kwarg_only}
        assert [a.name for a in tensors] == [i.name.lower() for i in s.inputs]
        for a, inp in zip(tensors, s.inputs, strict=True):
            optional = inp.optional or inp.index >= s.min_inputs
            assert str(a.type) == ("Optional[Tensor]" if optional else "Tensor"), (s.name, a)
        assert set(scalars) == {a.name for a in s.args}
        for arg in s.args:
            if not arg.required:
                assert scalars[arg.name].default_value == arg.default, (s.name, arg.name)
        assert len(schema.returns) == len(s.outputs)
        has_inplace = hasattr(torch.ops.pairloss, snake_case(s.name) + "_")
        assert has_inplace == ((0, 0) in s.inplace and len(s.outputs) == 1), s.name


def test_every_op_and_overload_has_autograd_and_vmap_kernels() -> None:
    # an op without a gradient maker gets one too: its backward raises naming the op instead of torch's
    # fallback warning and zero gradients
    for s in registry.all_schemas():
        overloads = [torch_op(s.name)]
        if any(a.type is float for a in s.args):
            overloads.append(torch_op(s.name, tensor_args=True))
        for op in overloads:
            for key in ("Autograd", "FuncTorchBatched"):
                assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key), (op.name(), key)


def test_snake_case_names() -> None:
    assert [snake_case(n) for n in ("PairWiseLoss", "PairWiseLossGradient", "MarginRankingCriterion",
                                    "Negative", "NegateGradient", "PairWiseHingeLoss")] == [
        "pairwise_loss", "pairwise_loss_gradient", "margin_ranking_criterion", "negative", "negate_gradient",
        "pairwise_hinge_loss"]
    assert str(torch.ops.pairloss.pairwise_loss.default) == "pairloss.pairwise_loss.default"


def test_unknown_operator_raises_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"registered operators: .*PairWiseLoss"):
        torch_op("NoSuchOp")
    with pytest.raises(ValueError, match="no in-place variant"):
        torch_op("PairWiseLoss", inplace=True)


def test_register_all_is_idempotent() -> None:
    before = _torch_ops.registered_ops()
    assert _torch_ops.register_all() == []
    assert _torch_ops.registered_ops() == before


def test_an_operator_registered_later_is_bridged_without_editing_the_bridge(monkeypatch: pytest.MonkeyPatch
                                                                           ) -> None:
    # a throw-away operator in throw-away copies of the registry tables
    for table in ("_SCHEMAS", "_KERNELS", "_GRADIENTS", "_REFERENCES"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    monkeypatch.setattr(_torch_ops, "_REGISTERED", dict(_torch_ops._REGISTERED))
    probe = (operator_schema("BridgeProbeScale").num_inputs(1).num_outputs(1)
             .input(0, "X", "any float tensor").output(0, "Y", "alpha * X")
             .arg("alpha", float, default=2.0, doc="the factor")
             .identical_type_and_shape(0).set_doc("Y = alpha * X"))
    registry.register_cpu_operator(probe, lambda x, *, alpha: x * alpha)
    registry.register_gradient(probe, lambda op: [gradient_def(op, "BridgeProbeScale", [GO(0)], [GI(0)])])

    op = torch_op("BridgeProbeScale")
    assert str(op._schema) == "pairloss::bridge_probe_scale(Tensor x, *, float alpha=2.) -> Tensor"
    x = torch.tensor([1.0, -3.0], dtype=torch.float64, requires_grad=True)
    y = op(x, alpha=3.0)
    y.backward(torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert y.tolist() == [3.0, -9.0]
    assert x.grad.tolist() == [3.0, 6.0]  # the backward ran the gradient op with the forward's alpha
    assert torch.autograd.gradcheck(lambda t: op(t, alpha=-0.5), (x,))
    torch.library.opcheck(op, (x,), {"alpha": 1.5})
    compiled = torch.compile(lambda t: op(t) + 1, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x.detach()), x.detach() * 2 + 1)


# ---- opcheck and gradcheck, driven by the registry --------------------------------------------------
@pytest.mark.parametrize(("name", "sample"), OPCHECK_CASES)
def test_opcheck(name: str, sample: Sample) -> None:
    inplace = name.endswith("_")
    op = torch_op(name.rstrip("_"), inplace=inplace)
    inputs = tuple(t.detach().clone() if inplace and isinstance(t, torch.Tensor) else t for t in sample.inputs)
    torch.library.opcheck(op, inputs, sample.args)


def test_every_forward_op_has_torch_samples() -> None:
    for name in forward_ops():
        assert sampler(name)(), name  # a LookupError names the op and says where to add a sampler


def test_every_registry_op_is_opchecked() -> None:
    checked = {p.values[0] for p in OPCHECK_CASES}
    assert set(registry.operators()) <= checked
    assert {f"{s.name}_" for s in registry.all_schemas() if (0, 0) in s.inplace} <= checked


def test_opcheck_scale_gradient() -> None:
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(scale_gradient, (x, -0.5))
    assert torch.autograd.gradcheck(lambda t: scale_gradient(t, 1.0), (x,))


@pytest.mark.parametrize("name", forward_ops())
def test_gradcheck_float64(name: str) -> None:
    if not registry.has_gradient(name):
        pytest.skip(f"{name} has no gradient")
    op = torch_op(name)
    sign = DELIBERATE_GRADIENT_SIGN.get(name, 1.0)
    for sample in sampler(name)(requires_grad=True):
        n_tensors = len(sample.inputs)

        def fn(*inputs: torch.Tensor, _sample: Sample = sample, _n: int = n_tensors) -> Any:
            out = op(*inputs[:_n], **_sample.args)
            # NegateGradient's backward is minus its derivative: scaling it by -1 makes it checkable
            return scale_gradient(out, sign) if sign != 1.0 else out

        assert torch.autograd.gradcheck(fn, sample.inputs, eps=1e-6, atol=1e-7, rtol=1e-5), (name, sample.desc)


# ---- kernels: dtypes, aliasing, errors ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("name", forward_ops())
def test_low_precision_dtypes_match_float64(name: str, dtype: torch.dtype) -> None:
    """Outputs keep the low dtype, are finite, and equal the float64 result on the same (rounded) inputs
    up to the output's own rounding: the kernels compute in at least float32."""
    op = torch_op(name)
    for sample in sampler(name)(torch.float64):
        low = tuple(t.to(dtype) if k in sample.float_inputs else t for k, t in enumerate(sample.inputs))
        ref = op(*(t.double() if k in sample.float_inputs else t for k, t in enumerate(low)), **sample.args)
        out = op(*low, **sample.args)
        assert out.dtype == dtype and out.shape == ref.shape
        assert torch.isfinite(out).all()
        tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-6}[dtype]
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_outputs_never_alias_inputs() -> None:
    x = torch.randn(4)
    for op in (torch.ops.pairloss.negate_gradient, torch.ops.pairloss.negative):
        y = op(x)
        assert y.data_ptr() != x.data_ptr()
    xt = torch.randn(3, 4).t()  # a transposed (Fortran-ordered) input still gives a contiguous output
    assert torch.ops.pairloss.negative(xt).is_contiguous()
    torch.testing.assert_close(torch.ops.pairloss.negative(xt), -xt)


def test_kernel_errors_propagate_with_their_type_and_message() -> None:
    with pytest.raises(ValueError, match="lengths must sum to the number of scores N=3"):
        torch.ops.pairloss.pairwise_loss(torch.zeros(3), torch.zeros(3), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        torch.ops.pairloss.margin_ranking_criterion(torch.zeros(2), torch.zeros(2), torch.tensor([1, 0]))


def test_inplace_variant_writes_into_its_input() -> None:
    x = torch.tensor([1.5, -2.0, 0.0])
    ptr = x.data_ptr()
    assert torch.ops.pairloss.negative_(x) is None
    assert x.data_ptr() == ptr
    assert x.tolist() == [-1.5, 2.0, -0.0] and torch.signbit(x[2])
    b = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    torch.ops.pairloss.negative_(b)
    assert b.dtype == torch.bfloat16 and b.tolist() == [-1.0, 2.0]


def test_negative_keeps_integer_dtypes_and_wraps() -> None:
    x = torch.tensor([np.iinfo(np.int32).min, 5], dtype=torch.int32)
    assert torch.equal(torch.ops.pairloss.negative(x), torch.tensor([np.iinfo(np.int32).min, -5], dtype=torch.int32))


def test_cuda_falls_back_to_the_cpu_kernel_without_a_registry_cuda_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # the fallback path, exercised on CPU tensors standing in for device tensors
    monkeypatch.setattr(registry, "devices", lambda name: ("cpu",))
    s = registry.schema("PairWiseLoss")
    scores, labels = torch.tensor([0.0, 1.0]), torch.tensor([1, 0])
    out = _torch_ops._run_cuda(s, (scores, labels, None), {})
    torch.testing.assert_close(out[0], torch.ops.pairloss.pairwise_loss(scores, labels))


def test_doctests_of_the_nn_package() -> None:
    import pairloss.nn
    import pairloss.nn.functional
    import pairloss.nn.modules

    for module in (pairloss.nn, pairloss.nn.functional, pairloss.nn.modules, _torch_ops):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__


# ---- fused gradient: the forward keeps the gradient, the backward is one pass --------------------------
FUSED_OPS = [s.name for s in registry.all_schemas() if registry.fused_gradient(s.name) is not None]


def _fused_case(name: str, dtype: torch.dtype, column: bool, seed: int, *, kinks: bool = True
                ) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    lengths = rng.choice(np.array([0, 1, 2, 5, 40, 300]), size=5)
    n = int(lengths.sum())
    # on a grid of 1/4: ties and hinge kinks all over; else no kink within finite-difference reach
    x = torch.from_numpy(rng.integers(-8, 9, n) / 4.0 if kinks else rng.standard_normal(n) * 3).to(dtype)
    x = (x.reshape(-1, 1) if column else x).requires_grad_(True)
    return x, torch.from_numpy(rng.integers(0, 4, n)), torch.from_numpy(lengths)


def test_fused_gradient_ops_are_declared() -> None:
    assert "PairWiseHingeLoss" in FUSED_OPS
    with pytest.raises(ValueError, match="one output"):
        registry.register_fused_gradient("PairWiseHingeLossGradientGradient", forward=lambda: None,
                                         backward=lambda: None)


@pytest.mark.parametrize("name", FUSED_OPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("column", [False, True], ids=["flat", "column"])
@pytest.mark.parametrize("seed", range(3))
def test_fused_backward_equals_the_registry_gradient_op(name: str, dtype: torch.dtype, column: bool,
                                                        seed: int) -> None:
    x, labels, lengths = _fused_case(name, dtype, column, seed)
    op = torch_op(name)
    y = op(x, labels, lengths)
    assert type(y.grad_fn).__name__.startswith("PairlossFusedFunction"), y.grad_fn  # the fused path ran
    y_grad = torch.from_numpy(np.random.default_rng(seed).standard_normal(lengths.numel())).to(dtype)
    (got,) = torch.autograd.grad(y, x, y_grad)
    want = torch_op(f"{name}Gradient")(x.detach(), labels, y_grad, lengths)
    assert got.dtype == x.dtype and got.shape == x.shape
    tol = {torch.float64: 1e-14, torch.float32: 1e-6, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    # The two forwards are separately compiled loops: with fastmath reassociation LLVM picks each loop's vector
    # width and interleave per CPU (equal bits with AVX-512, one ulp apart with AVX2), so the bound is 2 ulps.
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(y, op(x.detach(), labels, lengths), rtol=2 * ulp, atol=0)


@pytest.mark.parametrize("name", FUSED_OPS)
def test_fused_path_keeps_double_backward_and_is_skipped_by_transforms(name: str) -> None:
    x, labels, lengths = _fused_case(name, torch.float64, False, 7, kinks=False)
    op = torch_op(name)
    assert torch.autograd.gradgradcheck(lambda t: op(t, labels, lengths), (x,), eps=1e-6, atol=1e-6)
    # under vmap and forward mode the generic function runs: it implements both
    y = op(x, labels, lengths)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x))
        out = op(dual, labels, lengths)
        assert not type(out.grad_fn).__name__.startswith("PairlossFused")
    jac = torch.func.jacrev(lambda t: op(t, labels, lengths))(x.detach())
    (rows,) = torch.autograd.grad(y, x, torch.eye(lengths.numel(), dtype=x.dtype)[0])
    torch.testing.assert_close(jac[0], rows)


@pytest.mark.parametrize("name", FUSED_OPS)
def test_fused_torch_ops_pass_opcheck_and_compile(name: str) -> None:
    x, labels, lengths = _fused_case(name, torch.float64, False, 3)
    ns = torch.ops.pairloss
    forward = getattr(ns, f"{snake_case(name)}_fused_forward").default
    backward = getattr(ns, f"{snake_case(name)}_fused_backward").default
    torch.library.opcheck(forward, (x.detach(), labels, lengths))
    y, saved = forward(x.detach(), labels, lengths)
    assert saved.dtype == torch.float64 and saved.shape == x.shape
    torch.library.opcheck(backward, (saved, torch.ones_like(y), x.detach(), labels, lengths))
    compiled = torch.compile(lambda t: torch_op(name)(t, labels, lengths).sum(), fullgraph=True, backend="aot_eager")
    (got,) = torch.autograd.grad(compiled(x), x)
    (want,) = torch.autograd.grad(torch_op(name)(x, labels, lengths).sum(), x)
    torch.testing.assert_close(got, want)
