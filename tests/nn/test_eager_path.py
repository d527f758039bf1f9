"""The eager path of the session losses: plain CPU autograd calls run the registry's fused kernels without the
custom op's dispatch (pairloss.nn._torch_ops.session_loss_eager). It must be invisible: the same values and
gradients to the bit as the custom op, double backward included, and anything that may look inside a call
(torch.func transforms, forward-mode AD, torch function and dispatch modes, tensor subclasses, the compiler)
must get the custom op instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import pairloss.nn.functional as PF
from pairloss.nn import _torch_ops
from pairloss.nn import functional as functional_module

LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "logistic": PF.pairwise_logistic_loss,
    "hinge": lambda *a, **k: PF.pairwise_hinge_loss(*a, margin=0.7, **k),
    "lambdarank": lambda *a, **k: PF.lambdarank_loss(*a, sigma=1.3, topn=3, **k),
}
EAGER = "_EagerFusedLossBackward"


def _batch(layout: str, dtype: torch.dtype) -> tuple[torch.Tensor, tuple[Any, ...], dict[str, Any]]:
    """(scores, the other positional arguments, keyword arguments) of one layout."""
    g = torch.Generator().manual_seed(3)
    if layout == "padded":
        scores = torch.randn(4, 6, generator=g, dtype=torch.float64) * 2
        labels = torch.randint(0, 3, (4, 6), generator=g)
        mask = torch.rand(4, 6, generator=g) < 0.7
        mask[1] = False  # an all-padding row
        return scores.to(dtype), (labels,), {"mask": mask}
    lengths = torch.tensor([0, 5, 1, 7, 3, 0, 4])
    n = int(lengths.sum())
    scores = (torch.randn(n, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.randint(0, 3, (n,), generator=g)
    labels[6:13] = 1  # an all-tied session: no pair, not counted by the mean
    if layout == "column":
        return scores[:, None], (labels, lengths), {}
    if layout == "one session":
        return scores, (labels,), {}
    return scores, (labels, lengths), {}


def _graph_nodes(out: torch.Tensor) -> set[str]:
    """The names of the autograd nodes behind ``out``."""
    names, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None:
            names.add(type(node).__name__)
            todo.extend(fn for fn, _ in node.next_functions)
    return names


def _value_and_grad(fn: Callable[..., torch.Tensor], scores: torch.Tensor, args: tuple, kwargs: dict
                    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(value, gradient of a weighted sum of the values, whether the eager path ran)."""
    s = scores.clone().requires_grad_()
    out = fn(s, *args, **kwargs)
    (out * torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return out.detach(), s.grad, EAGER in _graph_nodes(out)


@contextmanager
def _custom_op_only() -> Iterator[None]:
    """Every call through the custom op, as before the eager path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(functional_module, "eager_applies", lambda *_a: False)
        yield


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("layout", ["flat", "padded", "column", "one session"])
@pytest.mark.parametrize("loss", LOSSES)
def test_eager_path_equals_the_custom_op_to_the_bit(loss: str, layout: str, reduction: str,
                                                    dtype: torch.dtype) -> None:
    scores, args, kwargs = _batch(layout, dtype)
    fn = LOSSES[loss]
    value, grad, eager = _value_and_grad(fn, scores, args, {**kwargs, "reduction": reduction})
    assert eager
    with _custom_op_only():
        value_op, grad_op, eager_op = _value_and_grad(fn, scores, args, {**kwargs, "reduction": reduction})
    assert not eager_op
    assert value.dtype == value_op.dtype == dtype and grad.dtype == dtype and grad.shape == scores.shape
    # a bfloat16 tensor has no NumPy view, so the custom op's result is reduced by torch in bfloat16; the
    # eager path sums in float64 and rounds once: they may differ in the last bfloat16 bit
    tol = 2.0**-7 if dtype == torch.bfloat16 and reduction != "none" else 0.0
    torch.testing.assert_close(value, value_op, rtol=tol, atol=0)
    torch.testing.assert_close(grad, grad_op, rtol=tol, atol=0)
    # without autograd: the plain kernel, the same values
    with torch.no_grad():
        torch.testing.assert_close(fn(scores, *args, **kwargs, reduction=reduction), value, rtol=0, atol=0)
    torch.testing.assert_close(fn(scores, *args, **kwargs, reduction=reduction), value, rtol=0, atol=0)


@pytest.mark.parametrize("label_dtype", [torch.bfloat16, torch.float16, torch.uint8, torch.int32],
                         ids=str)
@pytest.mark.parametrize("loss", LOSSES)
def test_eager_path_takes_labels_of_any_real_dtype(loss: str, label_dtype: torch.dtype) -> None:
    scores, (labels, lengths), _ = _batch("flat", torch.float32)
    args = (labels.to(label_dtype), lengths)
    value, grad, eager = _value_and_grad(LOSSES[loss], scores, args, {"reduction": "mean"})
    assert eager
    with _custom_op_only():
        value_op, grad_op, _ = _value_and_grad(LOSSES[loss], scores, args, {"reduction": "mean"})
    # bfloat16 labels have no NumPy view, so the custom op's mean is taken by torch in float32, the eager
    # path's in float64 (one rounding): the last float32 bit may differ
    tol = 2.0**-23 if label_dtype == torch.bfloat16 else 0.0
    torch.testing.assert_close(value, value_op, rtol=tol, atol=0)
    torch.testing.assert_close(grad, grad_op, rtol=tol, atol=0)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_double_backward_through_the_eager_path_equals_the_custom_op(loss: str, reduction: str) -> None:
    scores, args, kwargs = _batch("flat", torch.float64)
    direction = torch.randn(scores.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def hessian_vector_product() -> tuple[torch.Tensor, str]:
        s = scores.clone().requires_grad_()
        out = LOSSES[loss](s, *args, **kwargs, reduction=reduction)
        (g,) = torch.autograd.grad(out.sum(), s, create_graph=True)
        (hv,) = torch.autograd.grad((g * direction).sum(), s)
        return hv, type(out.grad_fn).__name__

    hv, grad_fn = hessian_vector_product()
    assert grad_fn == EAGER
    with _custom_op_only():
        hv_op, _ = hessian_vector_product()
    torch.testing.assert_close(hv, hv_op, rtol=1e-14, atol=1e-14)


def test_eager_path_passes_gradcheck_and_gradgradcheck() -> None:
    scores, (labels, lengths), _ = _batch("flat", torch.float64)
    s = scores.clone().requires_grad_()
    assert type(PF.pairwise_logistic_loss(s, labels, lengths).grad_fn).__name__ == EAGER
    assert torch.autograd.gradcheck(lambda t: PF.pairwise_logistic_loss(t, labels, lengths), (s,))
    assert torch.autograd.gradgradcheck(lambda t: PF.pairwise_logistic_loss(t, labels, lengths), (s,))


class _PassThroughFunctionMode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


class _PassThroughDispatchMode(torch.utils._python_dispatch.TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


class _Subclass(torch.Tensor):
    pass


def test_what_may_look_inside_a_call_disables_the_eager_path() -> None:
    scores, (labels, lengths), _ = _batch("flat", torch.float64)
    name = "PairWiseLoss"
    assert _torch_ops.eager_applies(name, scores, labels, lengths)
    assert _torch_ops.eager_applies(name, scores, labels, None)
    assert not _torch_ops.eager_applies("Negative", scores)  # no fused gradient kernels
    assert not _torch_ops.eager_applies(name, scores.to("meta"), labels, lengths)
    assert not _torch_ops.eager_applies(name, scores.as_subclass(_Subclass), labels, lengths)
    with _PassThroughFunctionMode():
        assert not _torch_ops.eager_applies(name, scores, labels, lengths)
    with _PassThroughDispatchMode():
        assert not _torch_ops.eager_applies(name, scores, labels, lengths)
    with fwAD.dual_level():
        assert not _torch_ops.eager_applies(name, scores, labels, lengths)
    seen = []
    torch.jit.trace(lambda t: seen.append(_torch_ops.eager_applies(name, t, labels, lengths)) or t * 2, scores,
                    check_trace=False)
    torch.func.vmap(lambda t: seen.append(_torch_ops.eager_applies(name, t, labels, lengths)) or t)(scores[None])
    torch.func.grad(lambda t: seen.append(_torch_ops.eager_applies(name, t, labels, lengths)) or t.sum())(scores)
    assert seen == [False, False, False]


def test_transforms_and_forward_ad_get_the_custom_op_with_the_same_numbers() -> None:
    scores, (labels, lengths), _ = _batch("flat", torch.float64)
    s = scores.clone().requires_grad_()
    out = PF.pairwise_logistic_loss(s, labels, lengths, reduction="sum")
    assert EAGER in _graph_nodes(out)
    (grad,) = torch.autograd.grad(out, s)
    by_func = torch.func.grad(lambda t: PF.pairwise_logistic_loss(t, labels, lengths, reduction="sum"))(scores)
    torch.testing.assert_close(by_func, grad, rtol=1e-14, atol=1e-14)
    tangent = torch.randn(scores.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with fwAD.dual_level():
        out = PF.pairwise_logistic_loss(fwAD.make_dual(scores, tangent), labels, lengths, reduction="sum")
        jvp = fwAD.unpack_dual(out).tangent
    torch.testing.assert_close(jvp, (grad * tangent).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_bad_input_on_the_eager_path_raises_as_the_custom_op(loss: str) -> None:
    scores = torch.randn(5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0.0, 1.0, float("inf"), 1.0, 0.0])
    with pytest.raises(ValueError) as eager:
        LOSSES[loss](scores, labels, torch.tensor([2, 3]))
    with _custom_op_only(), pytest.raises(ValueError) as from_op:
        LOSSES[loss](scores, labels, torch.tensor([2, 3]))
    assert str(eager.value) == str(from_op.value)
