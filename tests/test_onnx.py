"""ONNX export: every operator, and a trained scorer, run in ONNX Runtime and match PyTorch.

Each model is exported once per module (export takes seconds) with a dynamic batch dimension, then run
at other sizes: other N, other numbers and lengths of sessions, including empty, one-item and all-tied
sessions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

import pairloss.nn as pnn
import pairloss.nn.functional as PF
from pairloss import onnx as ponnx
from pairloss import registry
from pairloss.registry import OpSchema

RTOL = 1e-5
HINGE_REGISTERED = "PairWiseHingeLoss" in registry.operators()


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------
def run_onnx(program: torch.onnx.ONNXProgram, *inputs: Tensor | None) -> list[np.ndarray]:
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    given = [t for t in inputs if t is not None]
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(given)
    return session.run(None, {n: t.numpy() for n, t in zip(names, given)})


def op_types(program: torch.onnx.ONNXProgram) -> list[str]:
    return [node.op_type for node in program.model_proto.graph.node]


def assert_matches_torch(program: torch.onnx.ONNXProgram, model: torch.nn.Module, *inputs: Tensor | None,
                         atol: float = 0.0) -> None:
    with torch.no_grad():
        expected = model(*inputs).numpy()
    (got,) = run_onnx(program, *inputs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=atol)


def ranking_batch(lengths: list[int], seed: int, *, scale: float = 1.0, tied: int | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Scores, integer labels and int64 lengths; session ``tied`` gets one label for all its items."""
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    scores = torch.randn(n, generator=g) * scale
    labels = torch.randint(0, 4, (n,), generator=g)
    if tied is not None:
        start = sum(lengths[:tied])
        labels[start:start + lengths[tied]] = 2
    return scores, labels, torch.tensor(lengths)


# Sessions with every edge case at sizes the export never saw: one-item (1), empty (0), all-tied.
RUN_BATCHES = [
    ([1, 5, 4, 0, 3, 6], 2, 1.0),  # session 2 all tied
    ([2, 7], None, 30.0),  # saturated softplus: |z| up to ~200
    ([11], 0, 1.0),  # a single all-tied session: no pair anywhere
    ([4, 1, 1, 9, 3, 2, 5], None, 0.01),  # nearly tied scores
]


class Lambda(torch.nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.fn(*inputs)


# --------------------------------------------------------------------------------------------------------
# The mapping comes from the registry
# --------------------------------------------------------------------------------------------------------
def test_translation_table_holds_exactly_the_operators_that_declare_a_mapping() -> None:
    table = {op.name(): fn for op, fn in ponnx.translation_table().items()}
    for s in registry.all_schemas():
        qualname = pnn.torch_op(s.name).name()
        assert (qualname in table) == (registry.onnx_mapping(s.name) != "none"), s.name
    assert "pairloss::scale_gradient" in table  # negate_gradient(x, scale): identity forward


def test_every_forward_operator_declares_an_onnx_mapping() -> None:
    missing = [s.name for s in registry.all_schemas(include_gradients=False) if registry.onnx_mapping(s.name) == "none"]
    assert not missing, f"declare .inherit_onnx_schema(...) or .onnx_decomposition(...) in the op module: {missing}"


def test_negative_inherits_neg_and_negate_gradient_identity() -> None:
    assert registry.onnx_mapping("Negative") == "Neg"
    assert registry.onnx_mapping("NegateGradient") == "Identity"
    assert registry.onnx_mapping("PairWiseLoss") == "decomposition"
    assert ponnx.onnx_builder("PairWiseLoss") is ponnx.pairwise_loss_decomposition


def test_a_decomposition_named_by_a_bad_string_fails_naming_the_op() -> None:
    s = OpSchema("Made Up", defined_at="test").onnx_decomposition("pairloss.onnx:no_such_builder")
    with pytest.raises(ImportError, match="Made Up"):
        ponnx.onnx_builder(s)


def test_importing_pairloss_and_its_onnx_module_imports_neither_torch_nor_onnxscript() -> None:
    code = "import sys, pairloss.onnx; print(sorted({'torch', 'onnxscript', 'onnx'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_operator_without_mapping_is_named_before_the_exporter_fails() -> None:
    model = Lambda(lambda s, lab, g: torch.ops.pairloss.pairwise_loss_gradient(s, lab, g))
    inputs = (torch.randn(4), torch.tensor([0, 1, 0, 2]), torch.ones(1))
    with pytest.raises(ValueError, match=r"PairWiseLossGradient.*no ONNX mapping"):
        ponnx.export(model, inputs, dynamic_batch=False)


# --------------------------------------------------------------------------------------------------------
# Negative -> Neg, NegateGradient -> Identity
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def negative_program() -> torch.onnx.ONNXProgram:
    return ponnx.export(pnn.Negative(), (torch.randn(4, 3),))


@pytest.fixture(scope="module")
def negate_gradient_program() -> torch.onnx.ONNXProgram:
    return ponnx.export(pnn.NegateGradient(), (torch.randn(4, 3),))


def test_negative_is_one_neg_node(negative_program: torch.onnx.ONNXProgram) -> None:
    onnx.checker.check_model(negative_program.model_proto, full_check=True)
    assert op_types(negative_program) == ["Neg"]


@pytest.mark.parametrize("n", [1, 7, 50])
def test_negative_matches_torch_at_any_batch_size(negative_program: torch.onnx.ONNXProgram, n: int) -> None:
    x = torch.randn(n, 3)
    x[0, 0] = 0.0
    (got,) = run_onnx(negative_program, x)
    np.testing.assert_array_equal(got, -x.numpy())
    assert np.signbit(got[0, 0])  # -(+0.0) is -0.0, as the op


def test_negate_gradient_is_one_identity_node(negate_gradient_program: torch.onnx.ONNXProgram) -> None:
    onnx.checker.check_model(negate_gradient_program.model_proto, full_check=True)
    assert op_types(negate_gradient_program) == ["Identity"]
    x = torch.randn(9, 3)
    np.testing.assert_array_equal(run_onnx(negate_gradient_program, x)[0], x.numpy())


def test_in_place_negative_in_a_model_exports_as_neg() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.negative = torch.nn.Linear(3, 2), pnn.Negative(inplace=True)

        def forward(self, x: Tensor) -> Tensor:
            return self.negative(self.linear(x)) + 1.0

    model = Net()
    program = ponnx.export(model, (torch.randn(4, 3),))
    assert "Neg" in op_types(program)
    assert_matches_torch(program, model, torch.randn(6, 3), atol=1e-6)


# --------------------------------------------------------------------------------------------------------
# MarginRankingCriterion
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def margin_model() -> torch.nn.Module:
    return pnn.MarginRankingLoss(margin=0.3, reduction="none")


@pytest.fixture(scope="module")
def margin_program(margin_model: torch.nn.Module) -> torch.onnx.ONNXProgram:
    return ponnx.export(margin_model, (torch.randn(5), torch.randn(5), torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0])))


def test_margin_ranking_is_standard_ops(margin_program: torch.onnx.ONNXProgram) -> None:
    onnx.checker.check_model(margin_program.model_proto, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in margin_program.model_proto.graph.node)


@pytest.mark.parametrize("n", [1, 3, 40])
def test_margin_ranking_matches_torch(margin_program: torch.onnx.ONNXProgram, margin_model: torch.nn.Module,
                                      n: int) -> None:
    g = torch.Generator().manual_seed(n)
    x1, x2 = torch.randn(n, generator=g), torch.randn(n, generator=g)
    y = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    x2[0] = x1[0] - 0.3 * y[0]  # on the kink: distance exactly 0
    # atol: at the kink the distance is a rounding residue; a float32 kernel would leave ~1e-8 there
    assert_matches_torch(margin_program, margin_model, x1, x2, y, atol=1e-7)


def test_margin_ranking_keeps_nan_like_the_op(margin_program: torch.onnx.ONNXProgram,
                                             margin_model: torch.nn.Module) -> None:
    x1, x2, y = torch.tensor([float("nan"), 1.0, 2.0]), torch.tensor([0.0, 1.0, 5.0]), torch.tensor([1.0, -1.0, 1.0])
    assert_matches_torch(margin_program, margin_model, x1, x2, y)  # assert_allclose: NaN where NaN


# --------------------------------------------------------------------------------------------------------
# PairWiseLoss (and PairWiseHingeLoss): sessions from lengths
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairwise_model() -> torch.nn.Module:
    return pnn.PairwiseLogisticLoss(reduction="none")


@pytest.fixture(scope="module")
def pairwise_program(pairwise_model: torch.nn.Module) -> torch.onnx.ONNXProgram:
    return ponnx.export(pairwise_model, ranking_batch([3, 4, 2], seed=0))


def test_pairwise_loss_graph_is_checked_standard_ops_with_dynamic_sizes(
        pairwise_program: torch.onnx.ONNXProgram) -> None:
    model = pairwise_program.model_proto
    onnx.checker.check_model(model, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert {"CumSum", "Where", "Exp", "Log"} <= set(op_types(pairwise_program))
    for graph_input in model.graph.input:  # N and S are symbolic, not the example's 9 and 3
        assert graph_input.type.tensor_type.shape.dim[0].dim_param


@pytest.mark.parametrize(("lengths", "tied", "scale"), RUN_BATCHES)
def test_pairwise_loss_matches_torch_per_session(pairwise_program: torch.onnx.ONNXProgram,
                                                 pairwise_model: torch.nn.Module, lengths: list[int],
                                                 tied: int | None, scale: float) -> None:
    scores, labels, lens = ranking_batch(lengths, seed=len(lengths), scale=scale, tied=tied)
    assert_matches_torch(pairwise_program, pairwise_model, scores, labels, lens)
    (got,) = run_onnx(pairwise_program, scores, labels, lens)
    no_pairs = [s for s, n in enumerate(lengths) if n < 2 or s == tied]
    assert np.all(got[no_pairs] == 0.0)


def test_pairwise_loss_without_lengths_and_other_dtypes() -> None:
    model = pnn.PairwiseLogisticLoss(reduction="mean")
    g = torch.Generator().manual_seed(3)
    program = ponnx.export(model, (torch.randn(6, 1, dtype=torch.float64), torch.rand(6, 1, generator=g)))
    scores = torch.randn(17, 1, dtype=torch.float64, generator=g) * 5
    labels = torch.rand(17, 1, generator=g).round(decimals=1)  # float labels, some tied
    assert_matches_torch(program, model, scores, labels)


class _HingeStandIn:
    """Until PairWiseHingeLoss is a registry op, its builder is checked through a stand-in custom op
    that runs the same loss in PyTorch (``pairloss.nn.functional.pairwise_hinge_loss``)."""

    op = None

    @classmethod
    def get(cls) -> torch._ops.OpOverload:
        if cls.op is None:
            @torch.library.custom_op("pairloss_onnx_test::pairwise_hinge_loss", mutates_args=())
            def hinge(scores: Tensor, labels: Tensor, lengths: Tensor | None, margin: float) -> Tensor:
                return PF.pairwise_hinge_loss(scores, labels, lengths, margin=margin, reduction="none")

            @hinge.register_fake
            def _(scores: Tensor, labels: Tensor, lengths: Tensor | None, margin: float) -> Tensor:
                return scores.new_empty(1 if lengths is None else lengths.shape[0])

            cls.op = hinge._opoverload
        return cls.op


@pytest.fixture(scope="module")
def hinge_model_and_program() -> tuple[torch.nn.Module, torch.onnx.ONNXProgram]:
    example = ranking_batch([3, 4, 2], seed=1)
    if HINGE_REGISTERED:
        model = pnn.PairwiseHingeLoss(margin=0.5, reduction="none")
        return model, ponnx.export(model, example)
    from onnxscript import opset18

    def translate(scores, labels, lengths=None, margin: float = 1.0):  # margin: float -> an attribute
        return ponnx.pairwise_hinge_loss_decomposition(opset18, scores, labels, lengths, margin=margin)

    op = _HingeStandIn.get()
    model = Lambda(lambda s, lab, lens: op(s, lab, lens, 0.5))
    return model, ponnx.export(model, example, custom_translation_table={op: translate})


@pytest.mark.parametrize(("lengths", "tied", "scale"), RUN_BATCHES)
def test_pairwise_hinge_loss_matches_torch_per_session(hinge_model_and_program: tuple, lengths: list[int],
                                                       tied: int | None, scale: float) -> None:
    model, program = hinge_model_and_program
    onnx.checker.check_model(program.model_proto, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in program.model_proto.graph.node)
    scores, labels, lens = ranking_batch(lengths, seed=10 + len(lengths), scale=scale, tied=tied)
    assert_matches_torch(program, model, scores, labels, lens, atol=1e-6 * scale)


# --------------------------------------------------------------------------------------------------------
# Scorers: a random one through the API, a trained checkpoint through the CLI
# --------------------------------------------------------------------------------------------------------
def test_random_linear_scorer_with_a_loss_head_matches_torch(tmp_path: Path) -> None:
    from pairloss.ltr.models import LinearScorer

    scorer = LinearScorer(5).fit_standardizer(torch.randn(30, 5) * 3 + 1)

    class ScoreAndLoss(torch.nn.Module):  # a scorer, a gradient-reversal layer and the loss in one graph
        def __init__(self) -> None:
            super().__init__()
            self.scorer, self.reverse = scorer, pnn.GradientReversal(scale=0.5)
            self.loss = pnn.PairwiseLogisticLoss(reduction="none")

        def forward(self, features: Tensor, labels: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
            scores = self.reverse(self.scorer(features))
            return scores, self.loss(scores, labels, lengths)

    model = ScoreAndLoss()
    _, labels, lengths = ranking_batch([4, 4], seed=2)
    program = ponnx.export(model, (torch.randn(8, 5), labels, lengths), tmp_path / "m.onnx")
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    _, labels, lengths = ranking_batch([1, 6, 3, 0, 2], seed=4, tied=2)
    features = torch.randn(12, 5)
    with torch.no_grad():
        scores, losses = model(features, labels, lengths)
    got_scores, got_losses = run_onnx(program, features, labels, lengths)
    np.testing.assert_allclose(got_scores, scores.numpy(), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(got_losses, losses.numpy(), rtol=RTOL, atol=1e-6)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pairloss.ltr import TrainConfig, make_toy_dataset, train

    train_data, valid_data, _ = make_toy_dataset(n_queries=30, docs_per_query=6, n_features=7, seed=0)
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="mlp", hidden=(8, 4), dropout=0.2, epochs=1, seed=0)
    return train(config, train_data, valid_data, out, progress=False).best_path


def test_cli_exports_a_trained_checkpoint_that_scores_like_torch(trained_checkpoint: Path, tmp_path: Path) -> None:
    from pairloss.cli import app
    from pairloss.ltr import load_model

    out = tmp_path / "scorer.onnx"
    result = CliRunner().invoke(app, ["export", str(trained_checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "matches PyTorch" in result.output
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["features"] and [o.name for o in model.graph.output] == ["scores"]
    scorer = load_model(trained_checkpoint)  # eval mode: dropout off, as in the exported graph
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 2, 37):
        features = torch.randn(n, 7) * 4
        (got,) = session.run(None, {"features": features.numpy()})
        with torch.no_grad():
            expected = scorer(features).numpy()
        assert got.shape == (n,)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-6)


def test_cli_export_of_a_missing_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    from pairloss.cli import app

    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert "no such file" in result.output


# --------------------------------------------------------------------------------------------------------
# Plain torch.onnx.export and torch.export.export, no wrapper
# --------------------------------------------------------------------------------------------------------
def plain_export(model: torch.nn.Module, args: tuple[Tensor, ...], **kwargs: object) -> torch.onnx.ONNXProgram:
    with ponnx._quiet_exporter():
        return torch.onnx.export(model.eval(), args, dynamo=True, verbose=False, **kwargs)


def test_plain_torch_onnx_export_of_negative_and_negate_gradient_gives_neg() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), pnn.Negative(), pnn.NegateGradient())
    x = torch.randn(5, 4)
    program = plain_export(model, (x,))
    onnx.checker.check_model(program.model_proto, full_check=True)
    assert "Neg" in op_types(program)
    assert all(node.domain in ("", "ai.onnx") for node in program.model_proto.graph.node)
    (got,) = run_onnx(program, x)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # Gemm vs addmm rounding only


class LossHead(torch.nn.Module):
    """A scorer with every pairloss loss on top, flat sessions and a padded batch, tensor margins included."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.scorer = torch.nn.Linear(3, 1)
        self.reverse = pnn.GradientReversal(scale=0.5)
        self.logistic = pnn.PairwiseLogisticLoss(reduction="none")
        self.hinge = pnn.PairwiseHingeLoss(margin=torch.tensor(0.5), reduction="mean", padding_label=-1)
        self.margin = pnn.MarginRankingLoss(margin=0.2, reduction="sum")

    def forward(self, features: Tensor, labels: Tensor, lengths: Tensor, padded: Tensor, padded_labels: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        scores = self.reverse(self.scorer(features).squeeze(-1))
        rows = self.scorer(padded).squeeze(-1)
        return (self.logistic(scores, labels, lengths), self.hinge(rows, padded_labels),
                self.margin(scores[:3], scores[3:6], torch.ones(3)))


def _loss_head_inputs(seed: int) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    padded_labels = torch.randint(0, 3, (3, 4), generator=g)
    padded_labels[0, 2:] = -1
    padded_labels[2, 1] = -1
    return (torch.randn(9, 3, generator=g), torch.randint(0, 3, (9,), generator=g), torch.tensor([4, 0, 5]),
            torch.randn(3, 4, 3, generator=g), padded_labels)


def test_plain_torch_onnx_export_of_a_model_with_every_loss_matches_torch() -> None:
    model = LossHead().eval()
    args = _loss_head_inputs(0)
    program = plain_export(model, args)
    onnx.checker.check_model(program.model_proto, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in program.model_proto.graph.node)
    with torch.no_grad():
        expected = [t.numpy() for t in model(*args)]
    for got, want in zip(run_onnx(program, *args), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)


def test_plain_torch_export_export_then_onnx_of_the_same_model() -> None:
    model = LossHead().eval()
    args = _loss_head_inputs(1)
    exported = torch.export.export(model, args)
    with torch.no_grad():
        expected = model(*args)
    torch.testing.assert_close(exported.module()(*args), expected)
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"pairloss.pairwise_loss.default", "pairloss.pairwise_hinge_loss.tensor_args",
            "pairloss.margin_ranking_criterion.default", "pairloss.negate_gradient.default"} <= targets
    with ponnx._quiet_exporter():
        program = torch.onnx.export(exported, args, dynamo=True, verbose=False)
    for got, want in zip(run_onnx(program, *args), expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=RTOL, atol=1e-6)


def test_importing_pairloss_nn_defers_onnxscript_and_still_exports_plainly() -> None:
    # a fresh interpreter: pairloss.nn must not import onnxscript (a second of start-up), and a plain
    # torch.onnx.export afterwards must find the translations (registered when the exporter loads)
    code = (
        "import sys, torch, numpy as np, onnxruntime as ort\n"
        "import pairloss.nn as pnn\n"
        "assert 'onnxscript' not in sys.modules\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 3), pnn.Negative(), pnn.NegateGradient()).eval()\n"
        "x = torch.randn(2, 4)\n"
        "p = torch.onnx.export(m, (x,), dynamo=True, verbose=False)\n"
        "s = ort.InferenceSession(p.model_proto.SerializeToString(), providers=['CPUExecutionProvider'])\n"
        "np.testing.assert_allclose(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0], m(x).detach().numpy(),"
        " rtol=1e-6, atol=1e-6)\n"
        "print(sorted({n.op_type for n in p.model_proto.graph.node}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Neg" in result.stdout


def test_register_with_exporter_is_idempotent() -> None:
    ponnx.install_exporter_hook()
    assert ponnx.register_with_exporter() == []


# --------------------------------------------------------------------------------------------------------
# LambdaRankLoss: its decomposition
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("topn", "gain", "sigma"), [(0, "exp2", 1.0), (3, "linear", 0.5)])
def test_lambdarank_decomposition_matches_torch(topn: int, gain: str, sigma: float) -> None:
    model = pnn.LambdaRankLoss(sigma=sigma, topn=topn, gain=gain, reduction="none")
    program = ponnx.export(model, ranking_batch([3, 4, 2], seed=5))
    assert all(node.domain in ("", "ai.onnx") for node in program.model_proto.graph.node)
    for lengths, tied, scale in RUN_BATCHES:
        scores, labels, lens = ranking_batch(lengths, seed=20 + len(lengths), scale=scale, tied=tied)
        scores[1] = scores[0]  # a score tie: ranked by position, as the kernel
        assert_matches_torch(program, model, scores, labels, lens, atol=1e-6)
