r"""ONNX export of models that use pairloss operators, driven by the operator registry.

Every pairloss operator reaches ``torch.onnx.export(..., dynamo=True)`` as a ``torch.ops.pairloss.*``
custom op (see :mod:`pairloss.nn._torch_ops`). This module translates each of them into **standard ONNX
operators only** (no custom domain, so any ONNX runtime runs the model), from what the operator's schema
declares in its own op module:

* ``.inherit_onnx_schema("Neg")``: one standard node (``Negative`` → ``Neg``, ``NegateGradient`` →
  ``Identity``);
* ``.onnx_decomposition(builder)``: a graph built by ``builder(op, *inputs, **args)``, where ``op`` is an
  onnxscript opset; a ``"module:function"`` string is imported only at export time. The builders of
  ``MarginRankingCriterion``, ``PairWiseLoss`` and ``PairWiseHingeLoss`` live here.

:func:`translation_table` turns the registry into the exporter's ``custom_translation_table``
(``{torch.ops.pairloss.<op>.default: onnxscript function}``), so an operator added to
:mod:`pairloss.ops` with either declaration exports without an edit here. :func:`export` passes it,
makes the batch dimension dynamic and checks the result; :func:`export_scorer` exports a trained
``(N, F) -> (N,)`` scorer and verifies it against PyTorch in ONNX Runtime.

The pairwise decompositions follow the kernels exactly: session ids come from ``lengths`` with
``CumSum`` and comparisons; pair ``(i, j)`` counts once, with ``i`` the higher label, when both items
are in one session and :math:`l_i - l_j \ge 2^{-23}` (ties skipped); the softplus is exact,
``Relu(z) + log1p(Exp(-Abs(z)))`` with a cancellation-free ``log1p``; each session is the mean over its
pairs, 0 when it has none; arithmetic runs in float64 and the result is cast to the scores' dtype, as in
the NumPy kernels. They build an (N, N) pair matrix: O(N²) memory per batch.

Importing this module imports neither torch nor onnxscript; the functions do.

Examples:
    >>> import torch
    >>> import pairloss.nn as pnn
    >>> from pairloss import onnx as ponnx
    >>> table = ponnx.translation_table()
    >>> table[torch.ops.pairloss.negative.default].__name__
    'negative'
    >>> program = ponnx.export(pnn.Negative(), (torch.randn(3, 2),))
    >>> [node.op_type for node in program.model_proto.graph.node]
    ['Neg']
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pairloss._checks import FLT_EPSILON
from pairloss.registry import OpSchema

if TYPE_CHECKING:
    import torch

__all__ = [
    "export",
    "export_scorer",
    "install_exporter_hook",
    "lambdarank_loss_decomposition",
    "margin_ranking_criterion_decomposition",
    "onnx_builder",
    "pairwise_hinge_loss_decomposition",
    "pairwise_loss_decomposition",
    "pairwise_session_mean",
    "register_with_exporter",
    "softplus",
    "translation_table",
]

# onnx.TensorProto data types (the numbers, so this module needs no onnx import)
_BOOL, _INT64, _DOUBLE = 9, 7, 11
Builder = Callable[..., Any]


# --------------------------------------------------------------------------------------------------------
# Decomposition builders: builder(op, *inputs, **args) -> ONNX value(s), standard operators only
# --------------------------------------------------------------------------------------------------------
def softplus(op: Any, z: Any) -> Any:
    r"""Exact :math:`\log(1 + e^z) = \mathrm{relu}(z) + \mathrm{log1p}(e^{-|z|})` in standard ONNX ops.

    ONNX has no ``Log1p``; ``Log(1 + u)`` would lose every digit of a tiny ``u`` (a well-ordered pair's
    loss), so log1p uses Kahan's correction ``log(w) * u / (w - 1)`` with ``w = 1 + u``, and ``u`` itself
    where ``1 + u`` rounds to 1. ``Exp(-|z|)`` is at most 1: finite for every finite ``z``.
    """
    one = _double(op, 1.0)
    u = op.Exp(op.Neg(op.Abs(z)))
    w = op.Add(u, one)
    log1p = op.Where(op.Equal(w, one), u, op.Div(op.Mul(op.Log(w), u), op.Sub(w, one)))
    return op.Add(op.Relu(z), log1p)


def _double(op: Any, value: Any) -> Any:
    """A float64 scalar: an exact constant for a Python number (a Python float handed to an op could
    become float32), a Cast for a graph value (a margin given as a tensor: the ``tensor_args`` overloads)."""
    import numpy as np
    from onnxscript import ir

    if isinstance(value, int | float | np.number):
        return op.Constant(value=ir.tensor(np.array(value, dtype=np.float64)))
    return op.Reshape(op.Cast(value, to=_DOUBLE), op.Constant(value=ir.tensor(np.array([], dtype=np.int64))))


def _flat(op: Any, t: Any) -> Any:
    return op.Reshape(t, [-1])


def _length_of(op: Any, t: Any) -> Any:
    """Dimension 0 of ``t`` as an int64 scalar (dynamic in the graph)."""
    return op.Squeeze(op.Shape(t, start=0, end=1))


def _session_ids(op: Any, lengths: Any, n_items: Any) -> Any:
    """Session index of every item: the number of session ends (CumSum of lengths) at or before it."""
    ends = op.CumSum(op.Cast(lengths, to=_INT64), 0)  # (S,)
    positions = op.Range(0, n_items, 1)  # (N,)
    before = op.LessOrEqual(op.Unsqueeze(ends, [0]), op.Unsqueeze(positions, [1]))  # (N, S)
    return op.ReduceSum(op.Cast(before, to=_INT64), [1], keepdims=0)  # (N,), empty sessions skipped


def pairwise_session_mean(op: Any, scores: Any, labels: Any, lengths: Any | None,
                          pair_term: Callable[[Any, Any], Any]) -> Any:
    r"""Per-session mean of ``pair_term(op, z)`` over label-discordant pairs, :math:`z = x_{lo} - x_{hi}`.

    The shared body of the pairwise-loss decompositions (a new pairwise op only supplies its term).

    Args:
        op: The onnxscript opset that builds the nodes.
        scores: Scores, (N,) or (N, 1), any float dtype.
        labels: Labels, (N,) or (N, 1), any integer or float dtype.
        lengths: Session sizes (S,), any integer dtype, or None for one session.
        pair_term: ``pair_term(op, z)`` for the float64 (N, N) matrix ``z[i, j] = x_j - x_i``, where
            ``i`` is the higher-labelled item of the pair.

    Returns:
        (S,) (or (1,) without ``lengths``), in the dtype of ``scores``; 0 for a session with no pair
        (empty, one item, all labels tied).
    """
    x = op.Cast(_flat(op, scores), to=_DOUBLE)
    lab = op.Cast(_flat(op, labels), to=_DOUBLE)
    # pair (i, j) counts once, with i the higher label; |l_i - l_j| < 2^-23 is a tie and is skipped
    zero = _double(op, 0.0)
    pairs = op.GreaterOrEqual(op.Sub(op.Unsqueeze(lab, [1]), op.Unsqueeze(lab, [0])), _double(op, FLT_EPSILON))
    if lengths is not None:
        ids = _session_ids(op, lengths, _length_of(op, x))
        pairs = op.And(pairs, op.Equal(op.Unsqueeze(ids, [1]), op.Unsqueeze(ids, [0])))
    z = op.Sub(op.Unsqueeze(x, [0]), op.Unsqueeze(x, [1]))  # z[i, j] = x_j - x_i = x_lo - x_hi
    # Where, not a product with the mask: an inf score must not turn skipped pairs into NaN
    row_loss = op.ReduceSum(op.Where(pairs, pair_term(op, z), zero), [1], keepdims=0)  # (N,)
    row_pairs = op.ReduceSum(op.Cast(pairs, to=_DOUBLE), [1], keepdims=0)
    if lengths is None:
        total = op.ReduceSum(row_loss, [0], keepdims=1)  # (1,)
        count = op.ReduceSum(row_pairs, [0], keepdims=1)
    else:
        sessions = op.Range(0, _length_of(op, lengths), 1)  # (S,)
        member = op.Equal(op.Unsqueeze(sessions, [1]), op.Unsqueeze(ids, [0]))  # (S, N)
        total = op.ReduceSum(op.Where(member, op.Unsqueeze(row_loss, [0]), zero), [1], keepdims=0)
        count = op.ReduceSum(op.Where(member, op.Unsqueeze(row_pairs, [0]), zero), [1], keepdims=0)
    # a session without a discordant pair has nothing to learn: loss 0
    mean = op.Where(op.Greater(count, zero), op.Div(total, op.Max(count, _double(op, 1.0))), zero)
    return op.CastLike(mean, scores)


def pairwise_loss_decomposition(op: Any, x: Any, label: Any, lengths: Any | None = None) -> Any:
    """``PairWiseLoss``: per-session mean of the exact softplus(x_lo - x_hi)."""
    return pairwise_session_mean(op, x, label, lengths, softplus)


def pairwise_hinge_loss_decomposition(op: Any, x: Any, label: Any, lengths: Any | None = None, *,
                                      margin: float = 1.0) -> Any:
    """``PairWiseHingeLoss``: per-session mean of max(0, margin - (x_hi - x_lo))."""
    return pairwise_session_mean(op, x, label, lengths, lambda op, z: op.Relu(op.Add(z, _double(op, margin))))


def _ranks(op: Any, key: Any, same: Any, positions: Any, *, nan_last: bool) -> Any:
    """0-based rank of every item within its session by ``key`` descending, ties by position (and NaN
    keys last, in position order, as the kernels' ``argsort``). ``same``: the (N, N) same-session mask."""
    ki, kj = op.Unsqueeze(key, [1]), op.Unsqueeze(key, [0])
    earlier = op.Less(op.Unsqueeze(positions, [0]), op.Unsqueeze(positions, [1]))  # [i, j]: j before i
    before = op.Or(op.Greater(kj, ki), op.And(op.Equal(kj, ki), earlier))
    if nan_last:
        nan_i, nan_j = op.Unsqueeze(op.IsNaN(key), [1]), op.Unsqueeze(op.IsNaN(key), [0])
        both = op.And(nan_i, nan_j)
        before = op.Or(op.Or(op.And(nan_i, op.Not(nan_j)), op.And(op.Not(op.Or(nan_i, nan_j)), before)),
                       op.And(both, earlier))
    return op.ReduceSum(op.Cast(op.And(same, before), to=_DOUBLE), [1], keepdims=0)


def _discount(op: Any, rank: Any, topn: int) -> Any:
    """1 / log2(2 + rank), 0 from rank ``topn`` on when ``topn > 0``."""
    value = op.Div(op.Log(_double(op, 2.0)), op.Log(op.Add(rank, _double(op, 2.0))))
    if topn <= 0:
        return value
    return op.Where(op.Less(rank, _double(op, float(topn))), value, _double(op, 0.0))


def lambdarank_loss_decomposition(op: Any, x: Any, label: Any, lengths: Any | None = None, *, sigma: Any = 1.0,
                                  topn: int = 0, gain: str = "exp2") -> Any:
    """``LambdaRankLoss``: per-session mean of |ΔNDCG| * softplus(sigma (x_lo - x_hi)).

    The kernels' weights, in (N, N) form: ranks by current score (ties by position, NaN last), discounts
    1/log2(2 + rank) cut at ``topn``, gains 2^label - 1 (or the label), the session's ideal DCG from the
    ranks by gain, and |G_i - G_j| |D_i - D_j| / IDCG (0 when IDCG is 0).
    """
    xd = op.Cast(_flat(op, x), to=_DOUBLE)
    lab = op.Cast(_flat(op, label), to=_DOUBLE)
    n = _length_of(op, xd)
    positions = op.Cast(op.Range(0, n, 1), to=_DOUBLE)
    if lengths is None:
        same = op.Expand(op.Constant(value_int=1), op.Concat(op.Unsqueeze(n, [0]), op.Unsqueeze(n, [0]), axis=0))
        same = op.Cast(same, to=_BOOL)
    else:
        ids = _session_ids(op, lengths, n)
        same = op.Equal(op.Unsqueeze(ids, [1]), op.Unsqueeze(ids, [0]))
    gains = op.Sub(op.Pow(_double(op, 2.0), lab), _double(op, 1.0)) if gain == "exp2" else lab
    discount = _discount(op, _ranks(op, xd, same, positions, nan_last=True), topn)
    ideal = op.Mul(gains, _discount(op, _ranks(op, gains, same, positions, nan_last=False), topn))
    idcg = op.MatMul(op.Cast(same, to=_DOUBLE), ideal)  # every item: its session's ideal DCG
    zero = _double(op, 0.0)
    inv_ideal = op.Where(op.Greater(idcg, zero), op.Div(_double(op, 1.0), op.Max(idcg, _double(op, 1e-300))), zero)
    weight = op.Mul(op.Mul(op.Abs(op.Sub(op.Unsqueeze(gains, [1]), op.Unsqueeze(gains, [0]))),
                           op.Abs(op.Sub(op.Unsqueeze(discount, [1]), op.Unsqueeze(discount, [0])))),
                    op.Unsqueeze(inv_ideal, [1]))
    scale = _double(op, sigma)
    return pairwise_session_mean(op, x, label, lengths,
                                 lambda op, z: op.Mul(weight, softplus(op, op.Mul(scale, z))))


def margin_ranking_criterion_decomposition(op: Any, x1: Any, x2: Any, y: Any, *, margin: float = 1.0) -> Any:
    """``MarginRankingCriterion``: max(0, -y (x1 - x2) + margin) elementwise, in float64 like the kernel.

    ``Where(dist < 0, 0, dist)`` is Caffe2's CPU ``std::max(dist, 0)``: a NaN distance stays NaN.
    """
    a, b, t = (op.Cast(v, to=_DOUBLE) for v in (x1, x2, y))
    dist = op.Add(op.Mul(op.Neg(t), op.Sub(a, b)), _double(op, margin))
    zero = _double(op, 0.0)
    return op.CastLike(op.Where(op.Less(dist, zero), zero, dist), x1)


# --------------------------------------------------------------------------------------------------------
# From the registry to the exporter: the machinery lives in pairloss.nn._onnx (below this module, so that
# `import pairloss.nn` can register the translations with torch.onnx.export); imported lazily, so that
# importing this module imports no torch
# --------------------------------------------------------------------------------------------------------
def onnx_builder(op: OpSchema | str) -> Builder | None:
    """The ONNX builder ``builder(opset, *inputs, **args)`` the schema of ``op`` declares, or None.

    ``inherit_onnx_schema("Neg")`` gives a builder of the one standard node (the schema's args become
    its attributes, absent trailing inputs are dropped); ``onnx_decomposition`` gives its builder.

    Examples:
        >>> onnx_builder("PairWiseLoss") is pairwise_loss_decomposition
        True
        >>> onnx_builder("PairWiseLossGradient") is None
        True
    """
    from pairloss.nn import _onnx

    return _onnx.onnx_builder(op)


def translation_table(*, opset: Any = None) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``, built from the registry
    (see :func:`pairloss.nn._onnx.translation_table`)."""
    from pairloss.nn import _onnx

    return _onnx.translation_table(opset=opset)


def register_with_exporter() -> list[str]:
    """Put the registry's ONNX translations into ``torch.onnx.export``'s own registry; ``import pairloss.nn``
    arranges it (see :func:`pairloss.nn._onnx.register_with_exporter`). Returns the names registered."""
    from pairloss.nn import _onnx

    return _onnx.register_with_exporter()


def install_exporter_hook() -> None:
    """Register the translations with the exporter now, or when it loads (idempotent; ``import
    pairloss.nn`` calls it)."""
    from pairloss.nn import _onnx

    _onnx.install_exporter_hook()


# --------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------
def _batch_dynamic_shapes(model: Any, args: Sequence[Any]) -> Any:
    """Dimension 0 of every tensor argument dynamic (``Dim.AUTO``: sizes that must agree are unified).

    Keyed by ``forward``'s parameter names (a ``*args`` parameter takes a tuple), as ``torch.export`` wants.
    An example of size 0 or 1 there would be specialised by ``torch.export`` anyway: it stays static,
    with a warning.
    """
    import torch

    static: list[str] = []

    def spec(a: Any, name: str) -> Any:
        if not isinstance(a, torch.Tensor) or a.dim() == 0:
            return None
        if a.shape[0] < 2:
            static.append(f"{name} (size {a.shape[0]})")
            return None
        return {0: torch.export.Dim.AUTO}

    try:
        bound = inspect.signature(model.forward).bind(*args)
    except (AttributeError, TypeError, ValueError):
        shapes: Any = tuple(spec(a, f"input {k}") for k, a in enumerate(args))
    else:
        kinds = {name: p.kind for name, p in bound.signature.parameters.items()}
        shapes = {name: tuple(spec(a, f"{name}[{k}]") for k, a in enumerate(value))
                  if kinds[name] is inspect.Parameter.VAR_POSITIONAL else spec(value, name)
                  for name, value in bound.arguments.items()}
    if static:
        warnings.warn(f"dynamic_batch: dimension 0 of {', '.join(static)} is exported static; give an example "
                      "with at least 2 there to make it dynamic", UserWarning, stacklevel=3)
    return shapes


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's noise that says nothing about the model (torchvision ops it skips, pytree
    deprecations); real warnings still show."""
    import logging

    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode (dropout off, batch-norm running statistics) for the duration; training flags restored."""
    import torch

    modes = {m: m.training for m in model.modules()} if isinstance(model, torch.nn.Module) else {}
    for m in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _functionalize_inplace(ep: Any) -> None:
    """Rewrite each in-place variant ``pairloss::<op>_(x, ...)`` as ``x.copy_(pairloss::<op>(x, ...))``.

    The exporter's functionalisation would wrap a mutating custom op in ``auto_functionalized``, which it
    cannot translate; ``aten.copy_`` it functionalises, and the out-of-place op has a mapping.
    """
    import torch

    from pairloss.nn import _torch_ops

    # registered_ops() lists an in-place variant as "<Name>_": its out-of-place op is registry op "<Name>"
    inplace = {qualname: name[:-1] for name, qualname in _torch_ops.registered_ops().items() if name.endswith("_")}
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if not (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
                and node.target.name() in inplace):
            continue
        target = node.args[0]
        with graph.inserting_before(node):
            out = graph.call_function(_torch_ops.torch_op(inplace[node.target.name()]), node.args, node.kwargs)
            copy = graph.call_function(torch.ops.aten.copy_.default, (target, out))
        for new in (out, copy):  # an in-place op's output has its input's shape and dtype
            new.meta.update({k: v for k, v in target.meta.items() if k in ("val", "tensor_meta")})
            new.meta["stack_trace"] = node.meta.get("stack_trace")
        node.replace_all_uses_with(copy)
        graph.erase_node(node)
        changed = True
    if changed:
        ep.graph_module.recompile()


def _check_mapped(ep: Any, table: Mapping[Any, Any]) -> None:
    """Name the pairloss operators of the exported program that have no ONNX mapping, before the exporter
    fails on them with a generic dispatch error."""
    import torch

    from pairloss.nn import _torch_ops

    by_op = {qualname: name for name, qualname in _torch_ops.registered_ops().items()}
    mapped = {o.name() for o in table}
    missing = sorted({
        by_op.get(node.target.name(), node.target.name())
        for node in ep.graph.nodes
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
        and node.target.namespace == _torch_ops.NAMESPACE and node.target.name() not in mapped
    })
    if missing:
        msg = (f"the model uses pairloss operator(s) {missing} with no ONNX mapping; declare one in the op "
               f"module's schema with .inherit_onnx_schema('<ONNX op>') or .onnx_decomposition(builder)")
        raise ValueError(msg)


def export(model: Any, example_inputs: Any, path: str | os.PathLike[str] | None = None, *,
           dynamic_batch: bool = True, dynamic_shapes: Any = None, input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None, opset_version: int | None = None, optimize: bool = True,
           check: bool = True, **export_kwargs: Any) -> Any:
    """Export a model that uses pairloss operators to ONNX (standard operators only).

    The model is traced by ``torch.export`` in eval mode (its training flags are restored afterwards),
    then translated by ``torch.onnx.export(..., dynamo=True)`` with :func:`translation_table`.

    Args:
        model: A ``torch.nn.Module``, or a ``torch.export.ExportedProgram`` (exported as is, except that
            in-place pairloss ops in its graph are rewritten out of place, in that program).
        example_inputs: A tensor or a tuple of positional inputs (``None`` for an absent optional one).
        path: Where to write the ``.onnx`` file; None: do not write.
        dynamic_batch: Make dimension 0 of every tensor input dynamic (number of items, of sessions, ...),
            so one export runs at any size; sizes that must agree are unified by ``torch.export``. Give
            examples of size >= 2 there (size 0 or 1 is specialised: it stays static, with a warning).
        dynamic_shapes: Explicit ``torch.export`` dynamic shapes; overrides ``dynamic_batch``.
        input_names: Names of the graph inputs (default: the ``forward`` parameter names).
        output_names: Names of the graph outputs.
        opset_version: ONNX opset (default: the exporter's).
        optimize: Run the exporter's graph optimiser (constant folding; it also folds away ``Identity``
            nodes that are not needed, e.g. the one of ``NegateGradient`` between two other nodes).
        check: Run ``onnx.checker.check_model(full_check=True)`` on the result.
        **export_kwargs: Passed on to ``torch.onnx.export``.

    Returns:
        The ``torch.onnx.ONNXProgram`` (``.model_proto``; calling it runs ONNX Runtime).

    Raises:
        ValueError: the model uses a pairloss operator whose schema declares no ONNX mapping.
    """
    import torch

    args = tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)
    # the caller's own translations (of its own custom ops) go on top of the registry's
    table = {**translation_table(), **(export_kwargs.pop("custom_translation_table", None) or {})}
    export_kwargs.setdefault("verbose", False)  # no progress lines on stdout
    with _quiet_exporter():
        if isinstance(model, torch.export.ExportedProgram):
            ep = model
        else:
            if dynamic_shapes is None and dynamic_batch:
                dynamic_shapes = _batch_dynamic_shapes(model, args)
            with _eval_mode(model):
                ep = torch.export.export(model, args, dynamic_shapes=dynamic_shapes, strict=False)
        _functionalize_inplace(ep)
        _check_mapped(ep, table)
        program = torch.onnx.export(
            ep, args, dynamo=True, custom_translation_table=table, input_names=input_names,
            output_names=output_names, opset_version=opset_version, optimize=optimize, **export_kwargs,
        )
    if check:
        import onnx

        onnx.checker.check_model(program.model_proto, full_check=True)
    if path is not None:
        program.save(os.fspath(path))
    return program


def export_scorer(scorer: Any, path: str | os.PathLike[str] | None, *, n_features: int | None = None,
                  opset_version: int | None = None, verify: bool = True, rtol: float = 1e-5,
                  atol: float = 1e-6) -> Any:
    """Export a ``(N, F) -> (N,)`` scorer (e.g. :mod:`pairloss.ltr.models`) with a dynamic ``N``.

    The graph has one float32 input ``features`` (N, F) and one output ``scores`` (N,). **Input layout**
    (also in the model's ``metadata_props``, key ``pairloss.input_layout``): column ``j`` is feature index
    ``j`` exactly as written in the SVMlight/LETOR/LightGBM data file (zero-based: a file numbered from 1
    leaves column 0 unused), a missing value (``NULL``, ``nan`` or an absent feature) is ``NaN``, values are
    raw (a ``pairloss.ltr`` scorer transforms, fills missing values and standardises inside the graph). That
    is what ``pairloss predict`` feeds the model, and what ``pairloss.ltr.load(path, n_features=F).features``
    returns. (scikit-learn's ``load_svmlight_file`` reads absent features as 0 and cannot read ``NULL``.)

    With ``verify``, ONNX Runtime scores a fresh random batch of a size not used for the export, with some
    ``NaN`` (missing) values, and must match PyTorch.

    Args:
        scorer: The model; ``n_features`` defaults to its ``n_features`` attribute.
        path: The ``.onnx`` file to write (None: do not write).
        n_features: Number of features F.
        opset_version: ONNX opset (default: the exporter's).
        verify: Check ONNX Runtime against PyTorch (``rtol``, ``atol``) on 13 random items.
        rtol: Relative tolerance of the check.
        atol: Absolute tolerance of the check.

    Returns:
        The ``torch.onnx.ONNXProgram``.

    Raises:
        ValueError: no usable ``n_features``, or ONNX Runtime disagrees with PyTorch.
    """
    import torch

    f = getattr(scorer, "n_features", None) if n_features is None else n_features
    if not isinstance(f, int) or isinstance(f, bool) or f < 1:
        msg = f"n_features must be a positive int (pass it, or give the scorer an n_features attribute); got {f!r}"
        raise ValueError(msg)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(8, f, generator=generator)
    program = export(scorer, (example,), None, input_names=["features"], output_names=["scores"],
                     opset_version=opset_version)
    program.model.metadata_props.update({
        "pairloss.input_layout": (f"features: float32 (N, {f}); column j = feature index j as written in the "
                                  "SVMlight/LETOR/LightGBM file (zero-based; a file numbered from 1 leaves column "
                                  "0 unused); missing values (NULL, nan or absent) NaN; raw values (transformed, "
                                  "filled and standardised inside the model)"),
        "pairloss.n_features": str(f),
        "pairloss.read_with": f"pairloss.ltr.load(path, n_features={f}).features",
    })
    if verify:
        import numpy as np
        import onnxruntime as ort

        features = torch.randn(13, f, generator=generator)
        features[::4, ::2] = float("nan")  # missing values: a pairloss.ltr scorer fills them
        with _eval_mode(scorer), torch.no_grad():
            expected = scorer(features).numpy()
        session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"features": features.numpy()})
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
            diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
            msg = (f"the exported model disagrees with PyTorch on 13 random items: output shape {got.shape} "
                   f"vs {expected.shape}, max abs difference {diff:.3g} (rtol={rtol}, atol={atol})")
            raise ValueError(msg)
    if path is not None:
        program.save(os.fspath(path))
    return program
