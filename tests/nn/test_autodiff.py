"""Forward mode, double backward, Hessians and vmap through every pairloss custom op.

Three layers:

* the generic bridge on throw-away operators with a complete gradient tower (exp and a product), so the
  double-vjp forward mode, higher orders and vmap are checked to any depth whatever the registry holds;
* every registry op (forward and gradient ops of every order) against finite differences in float64:
  ``gradcheck`` with forward mode and batched (vmap) gradients, ``gradgradcheck`` reverse-over-reverse
  and forward-over-reverse, as far as the registry's gradient makers reach; past them, a clear error;
* every forward op against the same loss written with torch ops, in every float dtype: ``jvp``
  (``torch.func`` and ``torch.autograd.forward_ad``), Hessians (``torch.autograd.functional`` and
  ``torch.func``), Hessian-vector products and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vmap

import pairloss.nn.functional as PF
from pairloss import registry
from pairloss._checks import FLT_EPSILON
from pairloss.nn import _torch_ops
from pairloss.nn._torch_ops import scale_gradient, torch_op
from pairloss.registry import GI, GO, O, gradient_def, operator_schema
from tests.nn._samples import LENGTHS, Sample, forward_ops, gradient_samples, sampler

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# tolerance of a low-precision result against the float64 torch formula on the same (rounded) inputs
TOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-10}
# The gradient-reversal layer declares minus its derivative, in backward and forward mode alike.
SIGN = {"NegateGradient": -1.0}


# --------------------------------------------------------------------------------------------------------
# What the registry's gradient makers reach
# --------------------------------------------------------------------------------------------------------
def _gradient_ops(name: str) -> set[str]:
    return set(registry.gradient_op_names(name)) if registry.has_gradient(name) else set()


def forward_mode_available(name: str) -> bool:
    """jvp of ``name`` is the gradient of its gradient ops: they need gradient makers of their own."""
    return registry.has_gradient(name) and all(registry.has_gradient(g) for g in _gradient_ops(name))


def second_order_complete(name: str) -> bool:
    """Second derivatives of ``name`` in every input: its gradient ops declare no unimplemented gradient
    (the second-order ops of the pairwise losses stop at their X_grad_grad input: third derivatives)."""
    return all(not registry.schema(g).unimplemented_gradients for g in _gradient_ops(name))


def hessian_forward_over_reverse_available(name: str) -> bool:
    """jacfwd(jacrev(f)) needs forward mode of the gradient ops of ``name``; so does torch's
    ``torch.autograd.functional.hvp``, whose double-backward trick differentiates a backward of a
    backward with respect to its output gradient."""
    return forward_mode_available(name) and all(forward_mode_available(g) for g in _gradient_ops(name))


# --------------------------------------------------------------------------------------------------------
# The generic bridge, on a complete tower: ProbeExp (y = e^x) and ProbeMul (y = a b)
# --------------------------------------------------------------------------------------------------------
@pytest.fixture
def probe_ops(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    for table in ("_SCHEMAS", "_KERNELS", "_GRADIENTS", "_REFERENCES"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    monkeypatch.setattr(_torch_ops, "_REGISTERED", dict(_torch_ops._REGISTERED))
    mul = (operator_schema("AutodiffProbeMul").num_inputs(2).num_outputs(1).input(0, "A", "a").input(1, "B", "b")
           .output(0, "Y", "a * b").identical_type_and_shape(0).gradient_op().set_doc("a * b"))
    registry.register_cpu_operator(mul, lambda a, b: a * b)
    registry.register_gradient(mul, lambda op: [gradient_def(op, "AutodiffProbeMul", [GO(0), op.inputs[1]], [GI(0)]),
                                                gradient_def(op, "AutodiffProbeMul", [GO(0), op.inputs[0]], [GI(1)])])
    exp = (operator_schema("AutodiffProbeExp").num_inputs(1).num_outputs(1).input(0, "X", "x").output(0, "Y", "e^x")
           .identical_type_and_shape(0).set_doc("e^x"))
    registry.register_cpu_operator(exp, lambda x: __import__("numpy").exp(x))
    # the gradient reads the forward output, as Caffe2's Exp gradient does
    registry.register_gradient(exp, lambda op: [gradient_def(op, "AutodiffProbeMul", [O(0), GO(0)], [GI(0)])])
    return torch_op("AutodiffProbeExp"), torch_op("AutodiffProbeMul")


def test_probe_tower_first_and_second_order(probe_ops: tuple[Any, Any]) -> None:
    exp, mul = probe_ops
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    t = torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64)

    def f(v: torch.Tensor) -> torch.Tensor:
        return mul(exp(v), v).sum()  # sum x e^x

    def ref(v: torch.Tensor) -> torch.Tensor:
        return (v.exp() * v).sum()

    torch.testing.assert_close(jvp(lambda v: mul(exp(v), v), (x,), (t,))[1], jvp(lambda v: v.exp() * v, (x,), (t,))[1])
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(exp(fwAD.make_dual(x, t))).tangent
    torch.testing.assert_close(tangent, x.exp() * t)
    expected = torch.func.hessian(ref)(x)
    for outer, inner in ((jacfwd, jacrev), (jacrev, jacrev), (jacrev, jacfwd)):
        torch.testing.assert_close(outer(inner(f))(x), expected)
    # torch runs a custom jvp with forward mode off: a jvp inside a jvp would lose the outer tangent
    with pytest.raises(NotImplementedError, match=r"forward mode over forward mode .* Use jacfwd\(jacrev\(f\)\)"):
        jacfwd(jacfwd(f))(x)
    torch.testing.assert_close(torch.autograd.functional.hessian(f, x), torch.func.hessian(ref)(x))


def test_probe_tower_third_order_and_vmap(probe_ops: tuple[Any, Any]) -> None:
    exp, mul = probe_ops
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    # d3/dx3 of x e^x is (x + 3) e^x: reverse over reverse over reverse, then forward over it
    (g1,) = torch.autograd.grad(mul(exp(x), x).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
    (g3,) = torch.autograd.grad(g2.sum(), x)
    torch.testing.assert_close(g3, (x.detach() + 3) * x.detach().exp())
    third = jacfwd(jacrev(jacrev(lambda v: mul(exp(v), v).sum())))(x.detach())
    torch.testing.assert_close(third.diagonal().diagonal(), (x.detach() + 3) * x.detach().exp())
    batch = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(vmap(exp)(batch), batch.exp())
    torch.testing.assert_close(vmap(mul, in_dims=(0, None))(batch, batch[0]), batch * batch[0])
    torch.testing.assert_close(vmap(exp, in_dims=1)(batch), batch.t().exp())
    torch.testing.assert_close(vmap(exp)(torch.empty(0, 3, dtype=torch.float64)).shape, (0, 3))
    torch.testing.assert_close(vmap(jacrev(lambda v: mul(exp(v), v).sum()))(batch), (batch + 1) * batch.exp())


def test_an_op_without_gradient_maker_says_so_in_backward_and_forward_mode(probe_ops: tuple[Any, Any]) -> None:
    exp, _ = probe_ops
    del registry._GRADIENTS["AutodiffProbeMul"]  # the tower now stops after the first order
    x = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(exp(x).sum(), x, create_graph=True)
    torch.testing.assert_close(g, x.exp())
    with pytest.raises(RuntimeError, match="AutodiffProbeMul has no gradient maker"):
        g.sum().backward()
    with pytest.raises(RuntimeError, match="forward-mode AD through pairloss operator AutodiffProbeExp needs the "
                                           "gradient of its gradient operator AutodiffProbeMul"):
        jvp(exp, (x.detach(),), (torch.ones(2, dtype=torch.float64),))


# --------------------------------------------------------------------------------------------------------
# Every registry op against finite differences (float64)
# --------------------------------------------------------------------------------------------------------
def _all_cases() -> list[Any]:
    params = []
    for name in forward_ops():
        for k, sample in enumerate(sampler(name)()):
            params.append(pytest.param(name, sample, id=f"{name}-{k}-{sample.desc}"))
    for name, samples in sorted(gradient_samples().items()):
        params += [pytest.param(name, sample, id=f"{name}-{k}-{sample.desc}") for k, sample in enumerate(samples)
                   if k < 3]  # three samples an op keep the suite fast
    return params


def _as_function(name: str, sample: Sample) -> tuple[Callable[..., Any], tuple[torch.Tensor, ...]]:
    """The op as a function of its differentiable inputs only (the others fixed), sign-corrected."""
    op = torch_op(name)
    # inputs whose gradient the registry declares not implemented (third derivatives) stay fixed here;
    # test_unimplemented_derivatives_raise checks that asking for them raises
    unimplemented = registry.schema(name).unimplemented_gradients
    positions = [k for k in sample.float_inputs if sample.inputs[k] is not None and k not in unimplemented]
    sign = SIGN.get(name, 1.0)

    def fn(*diff: torch.Tensor) -> Any:
        inputs = list(sample.inputs)
        for k, t in zip(positions, diff, strict=True):
            inputs[k] = t
        out = op(*inputs, **sample.args)
        if sign != 1.0:
            return scale_gradient(out, sign) if isinstance(out, torch.Tensor) else tuple(
                scale_gradient(o, sign) for o in out)
        return out

    leaves = tuple(sample.inputs[k].detach().double().requires_grad_() for k in positions)
    return fn, leaves


ALL_CASES = _all_cases()


@pytest.mark.parametrize(("name", "sample"), ALL_CASES)
def test_gradcheck_forward_mode_and_batched(name: str, sample: Sample) -> None:
    fn, leaves = _as_function(name, sample)
    if not registry.has_gradient(name):
        out = fn(*leaves)
        first = out[0] if isinstance(out, tuple) else out
        with pytest.raises(RuntimeError, match=f"{name} has no gradient maker"):
            first.sum().backward()
        return
    fwd = forward_mode_available(name)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5, check_forward_ad=fwd,
                                    check_batched_grad=True, check_batched_forward_grad=fwd), name
    if not fwd:
        with pytest.raises(RuntimeError, match="needs the gradient of its gradient operator"):
            jvp(fn, leaves, tuple(torch.ones_like(t) for t in leaves))


@pytest.mark.parametrize(("name", "sample"), [c for c in ALL_CASES if registry.has_gradient(c.values[0])
                                              and forward_mode_available(c.values[0])
                                              and second_order_complete(c.values[0])])
def test_gradgradcheck_reverse_and_forward_over_reverse(name: str, sample: Sample) -> None:
    fn, leaves = _as_function(name, sample)
    fwd_over_rev = hessian_forward_over_reverse_available(name)
    assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-4,
                                        check_fwd_over_rev=fwd_over_rev, check_rev_over_rev=True), name


@pytest.mark.parametrize("name", [n for n in registry.operators() if registry.schema(n).unimplemented_gradients])
def test_unimplemented_derivatives_raise(name: str) -> None:
    sample = next(c.values[1] for c in ALL_CASES if c.values[0] == name)
    op = torch_op(name)
    k = min(registry.schema(name).unimplemented_gradients)
    inputs = list(sample.inputs)
    inputs[k] = inputs[k].detach().double().requires_grad_()
    inputs = [t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() and i != k else t
              for i, t in enumerate(inputs)]
    out = op(*inputs, **sample.args)
    first = out[0] if isinstance(out, tuple) else out
    (third,) = torch.autograd.grad(first.sum(), inputs[k])
    assert torch.isnan(third).all(), "a derivative that is not implemented must be NaN, never a number"
    primal = inputs[k].detach()

    def along_k(t: torch.Tensor) -> torch.Tensor:
        args = list(inputs)
        args[k] = t
        result = op(*args, **sample.args)
        return result[0] if isinstance(result, tuple) else result

    with pytest.raises(NotImplementedError, match="not implemented"):
        jvp(along_k, (primal,), (torch.ones_like(primal),))


def test_every_registry_op_is_checked_here() -> None:
    assert {c.values[0] for c in ALL_CASES} == set(registry.operators())


def test_forward_mode_reaches_every_forward_op() -> None:
    # the ops layer registers second-order gradient makers: jvp works for every forward op
    assert [n for n in forward_ops() if not forward_mode_available(n)] == []


# --------------------------------------------------------------------------------------------------------
# Every forward op against the same loss written with torch ops, every float dtype
# --------------------------------------------------------------------------------------------------------
def _ref_margin_ranking(x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, *, margin: float) -> torch.Tensor:
    return (-y.to(x1.dtype) * (x1 - x2) + margin).clamp_min(0)


def _ref_sessions(term: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def loss(x: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        flat, lab = x.reshape(-1), label.reshape(-1).double()
        sizes = [flat.shape[0]] if lengths is None else lengths.tolist()
        out = []
        for xs, ls in zip(flat.split(sizes), lab.split(sizes), strict=True):
            pair = (ls[:, None] - ls[None, :]) >= FLT_EPSILON  # row: the higher label
            z = xs[None, :] - xs[:, None]  # x_lo - x_hi
            total = torch.where(pair, term(z), torch.zeros((), dtype=x.dtype)).sum()
            out.append(total / pair.sum().clamp_min(1))
        return torch.stack(out)

    return loss


def _ref_pairwise_logistic(x: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None
                           ) -> torch.Tensor:
    return _ref_sessions(lambda z: torch.logaddexp(torch.zeros_like(z), z))(x, label, lengths)


def _ref_pairwise_hinge(x: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None, *,
                        margin: float = 1.0) -> torch.Tensor:
    return _ref_sessions(lambda z: torch.relu(z + margin))(x, label, lengths)


def _ref_lambdarank(x: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None, *,
                    sigma: float = 1.0, topn: int = 0, gain: str = "exp2") -> torch.Tensor:
    """|ΔNDCG|-weighted logistic loss; the weights come from the current ranking and are constants."""
    flat, lab = x.reshape(-1), label.reshape(-1).double()
    sizes = [flat.shape[0]] if lengths is None else lengths.tolist()
    out = []
    for xs, ls in zip(flat.split(sizes), lab.split(sizes), strict=True):
        n = xs.shape[0]
        gains = 2.0**ls - 1 if gain == "exp2" else ls
        order = torch.sort(xs.detach(), descending=True, stable=True).indices  # ties keep input order
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n)
        positions = torch.arange(n, dtype=torch.float64)
        discount = torch.where((positions < topn) | (topn == 0), 1 / torch.log2(positions + 2), 0.0)
        idcg = (torch.sort(gains, descending=True).values * discount).sum()
        d = discount[rank]
        weight = (gains[:, None] - gains[None, :]).abs() * (d[:, None] - d[None, :]).abs() / idcg.clamp_min(1e-300)
        pair = (ls[:, None] - ls[None, :]) >= FLT_EPSILON
        z = -sigma * (xs[:, None] - xs[None, :])  # row: the higher label
        term = torch.logaddexp(torch.zeros_like(z), z) * weight.to(xs.dtype)
        total = torch.where(pair, term, torch.zeros((), dtype=x.dtype)).sum()
        out.append(total / pair.sum().clamp_min(1))
    return torch.stack(out)


REFERENCES: dict[str, Callable[..., torch.Tensor]] = {
    "LambdaRankLoss": _ref_lambdarank,
    "MarginRankingCriterion": _ref_margin_ranking,
    "PairWiseLoss": _ref_pairwise_logistic,
    "PairWiseHingeLoss": _ref_pairwise_hinge,
    "Negative": lambda x: -x,
    # identity forward, minus the identity as its declared derivative
    "NegateGradient": lambda x: 2 * x.detach() - x,
}


def test_every_forward_op_has_a_torch_reference() -> None:
    missing = sorted(set(forward_ops()) - set(REFERENCES))
    assert not missing, f"write the loss with torch ops in REFERENCES (tests/nn/test_autodiff.py): {missing}"


def _cases_by_dtype() -> list[Any]:
    return [pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}") for name in forward_ops() for dtype in DTYPES]


def _samples_in(name: str, dtype: torch.dtype) -> list[Sample]:
    """The op's samples with the float inputs rounded to ``dtype``."""
    out = []
    for sample in sampler(name)(torch.float64):
        inputs = tuple(t.to(dtype) if k in sample.float_inputs else t for k, t in enumerate(sample.inputs))
        out.append(Sample(inputs, sample.args, sample.float_inputs, sample.desc))
    return out


def _bind(fn: Callable[..., Any], sample: Sample) -> tuple[Callable[..., Any], tuple[torch.Tensor, ...]]:
    """``fn`` as a function of the sample's float inputs."""
    positions = list(sample.float_inputs)

    def bound(*diff: torch.Tensor) -> torch.Tensor:
        inputs = list(sample.inputs)
        for k, t in zip(positions, diff, strict=True):
            inputs[k] = t
        return fn(*inputs, **sample.args)

    return bound, tuple(sample.inputs[k] for k in positions)


def _upcast(xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.double() for t in xs)


def _close(got: Any, expected: Any, dtype: torch.dtype) -> None:
    got = tuple(g.double() for g in got) if isinstance(got, tuple) else got.double()
    torch.testing.assert_close(got, expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize(("name", "dtype"), _cases_by_dtype())
def test_jvp_matches_torch(name: str, dtype: torch.dtype) -> None:
    for sample in _samples_in(name, dtype):
        ours, primals = _bind(torch_op(name), sample)
        ref, _ = _bind(REFERENCES[name], sample)
        g = torch.Generator().manual_seed(7)
        tangents = tuple(torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype) for p in primals)
        value, tangent = jvp(ours, primals, tangents)
        ref_value, ref_tangent = jvp(ref, _upcast(primals), _upcast(tangents))
        assert value.dtype == tangent.dtype == dtype
        _close(value, ref_value, dtype)
        _close(tangent, ref_tangent, dtype)
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents, strict=True)]
            _close(fwAD.unpack_dual(ours(*duals)).tangent, ref_tangent, dtype)


def _scalarised(fn: Callable[..., torch.Tensor], weights: torch.Tensor) -> Callable[..., torch.Tensor]:
    # a weighted sum, so every output's second derivative counts
    return lambda *xs: (fn(*xs) * weights.to(xs[0].dtype)).sum()


@pytest.mark.parametrize(("name", "dtype"), _cases_by_dtype())
def test_hessian_and_hvp_match_torch(name: str, dtype: torch.dtype) -> None:
    for sample in _samples_in(name, dtype)[:2]:
        ours, primals = _bind(torch_op(name), sample)
        ref, _ = _bind(REFERENCES[name], sample)
        out_shape = ours(*primals).shape
        weights = torch.randn(out_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        f, f_ref = _scalarised(ours, weights), _scalarised(ref, weights)
        _close(_matrix(torch.autograd.functional.hessian(f, primals), primals),
               _matrix(torch.autograd.functional.hessian(f_ref, _upcast(primals)), primals), dtype)
        v = tuple(torch.randn(p.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
                  for p in primals)
        # v^T H (reverse over reverse) always; H v by torch's hvp and the forward-over-reverse Hessian where
        # the gradient makers reach the third order
        _, vh = torch.autograd.functional.vhp(f, primals, v)
        _close(vh, torch.autograd.functional.vhp(f_ref, _upcast(primals), _upcast(v))[1], dtype)
        argnums = tuple(range(len(primals)))
        if hessian_forward_over_reverse_available(name):
            _, hv = torch.autograd.functional.hvp(f, primals, v)
            _close(hv, torch.autograd.functional.hvp(f_ref, _upcast(primals), _upcast(v))[1], dtype)
            _close(_matrix(hessian(f, argnums=argnums)(*primals), primals),
                   _matrix(torch.func.hessian(f_ref, argnums=argnums)(*_upcast(primals)), primals), dtype)
        else:
            with pytest.raises(RuntimeError, match="needs the gradient of its gradient operator"):
                hessian(f, argnums=argnums)(*primals)
            with pytest.raises(RuntimeError, match="has no gradient maker"):
                torch.autograd.functional.hvp(f, primals, v)


def _matrix(h: Any, primals: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A Hessian over several inputs (nested tuples of blocks, or one tensor) as one square matrix."""
    rows = ((h,),) if isinstance(h, torch.Tensor) else tuple(tuple(row) for row in h)
    return torch.cat([torch.cat([block.reshape(a.numel(), -1) for block in row], 1)
                      for row, a in zip(rows, primals, strict=True)])


@pytest.mark.parametrize(("name", "dtype"), _cases_by_dtype())
def test_vmap_matches_torch(name: str, dtype: torch.dtype) -> None:
    for sample in _samples_in(name, dtype):
        ours, primals = _bind(torch_op(name), sample)
        ref, _ = _bind(REFERENCES[name], sample)
        g = torch.Generator().manual_seed(11)
        batched = tuple(torch.stack([p, *(p + torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype)
                                             for _ in range(2))]) for p in primals)
        got = vmap(ours)(*batched)
        assert got.shape[0] == 3 and got.dtype == dtype
        _close(got, torch.stack([ref(*(b[i] for b in _upcast(batched))) for i in range(3)]), dtype)
        # only the first float input batched, along its last dimension
        if primals[0].dim() > 0:
            moved = torch.stack([primals[0], -primals[0]], dim=-1)
            got = vmap(ours, in_dims=(-1, *(None,) * (len(primals) - 1)))(moved, *primals[1:])
            want = torch.stack([ref(*_upcast((primals[0], *primals[1:]))), ref(*_upcast((-primals[0], *primals[1:])))])
            _close(got, want, dtype)


@pytest.mark.parametrize("name", forward_ops())
def test_per_sample_gradients_with_vmap_of_grad(name: str) -> None:
    """vmap over grad (per-example gradients, as in Opacus/functorch recipes) equals a loop."""
    sample = sampler(name)(torch.float64)[0]
    ours, primals = _bind(torch_op(name), sample)
    f = lambda *xs: ours(*xs).sum()
    batched = tuple(torch.stack([p, 2 * p, p - 1]) for p in primals)
    got = vmap(grad(f, argnums=tuple(range(len(primals)))))(*batched)
    for i in range(3):
        leaves = [b[i].clone().requires_grad_() for b in batched]
        want = torch.autograd.grad(f(*leaves), leaves)
        for g_got, g_want in zip(got, want, strict=True):
            torch.testing.assert_close(g_got[i], g_want)


# --------------------------------------------------------------------------------------------------------
# The functional front end: double backward and forward mode through reductions and padding
# --------------------------------------------------------------------------------------------------------
def _session_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    n = sum(LENGTHS)
    return (torch.randn(n, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=g), torch.tensor(LENGTHS))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_functional_losses_gradgradcheck(reduction: str) -> None:
    scores, labels, lengths = _session_batch()
    s = scores.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: PF.pairwise_logistic_loss(t, labels, lengths, reduction=reduction),
                                        (s,))
    padded = s.detach()[:12].reshape(3, 4).requires_grad_()
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradgradcheck(
        lambda t: PF.pairwise_logistic_loss(t, labels[:12].reshape(3, 4), mask=mask, reduction=reduction), (padded,))
    assert torch.autograd.gradcheck(
        lambda t: PF.pairwise_hinge_loss(t, labels[:12].reshape(3, 4), mask=mask, reduction=reduction, margin=0.3),
        (padded,), check_forward_ad=True)


def test_functional_vector_hessian_product_and_jvp_of_the_logistic_loss_match_torch() -> None:
    scores, labels, lengths = _session_batch()

    with_pairs = sum(1 for lab in labels.split(LENGTHS) if lab.numel() and lab.max() > lab.min())

    def ours(s: torch.Tensor) -> torch.Tensor:
        return PF.pairwise_logistic_loss(s, labels, lengths, reduction="mean")

    def ref(s: torch.Tensor) -> torch.Tensor:
        return _ref_pairwise_logistic(s, labels, lengths).sum() / with_pairs

    v = torch.randn(scores.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.functional.vhp(ours, scores, v),
                               torch.autograd.functional.vhp(ref, scores, v))
    torch.testing.assert_close(jvp(ours, (scores,), (v,)), jvp(ref, (scores,), (v,)))


@pytest.mark.parametrize("fn", ["negate_gradient", "negative"])
def test_negate_gradient_and_negative_forward_mode_and_vmap(fn: str) -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.randn(3, 4, dtype=torch.float64)
    scale = 0.5
    if fn == "negate_gradient":
        f = lambda v: PF.negate_gradient(v, scale=scale)
        declared = -scale * t  # jacfwd and jacrev agree on the declared Jacobian -scale * I
    else:
        f = lambda v: PF.negative(v)
        declared = -t
    value, tangent = jvp(f, (x,), (t,))
    assert torch.equal(value, x if fn == "negate_gradient" else -x)
    torch.testing.assert_close(tangent, declared)
    torch.testing.assert_close(jacfwd(f)(x[0]), jacrev(f)(x[0]))
    torch.testing.assert_close(vmap(f)(x), f(x))
    torch.testing.assert_close(vmap(f, in_dims=1)(x), f(x).t())
    # a batch of scales (vmap over the tensor scale): each entry's gradient scaled by its own scale
    scales = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    grads = vmap(grad(lambda v, k: (PF.negate_gradient(v, scale=k) * v.detach()).sum()))(x, scales)
    torch.testing.assert_close(grads, -scales[:, None] * x)
