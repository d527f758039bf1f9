"""The torch front end under hostile input (issue 9's adversarial suite, torch share).

Every call of every functional and module, with arguments drawn from pools of valid and hostile values
(wrong shapes, dtypes, layouts and devices, non-contiguous and zero-stride views, NaN/inf, empty and huge
tensors, negative, NaN or huge labels, bad lengths, labels that require grad, junk margins and reductions),
must end in exactly one of two ways:

* a ``ValueError`` or ``TypeError`` whose message names the offending argument (torch's or the operator's
  name for it), or
* a result equal to an obviously correct float64 reference written with torch ops (NaN where it is NaN).

Never a crash, another exception type, a silent broadcast or a wrong number. The outcome counts are
checked too, so the suite keeps exercising both branches.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pairloss.nn as pnn
import pairloss.nn.functional as PF
from pairloss._checks import FLT_EPSILON

# the names an error may use for each argument (the front end's, and the operator schema's)
NAMES = {
    "scores": ("scores", "X"), "labels": ("labels", "label"), "lengths": ("lengths",), "mask": ("mask",),
    "margin": ("margin",), "reduction": ("reduction",), "padding_label": ("padding_label",),
    "input1": ("input1", "X1"), "input2": ("input2", "X2"), "target": ("target", "Y"), "x": ("x",),
    "scale": ("scale",),
}
OUTCOMES: Counter[str] = Counter()


def _check_error(exc: BaseException, culprits: set[str]) -> None:
    assert isinstance(exc, ValueError | TypeError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    named = [n for c in culprits for n in NAMES[c] if n in message]
    assert named, f"the message names none of {sorted(culprits)}: {message}"
    assert "Traceback" not in message and "TypingError" not in message


def _outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return call(), None
    except Exception as exc:  # every exception is inspected by the caller
        return None, exc


# --------------------------------------------------------------------------------------------------------
# Pools of values: (value, is_valid)
# --------------------------------------------------------------------------------------------------------
def _float_tensor(draw: st.DrawFn, n: int, name: str) -> tuple[Any, bool]:
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    base = torch.randn(n, generator=g, dtype=torch.float64) * draw(st.sampled_from([1.0, 1e4, 1e30]))
    kind = draw(st.sampled_from(["plain", "plain", "f16", "bf16", "f32", "noncontiguous", "expanded", "nan", "inf",
                                 "int", "bool", "complex", "sparse", "meta", "list", "numpy", "2d-wide", "0d",
                                 "requires_grad"]))
    if kind == "plain":
        return base, True
    if kind in ("f16", "bf16", "f32"):
        return base.to({"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[kind]), True
    if kind == "noncontiguous":
        return torch.stack([base, base * 0 + 7], 1)[:, 0], True  # stride 2
    if kind == "expanded":
        return base[:1].expand(n) if n else base, True  # stride 0
    if kind == "nan":
        return torch.where(torch.arange(n) % 3 == 0, float("nan"), base), True
    if kind == "inf":
        return torch.where(torch.arange(n) % 4 == 1, float("inf"), base), True
    if kind == "requires_grad":
        return base.clone().requires_grad_(), True
    invalid = {"int": lambda: base.long(), "bool": lambda: base > 0, "complex": lambda: base.to(torch.complex64),
               "sparse": lambda: base.to_sparse(), "meta": lambda: base.to("meta"), "list": lambda: base.tolist(),
               "numpy": lambda: base.numpy(), "2d-wide": lambda: base.reshape(1, n).expand(3, n)[:, :],
               "0d": lambda: base.sum()}
    return invalid[kind](), False


@st.composite
def session_case(draw: st.DrawFn) -> dict[str, Any]:
    lengths = draw(st.lists(st.integers(0, 5), min_size=0, max_size=4))
    n = sum(lengths)
    scores, s_ok = _float_tensor(draw, n, "scores")
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    grades = torch.randint(0, 4, (n,), generator=g)
    label_kind = draw(st.sampled_from(["int", "int", "float", "int8", "negative", "nan", "inf", "huge", "bool",
                                       "short", "requires_grad", "noncontiguous"]))
    labels, l_ok = {
        "int": (grades, True), "float": (grades.double() / 2, True), "int8": (grades.to(torch.int8), True),
        "noncontiguous": (torch.stack([grades, grades], 1)[:, 1], True),
        "negative": (grades - 1, not bool((grades - 1 < 0).any())),
        "nan": (torch.where(grades == 0, float("nan"), grades.double()), not bool((grades == 0).any())),
        "inf": (torch.where(grades == 0, float("inf"), grades.double()), not bool((grades == 0).any())),
        "huge": (grades + 2**62, True), "bool": (grades > 0, False),
        "short": (grades[:-1], n == 0 and False), "requires_grad": (grades.double().requires_grad_(), False),
    }[label_kind]
    if label_kind == "short" and n == 0:
        labels, l_ok = grades, True
    length_kind = draw(st.sampled_from(["ok", "ok", "none", "int32", "negative", "wrong-sum", "wrap", "float",
                                        "2d", "meta", "list"]))
    lens_value: Any
    if length_kind == "ok":
        lens_value, n_ok = torch.tensor(lengths, dtype=torch.int64), True
    elif length_kind == "none":
        lens_value, n_ok = None, True
    elif length_kind == "int32":
        lens_value, n_ok = torch.tensor(lengths, dtype=torch.int32), True
    elif length_kind == "negative":
        lens_value, n_ok = torch.tensor([*lengths, -1, 1], dtype=torch.int64), False
    elif length_kind == "wrong-sum":
        lens_value, n_ok = torch.tensor([*lengths, 1], dtype=torch.int64), False
    elif length_kind == "wrap":  # sums to n in wrapping int64 arithmetic
        lens_value, n_ok = torch.tensor([2**62] * 4 + [n], dtype=torch.int64), False
    elif length_kind == "float":
        lens_value, n_ok = torch.tensor(lengths, dtype=torch.float32), False
    elif length_kind == "2d":
        lens_value, n_ok = torch.tensor([lengths], dtype=torch.int64), False
    elif length_kind == "meta":
        lens_value, n_ok = torch.tensor(lengths, dtype=torch.int64, device="meta"), False
    else:
        lens_value, n_ok = list(lengths), False
    margin, m_ok = draw(st.sampled_from([(1.0, True), (0.0, True), (-0.5, True), (float("nan"), False),
                                         (float("inf"), False), (True, False), ("1", False), (None, False),
                                         (torch.tensor(0.25), True), (torch.tensor([0.1, 0.2]), False),
                                         (torch.tensor(0.3, requires_grad=True), False)]))
    reduction, r_ok = draw(st.sampled_from([("none", True), ("mean", True), ("sum", True), ("max", False),
                                            (None, False), (1, False)]))
    return {"scores": (scores, s_ok), "labels": (labels, l_ok), "lengths": (lens_value, n_ok),
            "margin": (margin, m_ok), "reduction": (reduction, r_ok), "sizes": lengths}


def _ref_sessions(scores: torch.Tensor, labels: torch.Tensor, sizes: list[int], term: Callable[..., Any]
                  ) -> torch.Tensor:
    x = scores.detach().double().reshape(-1)
    lab = labels.detach().reshape(-1)
    out = []
    for xs, ls in zip(x.split(sizes), lab.split(sizes), strict=True):
        if ls.is_floating_point():
            pair = (ls.double()[:, None] - ls.double()[None, :]) >= FLT_EPSILON
        else:
            pair = ls.long()[:, None] > ls.long()[None, :]  # exact for integers
        z = xs[None, :] - xs[:, None]
        total = torch.where(pair, term(z), 0.0).sum()
        out.append(total / pair.sum() if pair.any() else torch.zeros((), dtype=torch.float64))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def _reduce(per: torch.Tensor, reduction: str, has_pairs: torch.Tensor) -> torch.Tensor:
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / max(int(has_pairs.sum()), 1)


def _run_session_case(case: dict[str, Any], loss: str) -> None:
    values = {k: v[0] for k, v in case.items() if k != "sizes"}
    bad = {k for k, v in case.items() if k != "sizes" and not v[1]}
    if loss == "logistic":
        bad.discard("margin")
        call = lambda: PF.pairwise_logistic_loss(values["scores"], values["labels"], values["lengths"],
                                                 reduction=values["reduction"])
        term = lambda z: torch.logaddexp(torch.zeros_like(z), z)
    else:
        call = lambda: PF.pairwise_hinge_loss(values["scores"], values["labels"], values["lengths"],
                                              margin=values["margin"], reduction=values["reduction"])
        m = values["margin"]
        margin = float(m) if isinstance(m, torch.Tensor) and m.numel() == 1 else m
        term = lambda z: torch.relu(z + margin)
    got, error = _outcome(call)
    if error is not None:
        # an error must be about one of the invalid arguments; with none invalid, about a non-finite score
        _check_error(error, bad or {"scores"})
        if not bad:
            assert not bool(torch.isfinite(values["scores"].detach().double()).all()), f"valid input rejected: {error}"
        OUTCOMES["error"] += 1
        return
    assert not bad, f"accepted invalid {sorted(bad)}: {got}"
    sizes = case["sizes"] if values["lengths"] is not None else [sum(case["sizes"])]
    per = _ref_sessions(values["scores"], values["labels"], sizes, term)
    lab = values["labels"].detach().reshape(-1)
    has = torch.tensor([bool(ls.numel()) and bool(ls.double().max() - ls.double().min() >= FLT_EPSILON)
                        for ls in lab.split(sizes)], dtype=torch.bool)
    want = _reduce(per, values["reduction"], has)
    dtype = values["scores"].dtype
    tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2, torch.float32: 1e-5, torch.float64: 1e-9}[dtype]
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol, equal_nan=True)
    OUTCOMES["result"] += 1


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
@settings(max_examples=120)
@given(case=session_case())
def test_session_losses_under_hostile_input(loss: str, case: dict[str, Any]) -> None:
    _run_session_case(case, loss)


@st.composite
def pair_case(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 6))
    x1, ok1 = _float_tensor(draw, n, "input1")
    x2, ok2 = _float_tensor(draw, n, "input2")
    target_kind = draw(st.sampled_from(["pm1", "pm1", "int", "zero", "nan", "half", "short", "bool",
                                        "requires_grad", "broadcast"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    target, okt = {
        "pm1": (signs, True), "int": (signs.long(), True), "half": (signs.half(), True),
        "zero": (signs * 0, n == 0), "nan": (signs * float("nan"), n == 0), "short": (signs[:-1], n == 0),
        "bool": (signs > 0, False), "requires_grad": (signs.clone().requires_grad_(), False),
        "broadcast": (signs.reshape(n, 1), False),
    }[target_kind]
    margin, m_ok = draw(st.sampled_from([(0.0, True), (0.7, True), (torch.tensor(-0.2), True),
                                         (float("inf"), False), ("x", False)]))
    reduction, r_ok = draw(st.sampled_from([("none", True), ("mean", True), ("sum", True), ("avg", False)]))
    return {"input1": (x1, ok1), "input2": (x2, ok2), "target": (target, okt), "margin": (margin, m_ok),
            "reduction": (reduction, r_ok)}


@settings(max_examples=150)
@given(case=pair_case())
def test_margin_ranking_under_hostile_input(case: dict[str, Any]) -> None:
    values = {k: v for k, (v, _) in case.items()}
    bad = {k for k, (_, ok) in case.items() if not ok}
    x1, x2 = values["input1"], values["input2"]
    if isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor) and x1.shape != x2.shape:
        bad |= {"input1", "input2"}
    got, error = _outcome(lambda: PF.margin_ranking_loss(x1, x2, values["target"], margin=values["margin"],
                                                         reduction=values["reduction"]))
    if error is not None:
        _check_error(error, bad or {"input1", "input2"})
        assert bad, f"valid input rejected: {error}"
        OUTCOMES["error"] += 1
        return
    assert not bad, f"accepted invalid {sorted(bad)}"
    m = values["margin"]
    dtype = torch.promote_types(x1.dtype, x2.dtype)
    y = values["target"].detach()
    if y.is_floating_point():
        dtype = torch.promote_types(dtype, y.dtype)
    # the reference in the op's arithmetic dtype (float32 for half inputs), as the kernels compute
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    per = (-y.to(work) * (x1.detach().to(dtype).to(work) - x2.detach().to(dtype).to(work))
           + (float(m) if isinstance(m, torch.Tensor) else m))
    per = torch.where(per < 0, 0.0, per).to(dtype)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[values["reduction"]]
    tol = 0.0 if dtype in (torch.float32, torch.float64) and values["reduction"] == "none" else 1e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)
    OUTCOMES["result"] += 1


@settings(max_examples=60)
@given(st.data())
def test_negative_and_negate_gradient_under_hostile_input(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 5))
    x, ok = _float_tensor(data.draw, n, "x")
    scale, s_ok = data.draw(st.sampled_from([(1.0, True), (0.5, True), (torch.tensor(2.0), True),
                                             (float("nan"), False), (False, False)]))
    inputs_ok = ok or (isinstance(x, torch.Tensor) and not x.is_complex() and x.layout == torch.strided
                       and x.dtype != torch.bool and x.device.type != "meta")
    for name, call, bad in (("negative", lambda: PF.negative(x), not inputs_ok),
                            ("negate_gradient", lambda: PF.negate_gradient(x, scale=scale),
                             not inputs_ok or not s_ok)):
        got, error = _outcome(call)
        if error is not None:
            _check_error(error, {"x", "scale"})
            assert bad or (isinstance(x, torch.Tensor) and x.is_complex()), f"{name}: valid input rejected: {error}"
            continue
        if isinstance(x, torch.Tensor) and x.device.type == "meta":
            assert got.device.type == "meta" and got.shape == x.shape
            continue
        assert isinstance(x, torch.Tensor)
        want = -x.detach() if name == "negative" else x.detach()
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_hostile_suite_exercises_both_outcomes() -> None:
    # run after the property tests in this module (pytest keeps file order)
    assert OUTCOMES["error"] > 20 and OUTCOMES["result"] > 20, dict(OUTCOMES)


def test_modules_validate_at_construction() -> None:
    for bad in (float("nan"), "1", True, torch.tensor([1.0, 2.0])):
        with pytest.raises((ValueError, TypeError), match="margin"):
            pnn.MarginRankingLoss(margin=bad)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError), match="margin"):
            pnn.PairwiseHingeLoss(margin=bad)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError), match="scale"):
            pnn.GradientReversal(scale=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        pnn.PairwiseLogisticLoss(reduction="avg")  # type: ignore[arg-type]


def test_labels_that_require_grad_are_refused_not_silently_ungraded() -> None:
    teacher = torch.tensor([0.9, 0.1, 0.5], requires_grad=True)  # soft labels from a trainable teacher
    with pytest.raises(ValueError, match=r"labels requires grad, .*pass labels.detach\(\)"):
        PF.pairwise_logistic_loss(torch.zeros(3), teacher)
    with pytest.raises(ValueError, match=r"target requires grad"):
        PF.margin_ranking_loss(torch.zeros(3), torch.zeros(3), torch.ones(3, requires_grad=True))
    with torch.no_grad():  # nothing is differentiated: fine
        PF.pairwise_logistic_loss(torch.zeros(3), teacher)
    assert math.isfinite(PF.pairwise_logistic_loss(torch.zeros(3), teacher.detach()).item())
