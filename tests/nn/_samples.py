"""Sample inputs for every registry operator's torch op, chosen by the schema's input names.

Like OpInfo's sample-input functions, but keyed by input signature, so an operator added to the registry
with known inputs (PairWiseHingeLoss has PairWiseLoss's) is sampled without an edit here. Gradient-op
samples are derived from the forward samples through the registry's gradient defs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pairloss import registry
from pairloss.nn._torch_ops import torch_op
from pairloss.registry import OperatorDef

# Sessions with every edge case: an empty one, a one-item one, an all-tied one, and two ordinary ones.
LENGTHS = [3, 0, 1, 4, 5]
LABELS = [2.0, 0.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 0.0, 3.0, 1.0, 3.0, 2.0]


@dataclass
class Sample:
    inputs: tuple[Any, ...]
    args: dict[str, Any] = field(default_factory=dict)
    # indices of inputs that are differentiable scores (the others are labels, lengths)
    float_inputs: tuple[int, ...] = (0,)
    desc: str = ""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pair_samples(dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> list[Sample]:
    """X1, X2, Y: moved at least 0.1 away from the hinge's kink (Caffe2's test did the same)."""
    out = []
    for shape, margin, seed in (((6,), 1.0, 0), ((2, 3), 0.3, 1), ((), -0.2, 2)):
        g = _gen(seed)
        x1 = torch.randn(shape, generator=g, dtype=torch.float64)
        x2 = torch.randn(shape, generator=g, dtype=torch.float64)
        y = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
        # Make singular points less sensitive (margin_ranking_criterion_op_test.py)
        x1 = torch.where((margin - y * (x1 - x2)).abs() < 0.1, x1 + 0.1, x1)
        x2 = torch.where((margin - y * (x1 - x2)).abs() < 0.1, x2 - 0.1, x2)
        x1 = x1.to(dtype).requires_grad_(requires_grad)
        x2 = x2.to(dtype).requires_grad_(requires_grad)
        out.append(Sample((x1, x2, y.to(torch.int32)), {"margin": margin}, (0, 1), f"shape{list(shape)}"))
    return out


def session_samples(dtype: torch.dtype = torch.float64, requires_grad: bool = False,
                    args: dict[str, Any] | None = None) -> list[Sample]:
    """X, label, lengths: several sessions (empty, one item, all tied), no lengths, and an (N, 1) column."""
    g = _gen(3)
    n = sum(LENGTHS)
    scores = (torch.randn(n, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.tensor(LABELS, dtype=torch.float32)
    lengths = torch.tensor(LENGTHS, dtype=torch.int32)
    args = dict(args or {})

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone().requires_grad_(requires_grad)

    return [
        Sample((leaf(scores), labels, lengths), args, desc="sessions"),
        Sample((leaf(scores[:5]), labels[:5].long()), args, desc="no-lengths"),
        Sample((leaf(scores[:4].reshape(4, 1)), labels[:4].reshape(4, 1), torch.tensor([2, 2])), args,
               desc="column"),
    ]


def unary_samples(dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> list[Sample]:
    g = _gen(4)
    return [Sample((torch.randn(2, 3, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad),),
                   desc="2x3"),
            Sample((torch.randn((), generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad),),
                   desc="0-d")]


def _sessions_with_defaults(name: str) -> Callable[..., list[Sample]]:
    def make(dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> list[Sample]:
        s = registry.schema(name)
        return session_samples(dtype, requires_grad, {a.name: a.default for a in s.args if not a.required})

    return make


def sampler(name: str) -> Callable[..., list[Sample]]:
    """The sample function of a forward registry op, from its input names."""
    names = tuple(i.name for i in registry.schema(name).inputs)
    if names == ("X1", "X2", "Y"):
        return pair_samples
    if names == ("X", "label", "lengths"):
        return _sessions_with_defaults(name)
    if names == ("X",):
        return unary_samples
    msg = f"no torch sample inputs for {name} with inputs {names}: add a sampler to tests/nn/_samples.py"
    raise LookupError(msg)


def forward_ops() -> list[str]:
    return [s.name for s in registry.all_schemas(include_gradients=False)]


def _derived_samples(name: str, sample: Sample) -> list[tuple[str, Sample]]:
    """Samples of the gradient ops of ``name``: run it on ``sample``, draw output gradients, and resolve
    each gradient def's blobs (I(k), O(k), GO(k)) against them. An input of a gradient op is
    differentiable when it is a differentiable input of ``name``, one of its outputs, or an output
    gradient (labels and lengths are not)."""
    s = registry.schema(name)
    given = [t for t in sample.inputs if t is not None]
    outputs = torch_op(name)(*given, **sample.args)
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    ws: dict[str, torch.Tensor] = {f"in{k}": t.detach() for k, t in enumerate(given)}
    differentiable = {f"in{k}" for k in sample.float_inputs}
    for k, o in enumerate(outputs):
        ws[f"out{k}"] = o.detach()
        ws[registry.grad_name(f"out{k}")] = torch.randn(o.shape, generator=_gen(5 + k), dtype=torch.float64
                                                         ).to(o.dtype)
        differentiable |= {f"out{k}", registry.grad_name(f"out{k}")}
    op = OperatorDef(name, tuple(f"in{k}" for k in range(len(given))),
                     tuple(f"out{k}" for k in range(len(s.outputs))), dict(sample.args))
    out = []
    for d in registry.get_gradient_defs(op):
        inputs = tuple(ws[b] for b in d.inputs)
        floats = tuple(j for j, b in enumerate(d.inputs) if b in differentiable)
        out.append((d.type, Sample(inputs, dict(d.args), floats, desc=f"{name}-{sample.desc}")))
    return out


def gradient_samples(max_order: int = 3) -> dict[str, list[Sample]]:
    """Inputs of every gradient op, of every order up to ``max_order``, derived from the forward samples
    through the registry's gradient defs (a gradient op's gradient ops get samples from its samples)."""
    out: dict[str, list[Sample]] = {}
    frontier: list[tuple[str, Sample]] = []
    for name in forward_ops():
        try:
            frontier += [(name, sample) for sample in sampler(name)()]
        except LookupError:
            continue  # reported by test_every_forward_op_has_torch_samples
    for _ in range(max_order):
        derived = [pair for name, sample in frontier if registry.has_gradient(name)
                   for pair in _derived_samples(name, sample)]
        for name, sample in derived:
            out.setdefault(name, []).append(sample)
        frontier = derived
    return out
