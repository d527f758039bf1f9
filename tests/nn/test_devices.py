"""CPU against CUDA (Caffe2's assertDeviceChecks): every op and every functional agree on values and gradients.

The ``device`` fixture (tests/conftest.py) has ids cpu and cuda; the cuda case skips without a device.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import pairloss.nn.functional as PF
from pairloss import registry
from pairloss.nn._torch_ops import torch_op
from tests.nn._samples import LABELS, LENGTHS, Sample, forward_ops, sampler

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _to(sample: Sample, device: str) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(CPU leaves, device leaves) with the float inputs requiring grad."""
    cpu, dev = [], []
    for k, t in enumerate(sample.inputs):
        grad = k in sample.float_inputs and t.is_floating_point()
        cpu.append(t.detach().clone().requires_grad_(grad))
        dev.append(t.detach().to(device).requires_grad_(grad))
    return tuple(cpu), tuple(dev)


def _values_and_grads(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]
                      ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    out = fn(*inputs)
    leaves = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(out.sum(), leaves) if leaves and out.requires_grad else []
    return out.detach().cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("name", forward_ops())
def test_every_op_agrees_between_cpu_and_device(name: str, device: str) -> None:
    op = torch_op(name)
    for sample in sampler(name)(torch.float32):
        cpu, dev = _to(sample, device)
        out_cpu, grads_cpu = _values_and_grads(lambda *a, s=sample: op(*a, **s.args), cpu)
        out_dev, grads_dev = _values_and_grads(lambda *a, s=sample: op(*a, **s.args), dev)
        torch.testing.assert_close(out_dev, out_cpu, **TOL)
        torch.testing.assert_close(grads_dev, grads_cpu, **TOL)


@pytest.mark.parametrize("name", forward_ops())
def test_opcheck_on_device(name: str, device: str) -> None:
    sample = sampler(name)(torch.float32)[0]
    _, dev = _to(sample, device)
    torch.library.opcheck(torch_op(name), dev if registry.has_gradient(name) else
                          tuple(t.detach() for t in dev), sample.args)


FUNCTIONALS: dict[str, Callable[..., torch.Tensor]] = {
    "margin_ranking_loss": lambda s, lab, lens: PF.margin_ranking_loss(
        s[:6], s[6:12], torch.where(lab[:6] > lab[6:12], 1.0, -1.0).to(s.dtype), margin=0.2, reduction="sum"),
    "pairwise_logistic_loss": lambda s, lab, lens: PF.pairwise_logistic_loss(s, lab, lens, reduction="none"),
    "pairwise_hinge_loss": lambda s, lab, lens: PF.pairwise_hinge_loss(s, lab, lens, reduction="none"),
    "negative": lambda s, lab, lens: PF.negative(s),
    "negate_gradient": lambda s, lab, lens: PF.negate_gradient(s, scale=0.5) * lab,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fn", FUNCTIONALS)
def test_functional_agrees_between_cpu_and_device(fn: str, dtype: torch.dtype, device: str) -> None:
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(sum(LENGTHS), generator=g).to(dtype)
    labels, lengths = torch.tensor(LABELS, dtype=dtype), torch.tensor(LENGTHS)
    cpu = (scores.clone().requires_grad_(), labels, lengths)
    dev = (scores.to(device).requires_grad_(), labels.to(device), lengths.to(device))
    out_cpu, grads_cpu = _values_and_grads(FUNCTIONALS[fn], cpu)
    out_dev, grads_dev = _values_and_grads(FUNCTIONALS[fn], dev)
    assert out_dev.dtype == out_cpu.dtype == dtype
    tol = TOL if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out_dev, out_cpu, **tol)
    torch.testing.assert_close(grads_dev, grads_cpu, **tol)
