"""torch.compile(fullgraph=True) and torch.export through the custom ops: same values and gradients as eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pairloss.nn as pnn
from tests.nn._samples import LABELS, LENGTHS

KINDS = ["margin_ranking", "pairwise_logistic", "pairwise_hinge", "negative", "gradient_reversal"]


class Model(nn.Module):
    """A small scorer feeding one pairloss module (or all of them, kind="all")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.body = nn.Linear(6, 4, dtype=torch.float64)
        self.head = nn.Linear(4, 1, dtype=torch.float64)
        self.mrl = pnn.MarginRankingLoss(margin=0.3)
        self.logistic = pnn.PairwiseLogisticLoss()
        self.hinge = pnn.PairwiseHingeLoss(margin=0.5, reduction="sum")
        self.negative = pnn.Negative()
        self.reverse = pnn.GradientReversal(scale=0.5)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x))).squeeze(-1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s = self.score(x)
        losses = {
            "margin_ranking": lambda: self.mrl(s[:6], s[6:12], torch.where(labels[:6] > labels[6:12], 1.0, -1.0)),
            "pairwise_logistic": lambda: self.logistic(s, labels, lengths),
            "pairwise_hinge": lambda: self.hinge(s, labels, lengths),
            "negative": lambda: self.negative(s).exp().mean(),
            "gradient_reversal": lambda: (self.head(self.reverse(torch.tanh(self.body(x)))) ** 2).mean() + s.mean(),
        }
        if self.kind == "all":
            return sum(f() for f in losses.values())  # type: ignore[return-value]
        return losses[self.kind]()


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(LENGTHS), 6, generator=g, dtype=torch.float64)
    return x, torch.tensor(LABELS, dtype=torch.float64), torch.tensor(LENGTHS)


def _loss_and_grads(model: nn.Module, fn: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = fn(*_data())  # type: ignore[operator]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _check_compiled_matches_eager(kind: str, backend: str) -> None:
    model = Model(kind)
    eager_loss, eager_grads = _loss_and_grads(model, model)
    compiled = torch.compile(model, fullgraph=True, backend=backend, dynamic=False)
    loss, grads = _loss_and_grads(model, compiled)
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(grads, eager_grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_module_matches_eager_aot_eager(kind: str) -> None:
    torch._dynamo.reset()
    _check_compiled_matches_eager(kind, "aot_eager")


def test_compiled_model_with_every_module_matches_eager_inductor() -> None:
    """The default backend (inductor, C++ codegen on CPU) around the opaque custom ops."""
    torch._dynamo.reset()
    _check_compiled_matches_eager("all", "inductor")


def test_dynamic_shapes_trace_the_session_count_symbolically() -> None:
    torch._dynamo.reset()
    fn = torch.compile(lambda s, lab, lens: pnn.functional.pairwise_logistic_loss(s, lab, lens, reduction="none"),
                       fullgraph=True, backend="aot_eager", dynamic=True)
    for lengths in ([3, 0, 1, 4, 5], [2, 2], [13]):
        n = sum(lengths)
        s = torch.linspace(-1, 1, n, dtype=torch.float64)
        lab = torch.tensor(LABELS[:n], dtype=torch.float64)
        lens = torch.tensor(lengths)
        out = fn(s, lab, lens)
        assert out.shape == (len(lengths),)
        torch.testing.assert_close(out, pnn.functional.pairwise_logistic_loss(s, lab, lens, reduction="none"))


def test_torch_export_of_a_model_with_every_module() -> None:
    model = Model("all")
    args = _data()
    exported = torch.export.export(model, args)
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"pairloss.margin_ranking_criterion.default", "pairloss.pairwise_loss.default",
            "pairloss.negative.default", "pairloss.negate_gradient.default"} <= targets
    torch.testing.assert_close(exported.module()(*args), model(*args))


def test_compiled_in_place_negative_is_functionalized() -> None:
    torch._dynamo.reset()

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        pnn.functional.negative(y, inplace=True)  # pairloss::negative_ mutates y
        return y + 1

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    x = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(compiled(x), fn(x))
    assert x.tolist() == [1.0, -2.0, 0.5]


# ---- non-literal margins and scales, padded batches, under fullgraph=True, dynamic=True -----------------
def _counting_backend() -> tuple[object, list[int]]:
    compiled: list[int] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        compiled.append(1)
        return torch._dynamo.backends.common.aot_autograd(fw_compiler=lambda g, _: g)(gm, example_inputs)

    return backend, compiled


def test_a_margin_that_changes_every_call_compiles_once() -> None:
    """A Python float margin is a symbolic input under dynamic=True: it enters the graph as a tensor
    (the ops' tensor_args overload) instead of recompiling for each value until fullgraph fails."""
    torch._dynamo.reset()
    backend, compiled = _counting_backend()

    def fn(s1: torch.Tensor, s2: torch.Tensor, y: torch.Tensor, margin: float, scores: torch.Tensor,
           labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return (pnn.functional.margin_ranking_loss(s1, s2, y, margin=margin)
                + pnn.functional.pairwise_hinge_loss(scores, labels, lengths, margin=2 * margin)
                + pnn.functional.negate_gradient(scores, scale=margin).sum())

    f = torch.compile(fn, fullgraph=True, dynamic=True, backend=backend)
    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    y = torch.tensor([1, -1] * 3)
    scores = torch.randn(13, generator=g, dtype=torch.float64)
    labels, lengths = torch.tensor(LABELS, dtype=torch.float64), torch.tensor(LENGTHS)
    for k in range(12):  # more values than torch's recompile limit (8)
        margin = 0.05 * k + 0.01
        a, b = scores.clone().requires_grad_(), scores.clone().requires_grad_()
        got = f(s1, s2, y, margin, a, labels, lengths)
        want = fn(s1, s2, y, margin, b, labels, lengths)
        torch.testing.assert_close(got, want)
        got.backward()
        want.backward()
        torch.testing.assert_close(a.grad, b.grad)
    assert len(compiled) == 1


def test_a_tensor_margin_and_a_tensor_derived_float_compile_once() -> None:
    torch._dynamo.reset()
    torch._dynamo.config.capture_scalar_outputs = True
    try:
        backend, compiled = _counting_backend()
        loss = pnn.MarginRankingLoss(margin=torch.tensor(0.3))
        reverse = pnn.GradientReversal(scale=torch.tensor(1.0))

        def fn(s1: torch.Tensor, s2: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            derived = pnn.functional.margin_ranking_loss(s1, s2, y, margin=m.item())  # a tensor-derived float
            return loss(reverse(s1), s2, y) + derived

        f = torch.compile(fn, fullgraph=True, dynamic=True, backend=backend)
        s1, s2, y = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64), torch.ones(5)
        for k in range(10):
            loss.margin.fill_(0.1 * k)  # a schedule: the module's margin and scale updated in place
            reverse.scale.fill_(0.5 * k)
            m = torch.tensor(0.2 * k, dtype=torch.float64)
            a, b = s1.clone().requires_grad_(), s1.clone().requires_grad_()
            got, want = f(a, s2, y, m), fn(b, s2, y, m)
            torch.testing.assert_close(got, want)
            got.backward()
            want.backward()
            torch.testing.assert_close(a.grad, b.grad)
        assert len(compiled) == 1
    finally:
        torch._dynamo.config.capture_scalar_outputs = False


def test_padded_batches_compile_fullgraph_with_dynamic_shapes() -> None:
    torch._dynamo.reset()
    backend, compiled = _counting_backend()

    def fn(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (pnn.functional.pairwise_logistic_loss(scores, labels, mask=mask)
                + pnn.functional.pairwise_hinge_loss(scores, labels, mask=mask, reduction="sum"))

    f = torch.compile(fn, fullgraph=True, dynamic=True, backend=backend)
    g = torch.Generator().manual_seed(1)
    for rows, width in ((3, 5), (4, 7), (2, 3)):
        scores = torch.randn(rows, width, generator=g, dtype=torch.float64)
        labels = torch.randint(0, 3, (rows, width), generator=g)
        mask = torch.rand(rows, width, generator=g) < 0.7
        a, b = scores.clone().requires_grad_(), scores.clone().requires_grad_()
        got, want = f(a, labels, mask), fn(b, labels, mask)
        torch.testing.assert_close(got, want)
        got.backward()
        want.backward()
        torch.testing.assert_close(a.grad, b.grad)
    assert len(compiled) <= 2  # sizes 0/1 specialise; the rest is one dynamic graph
    with pytest.raises(RuntimeError, match="labels must be >= 0"):  # the check runs inside the graph
        f(torch.zeros(2, 3), torch.tensor([[1, 0, -1], [0, 0, 0]]), torch.ones(2, 3, dtype=torch.bool))
