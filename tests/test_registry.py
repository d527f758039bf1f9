"""The registry in Caffe2's terms: schemas, defaults, gradient makers, RunOperatorOnce and the net."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import pairloss
from pairloss import registry
from pairloss.registry import Net, OperatorDef


def test_operators_lists_every_op_and_its_gradient() -> None:
    names = registry.operators()
    for name in ("MarginRankingCriterion", "MarginRankingCriterionGradient", "PairWiseLoss",
                 "PairWiseLossGradient", "Negative", "NegateGradient"):
        assert name in names
    assert "PairWiseLossGradient" not in registry.operators(include_gradients=False)


def test_schemas_declare_caffe2_structure() -> None:
    pwl = registry.schema("PairWiseLoss")
    assert (pwl.min_inputs, pwl.max_inputs, pwl.min_outputs, pwl.max_outputs) == (2, 3, 1, 1)
    assert [i.name for i in pwl.inputs] == ["X", "label", "lengths"]
    assert [i.optional for i in pwl.inputs] == [False, False, True]
    grad = registry.schema("PairWiseLossGradient")
    assert [i.name for i in grad.inputs] == ["X", "label", "Y_grad", "lengths"]
    mrc = registry.schema("MarginRankingCriterion")
    assert (mrc.min_inputs, mrc.max_inputs) == (3, 3)
    assert not mrc.inplace
    neg = registry.schema("Negative")
    assert neg.allows_inplace(0, 0) and neg.onnx_schema == "Neg"
    assert registry.schema("NegateGradient").allows_inplace(0, 0)


def test_each_default_is_written_once_in_the_schema() -> None:
    schema_default = registry.schema("MarginRankingCriterion").get_arg("margin").default
    assert schema_default == 1.0  # Caffe2's OP_SINGLE_ARG(float, "margin", margin_, 1.0)
    for fn in (pairloss.margin_ranking_criterion, pairloss.margin_ranking_criterion_gradient):
        assert inspect.signature(fn).parameters["margin"].default == schema_default
    assert registry.schema("MarginRankingCriterionGradient").get_arg("margin").default == schema_default


def test_gradient_defs_are_exactly_caffe2s() -> None:
    mrc = OperatorDef("MarginRankingCriterion", ("a", "b", "t"), ("l",), {"margin": 0.3})
    assert registry.get_gradient_defs(mrc) == [
        OperatorDef("MarginRankingCriterionGradient", ("a", "b", "t", "l_grad"), ("a_grad", "b_grad"),
                    {"margin": 0.3})]
    # lengths moves from input 2 to input 3, and is appended only when the forward op had it
    with_lengths = OperatorDef("PairWiseLoss", ("X", "label", "lengths"), ("Y",))
    assert registry.get_gradient_defs(with_lengths) == [
        OperatorDef("PairWiseLossGradient", ("X", "label", "Y_grad", "lengths"), ("X_grad",))]
    without = OperatorDef("PairWiseLoss", ("X", "label"), ("Y",))
    assert registry.get_gradient_defs(without) == [
        OperatorDef("PairWiseLossGradient", ("X", "label", "Y_grad"), ("X_grad",))]
    assert registry.get_gradient_defs("NegateGradient") == [OperatorDef("Negative", ("Y_grad",), ("X_grad",))]
    assert registry.get_gradient_defs("Negative") == [OperatorDef("Negative", ("Y_grad",), ("X_grad",))]


def test_gradient_ops_have_second_order_gradients_which_declare_what_they_leave_out() -> None:
    assert registry.get_gradient_defs("PairWiseLossGradient") == [
        OperatorDef("PairWiseLossGradientGradient", ("X", "label", "Y_grad", "X_grad_grad", "lengths"),
                    ("X_grad", "Y_grad_grad"))]
    # the second-order op is linear in X_grad_grad: its gradient there is itself plus the gradient op;
    # the third derivatives in X and Y_grad are declared not implemented (a front end must not read zeros)
    third = registry.get_gradient_defs("PairWiseLossGradientGradient")
    assert [d.type for d in third] == ["PairWiseLossGradientGradient", "PairWiseLossGradient"]
    assert {b for d in third for b in d.outputs} >= {"X_grad_grad_grad"}
    assert registry.schema("PairWiseLossGradientGradient").unimplemented_gradients == {0, 2}
    assert registry.schema("PairWiseHingeLossGradientGradient").unimplemented_gradients == frozenset()


def test_run_is_run_operator_once() -> None:
    (loss,) = registry.run("MarginRankingCriterion", np.array([1.0, 0.0]), np.array([0.0, 0.0]),
                           np.array([1, -1]), margin=0.5)
    np.testing.assert_allclose(loss, [0.0, 0.5])
    (default_margin,) = registry.run("MarginRankingCriterion", np.array([0.0]), np.array([0.0]), np.array([1]))
    np.testing.assert_allclose(default_margin, [1.0])
    (per_session,) = registry.run("PairWiseLoss", np.array([1.0, 0.0, 5.0]), np.array([1, 0, 3]), np.array([2, 1]))
    assert per_session.shape == (2,)


def test_run_rejects_unknown_op_argument_and_input_count() -> None:
    with pytest.raises(ValueError, match=r"unknown operator 'Nope'.*Negative"):
        registry.run("Nope", np.zeros(1))
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['margn'\].*margin"):
        registry.run("MarginRankingCriterion", np.zeros(1), np.zeros(1), np.ones(1), margn=1.0)
    with pytest.raises(ValueError, match="takes 2 to 3 inputs; got 1"):
        registry.run("PairWiseLoss", np.zeros(1))
    with pytest.raises(TypeError, match="argument 'margin' must be float"):
        registry.run("MarginRankingCriterion", np.zeros(1), np.zeros(1), np.ones(1), margin="1")
    with pytest.raises(ValueError, match="margin' must be finite"):
        registry.run("MarginRankingCriterion", np.zeros(1), np.zeros(1), np.ones(1), margin=float("nan"))
    with pytest.raises(ValueError, match=r"device must be one of"):
        registry.kernel("PairWiseLoss", "tpu")


def test_inplace_is_allowed_only_where_the_schema_says() -> None:
    x = np.array([1.0, -2.0, 0.0])
    (y,) = registry.run("Negative", x, outputs=[x])
    assert y is x
    np.testing.assert_array_equal(x, [-1.0, 2.0, -0.0])
    assert np.signbit(x[2])  # -(+0.0) == -0.0
    x1 = np.zeros(2)
    with pytest.raises(ValueError, match="does not allow input 0 to be written in place"):
        registry.run("MarginRankingCriterion", x1, np.zeros(2), np.ones(2), outputs=[x1])
    net = Net()
    with pytest.raises(ValueError, match="does not allow input 0"):
        net.MarginRankingCriterion(["X1", "X2", "Y"], ["X1"])
    net.Negative(["X"], ["X"])  # allowed


def test_duplicate_schema_registration_names_both_places() -> None:
    with pytest.raises(ValueError, match=r"already registered from .*negative\.py:\d+"):
        registry.operator_schema("Negative")


def test_shape_inference() -> None:
    f32 = np.dtype(np.float32)
    assert registry.schema("Negative").infer_shapes([((2, 3), f32)]) == [((2, 3), f32)]
    assert registry.schema("PairWiseLoss").infer_shapes(
        [((7,), f32), ((7,), f32), ((3,), np.dtype(np.int32))]) == [((3,), f32)]
    assert registry.schema("PairWiseLoss").infer_shapes([((7, 1), f32), ((7,), f32)]) == [((1,), f32)]


def test_net_appends_gradient_operators_and_runs_them() -> None:
    # Caffe2's negate_gradient_op_test.test_grad, exactly: Y == X and X_grad == -Y_grad
    rng = np.random.default_rng(0)
    x = rng.random((3, 4, 2)).astype(np.float32)
    net = Net()
    net.NegateGradient(["X"], ["Y"])
    grad_map = net.add_gradient_operators(["Y"])
    ws = net.run({"X": x})
    np.testing.assert_array_equal(ws["Y"], x)
    np.testing.assert_array_equal(ws[grad_map["X"]], -ws["Y_grad"])
    assert [op.type for op in net.ops] == ["NegateGradient", "Negative"]


def test_net_backpropagates_through_a_chain_and_sums_fanout() -> None:
    scores = np.array([0.3, -1.2, 2.0, 0.1, 0.4])
    labels = np.array([2.0, 0.0, 1.0, 1.0, 0.0])
    lengths = np.array([3, 2], np.int32)
    net = Net("chain")
    net.Negative(["S"], ["negS"])
    net.PairWiseLoss(["negS", "label", "lengths"], ["loss"])
    grad_map = net.add_gradient_operators(["loss"])
    ws = net.run({"S": scores, "label": labels, "lengths": lengths})
    g_neg = pairloss.pairwise_loss_gradient(-scores, labels, np.ones(2), lengths)
    np.testing.assert_allclose(ws[grad_map["S"]], -g_neg)
    assert "label" not in grad_map and "lengths" not in grad_map  # labels and lengths get no gradient

    fan = Net("fanout")  # S feeds two ops: its gradient is the sum of both contributions
    fan.Negative(["S"], ["A"])
    fan.NegateGradient(["S"], ["B"])
    fan.add_gradient_operators(["A", "B"])
    ws = fan.run({"S": scores})
    np.testing.assert_allclose(ws["S_grad"], -2.0 * np.ones_like(scores))


def test_net_rejects_unknown_loss_and_missing_blobs() -> None:
    net = Net()
    net.Negative(["X"], ["Y"])
    with pytest.raises(ValueError, match="'Z' is not produced"):
        net.add_gradient_operators(["Z"])
    with pytest.raises(ValueError, match=r"needs blobs \['X'\]"):
        net.run({})


def test_describe_lists_everything_a_user_needs() -> None:
    text = registry.schema("MarginRankingCriterion").describe()
    for fragment in ("margin (float, default 1.0)", "Gradient: MarginRankingCriterionGradient",
                     "Devices: cpu", "In place: no", "Inputs:", "X1", "Defined at:"):
        assert fragment in text


def test_net_in_place_writes_start_a_new_version_of_the_gradient() -> None:
    # Y = Negative(Negative(X)) written in place: dY/dX = +1 (accumulating the two versions gave 0)
    net = registry.Net()
    net.Negative(["X"], ["X"])
    net.Negative(["X"], ["X"])
    grads = net.add_gradient_operators(["X"])
    ws = net.run({"X": np.array([1.0, -2.0])})
    np.testing.assert_array_equal(ws["X"], [1.0, -2.0])
    np.testing.assert_array_equal(ws[grads["X"]], [1.0, 1.0])
    # in place through the gradient-reversal layer: -1
    net = registry.Net()
    net.Negative(["X"], ["Y"])
    net.NegateGradient(["Y"], ["Y"])
    net.Negative(["Y"], ["Y"])
    grads = net.add_gradient_operators(["Y"])
    ws = net.run({"X": np.array([3.0])})
    np.testing.assert_array_equal(ws[grads["X"]], [-1.0])


def test_net_gradients_of_a_blob_read_twice_still_add_up() -> None:
    net = registry.Net()
    net.Negative(["X"], ["A"])
    net.PairWiseLoss(["A", "label"], ["loss"])
    net.PairWiseLoss(["X", "label"], ["loss2"])
    grads = net.add_gradient_operators(["loss", "loss2"])
    scores, labels = np.array([0.3, -0.2, 1.0]), np.array([1, 0, 2])
    ws = net.run({"X": scores, "label": labels})
    want = (-registry.run("PairWiseLossGradient", -scores, labels, np.ones(1))[0]
            + registry.run("PairWiseLossGradient", scores, labels, np.ones(1))[0])
    np.testing.assert_allclose(ws[grads["X"]], want)
