r"""The one generic bridge from the operator registry to ``torch.library`` custom ops.

Every schema in :mod:`pairloss.registry` becomes the custom op ``pairloss::<snake_case_name>``
(``PairWiseLoss`` → ``torch.ops.pairloss.pairwise_loss``), built from the schema alone:

* **schema string**: each declared input is a ``Tensor`` (``Tensor? name=None`` when optional), each
  argument a keyword-only typed scalar carrying the schema default (``*, float margin=1.0``), and the
  op returns as many tensors as the schema declares outputs;
* **CPU kernel** (``register_kernel("cpu")``): the registry's NumPy kernel on zero-copy ``.numpy()``
  views of the (detached) inputs. bfloat16 has no NumPy dtype, so bfloat16 inputs are upcast to float32
  around the kernel and the outputs cast back; float16 goes through as is (the kernels compute in at
  least float32). Outputs are cast to the dtype the schema's shape function gives and never alias an
  input;
* **CUDA kernel** (``register_kernel("cuda")``): the registry's CUDA kernel where one is registered
  (``"cuda" in registry.devices(name)``, i.e. Triton is installed), else a **fallback that copies the
  inputs to the CPU, runs the CPU kernel and copies the outputs back** (correct, not fast: ``PairWiseLoss``
  has no CUDA kernel in Caffe2 either);
* **fake kernel** (``register_fake``): output shapes and dtypes from the schema's shape function
  (``identical_type_and_shape`` or ``tensor_inference_function``), so ``torch.compile(fullgraph=True)``
  and ``torch.export`` trace through every op without running it;
* **autograd** (``register_autograd``) for every op with a gradient maker: the backward runs the
  gradient operators that :func:`pairloss.registry.get_gradient_defs` returns, each as its own custom
  op (so the backward is itself traceable). In the gradient defs, ``I(k)`` blobs are the saved forward
  inputs, ``O(k)`` the saved forward outputs, ``GO(k)`` the incoming output gradients, and ``GI(k)``
  the gradient of forward input ``k``; an input with no ``GI`` (labels, lengths) gets ``None``;
* **in-place variants**: a schema that allows input 0 to be written by output 0 (``allow_inplace``)
  also gets ``pairloss::<name>_`` with ``Tensor(a!)`` first argument and no return (``negative_``).
  It runs the out-of-place kernel and copies into the input, and has no autograd formula (a mutating op
  cannot have one): under autograd use :func:`pairloss.nn.functional.negative` with ``inplace=True``,
  which writes through ``Tensor.copy_`` when gradients are recorded.

Registration happens once, when this module is imported (``import pairloss.nn`` imports it), and is
driven only by the registry: an operator module added to :mod:`pairloss.ops` gets its torch op without
an edit here, and :func:`torch_op` registers ops added to the registry after import on first use.

Examples:
    >>> import torch
    >>> from pairloss.nn._torch_ops import torch_op
    >>> print(torch_op("PairWiseLoss"))
    pairloss.pairwise_loss.default
    >>> print(torch_op("MarginRankingCriterion")._schema)
    pairloss::margin_ranking_criterion(Tensor x1, Tensor x2, Tensor y, *, float margin=1.) -> Tensor
    >>> torch.ops.pairloss.negative(torch.tensor([1.0, -2.0]))
    tensor([-1.,  2.])
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from pairloss import registry
from pairloss.registry import OperatorDef, OpSchema

__all__ = [
    "NAMESPACE",
    "inplace_op_name",
    "register_all",
    "registered_ops",
    "scale_gradient",
    "snake_case",
    "torch_op",
    "torch_op_name",
]

NAMESPACE = "pairloss"

# One library fragment for every op the bridge defines; it must stay alive for the ops to stay defined.
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")
_LOCK = threading.RLock()
# registry name -> torch op name (without namespace), filled by register_all
_REGISTERED: dict[str, str] = {}
_INPLACE: dict[str, str] = {}

_ARG_TYPES = {float: "float", int: "int", bool: "bool", str: "str"}
_NUMPY_TO_TORCH = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.complex64): torch.complex64,
    np.dtype(np.complex128): torch.complex128,
}


# --------------------------------------------------------------------------------------------------------
# Names and schema strings
# --------------------------------------------------------------------------------------------------------
def snake_case(name: str) -> str:
    """The torch spelling of a registry name: ``PairWiseLoss`` → ``pairwise_loss``.

    "PairWise" is one word (the project's Python functions say ``pairwise_loss``); acronyms stay together.

    Examples:
        >>> snake_case("MarginRankingCriterionGradient"), snake_case("PairWiseHingeLoss")
        ('margin_ranking_criterion_gradient', 'pairwise_hinge_loss')
    """
    name = name.replace("PairWise", "Pairwise")
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def torch_op_name(name: str) -> str:
    """``pairloss::<snake_case>`` for a registry name."""
    return f"{NAMESPACE}::{snake_case(name)}"


def inplace_op_name(name: str) -> str:
    """``pairloss::<snake_case>_``, the in-place variant of an op whose schema allows it."""
    return f"{torch_op_name(name)}_"


def _input_names(s: OpSchema) -> list[str]:
    names = [i.name.lower() for i in s.inputs]
    clash = {n for n in names if names.count(n) > 1} | (set(names) & {a.name for a in s.args})
    if clash:
        msg = f"{s.name}: input/argument names {sorted(clash)} collide once lower-cased for the torch schema"
        raise ValueError(msg)
    return names


def _format_default(arg: registry.Arg) -> str:
    value = arg.default
    if arg.type is bool:
        return "True" if value else "False"
    if arg.type is float:
        return repr(float(value))
    if arg.type is str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(int(value))


def _schema_string(s: OpSchema, *, inplace: bool = False) -> str:
    if len(s.inputs) != s.max_inputs or len(s.outputs) != s.max_outputs:
        msg = f"{s.name}: every input and output must be declared to build a torch schema"
        raise ValueError(msg)
    params = []
    for inp, name in zip(s.inputs, _input_names(s), strict=True):
        if inplace and inp.index == 0:
            params.append(f"Tensor(a!) {name}")
        elif inp.optional or inp.index >= s.min_inputs:
            params.append(f"Tensor? {name}=None")
        else:
            params.append(f"Tensor {name}")
    if s.args:
        params.append("*")
        for a in s.args:
            if a.type not in _ARG_TYPES:
                msg = f"{s.name}: argument {a.name!r} has type {a.type.__name__}, which has no torch schema type"
                raise TypeError(msg)
            params.append(f"{_ARG_TYPES[a.type]} {a.name}" + ("" if a.required else f"={_format_default(a)}"))
    if inplace:
        returns = "()"
    elif len(s.outputs) == 1:
        returns = "Tensor"
    else:
        returns = "(" + ", ".join("Tensor" for _ in s.outputs) + ")"
    return f"({', '.join(params)}) -> {returns}"


# --------------------------------------------------------------------------------------------------------
# Shapes and dtypes (the fake kernel, also used to type the real outputs)
# --------------------------------------------------------------------------------------------------------
def _trim(inputs: Sequence[torch.Tensor | None], s: OpSchema) -> list[torch.Tensor]:
    """The given inputs: trailing Nones (absent optional inputs) removed; a gap in the middle raises."""
    given = list(inputs)
    while given and given[-1] is None:
        given.pop()
    if any(t is None for t in given):
        msg = f"{s.name}: only trailing optional inputs may be None"
        raise ValueError(msg)
    s.verify_counts(len(given))
    return given  # type: ignore[return-value]


def _as_torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _NUMPY_TO_TORCH[np.dtype(dtype)]
    except (KeyError, TypeError):
        msg = f"shape function returned dtype {dtype!r}, which has no torch equivalent"
        raise TypeError(msg) from None


def _output_specs(s: OpSchema, given: Sequence[torch.Tensor], args: dict[str, Any]
                  ) -> list[tuple[tuple[Any, ...], torch.dtype]]:
    """(shape, dtype) of every output, from the schema's shape function.

    The shape function is handed torch dtypes (the registry's shape functions pass dtypes through), so
    bfloat16 survives; a NumPy dtype coming back is mapped to torch.
    """
    if s.shape_function is None:
        msg = (f"{s.name} declares no shape inference (identical_type_and_shape or tensor_inference_function); "
               f"the torch bridge needs it for the fake kernel")
        raise NotImplementedError(msg)
    specs = [(tuple(t.shape), t.dtype) for t in given]
    out = s.shape_function(specs, args)
    if len(out) != len(s.outputs):
        msg = f"{s.name}: shape function gave {len(out)} outputs; the schema declares {len(s.outputs)}"
        raise ValueError(msg)
    return [(tuple(shape), _as_torch_dtype(dtype)) for shape, dtype in out]


# --------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------
def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view (bfloat16, which NumPy lacks, is upcast to float32: the one copy)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.resolve_conj().resolve_neg().numpy()


def _to_tensor(value: Any, spec: tuple[tuple[Any, ...], torch.dtype], inputs: Sequence[np.ndarray],
               s: OpSchema, index: int) -> torch.Tensor:
    arr = np.asarray(value)  # ufuncs return NumPy scalars for 0-d input
    if tuple(arr.shape) != tuple(spec[0]):
        msg = (f"{s.name}: CPU kernel output {index} has shape {tuple(arr.shape)} but the schema's shape "
               f"function says {tuple(spec[0])}")
        raise RuntimeError(msg)
    # A custom op may not return an alias of its input, and torch.from_numpy needs a writeable,
    # positively strided array; the fake kernel promises contiguous outputs.
    if (not arr.flags.c_contiguous or not arr.flags.writeable
            or any(np.may_share_memory(arr, a) for a in inputs)):
        arr = arr.copy(order="C")
    out = torch.from_numpy(arr)
    return out if out.dtype == spec[1] else out.to(spec[1])


def _run_cpu(s: OpSchema, inputs: Sequence[torch.Tensor | None], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    given = _trim(inputs, s)
    args = s.resolve_args(kwargs)
    specs = _output_specs(s, given, args)
    arrays = [_to_numpy(t) for t in given]
    # the kernel is looked up per call: a kernel re-registered later (a faster rewrite) takes effect
    result = registry.kernel(s.name, "cpu")(*arrays, **args)
    results = list(result) if isinstance(result, tuple | list) else [result]
    return [_to_tensor(r, spec, arrays, s, k) for k, (r, spec) in enumerate(zip(results, specs, strict=True))]


def _run_cuda(s: OpSchema, inputs: Sequence[torch.Tensor | None], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    given = _trim(inputs, s)
    args = s.resolve_args(kwargs)
    if "cuda" not in registry.devices(s.name):
        # No CUDA kernel for this op: run the CPU kernel on host copies and copy the outputs back.
        device = given[0].device
        return [t.to(device) for t in _run_cpu(s, [t.cpu() for t in given], kwargs)]
    specs = _output_specs(s, given, args)
    result = registry.kernel(s.name, "cuda")(*given, **args)
    results = list(result) if isinstance(result, tuple | list) else [result]
    outs = []
    for r, (_, dtype) in zip(results, specs, strict=True):
        r = r.to(dtype).contiguous()
        if any(r.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in given):
            r = r.clone()
        outs.append(r)
    return outs


def _pack(s: OpSchema, outs: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return outs[0] if len(s.outputs) == 1 else tuple(outs)


def _make_kernels(s: OpSchema) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    def cpu(*inputs: torch.Tensor | None, **kwargs: Any) -> Any:
        return _pack(s, _run_cpu(s, inputs, kwargs))

    def cuda(*inputs: torch.Tensor | None, **kwargs: Any) -> Any:
        return _pack(s, _run_cuda(s, inputs, kwargs))

    def fake(*inputs: torch.Tensor | None, **kwargs: Any) -> Any:
        given = _trim(inputs, s)
        specs = _output_specs(s, given, s.resolve_args(kwargs))
        return _pack(s, [given[0].new_empty(shape, dtype=dtype) for shape, dtype in specs])

    return cpu, cuda, fake


def _make_inplace_kernels(s: OpSchema) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    # Runs the out-of-place kernel and copies into input 0: generic over every op that allows (0, 0).
    def cpu(*inputs: torch.Tensor | None, **kwargs: Any) -> None:
        inputs[0].copy_(_run_cpu(s, inputs, kwargs)[0])  # type: ignore[union-attr]

    def cuda(*inputs: torch.Tensor | None, **kwargs: Any) -> None:
        inputs[0].copy_(_run_cuda(s, inputs, kwargs)[0])  # type: ignore[union-attr]

    def fake(*inputs: torch.Tensor | None, **kwargs: Any) -> None:
        return None

    return cpu, cuda, fake


# --------------------------------------------------------------------------------------------------------
# Autograd: the backward runs the registry's gradient operators as custom ops
# --------------------------------------------------------------------------------------------------------
def _in_blob(k: int) -> str:
    return f"in{k}"


def _out_blob(k: int) -> str:
    return f"out{k}"


@lru_cache(maxsize=512)
def _gradient_defs(name: str, n_given: int, args: tuple[tuple[str, Any], ...]) -> tuple[OperatorDef, ...]:
    s = registry.schema(name)
    op = OperatorDef(name, tuple(_in_blob(k) for k in range(n_given)),
                     tuple(_out_blob(k) for k in range(len(s.outputs))), dict(args))
    return tuple(registry.get_gradient_defs(op))


def _make_autograd(s: OpSchema) -> tuple[Callable[..., Any], Callable[..., Any]]:
    n_outputs = len(s.outputs)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any,
                      keyword_only_inputs: dict[str, Any] | None = None) -> None:
        given = _trim(inputs, s)
        args = s.resolve_args(dict(keyword_only_inputs or {}))
        defs = _gradient_defs(s.name, len(given), tuple(args.items()))
        used = {b for d in defs for b in d.inputs}
        outputs = list(output) if n_outputs > 1 else [output]
        # save only the blobs the gradient ops read (Negative's gradient reads none of them)
        saved_in = [k for k in range(len(given)) if _in_blob(k) in used]
        saved_out = [k for k in range(n_outputs) if _out_blob(k) in used]
        ctx.save_for_backward(*(given[k] for k in saved_in), *(outputs[k] for k in saved_out))
        ctx.pairloss_meta = (len(inputs), defs, saved_in, saved_out)

    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        n_inputs, defs, saved_in, saved_out = ctx.pairloss_meta
        saved = ctx.saved_tensors
        ws: dict[str, torch.Tensor] = {}
        ws.update({_in_blob(k): t for k, t in zip(saved_in, saved[: len(saved_in)], strict=True)})
        ws.update({_out_blob(k): t for k, t in zip(saved_out, saved[len(saved_in):], strict=True)})
        ws.update({registry.grad_name(_out_blob(k)): g for k, g in enumerate(grads)})
        written: set[str] = set()
        for d in defs:
            op = torch_op(d.type)
            gs = registry.schema(d.type)
            n_pos = len(gs.inputs)
            results = op(*(ws[b] for b in d.inputs), *([None] * (n_pos - len(d.inputs))),
                         **gs.resolve_args(d.args))
            results = list(results) if isinstance(results, tuple | list) else [results]
            for blob, value in zip(d.outputs, results, strict=True):
                # two gradient ops writing one blob add up, as in Caffe2's gradient accumulation
                ws[blob] = ws[blob] + value if blob in written else value
                written.add(blob)
        grads_in = tuple(ws.get(registry.grad_name(_in_blob(k))) for k in range(n_inputs))
        return grads_in[0] if n_inputs == 1 else grads_in

    return setup_context, backward


# --------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------
def _already_defined(op_name: str) -> bool:
    try:
        getattr(getattr(torch.ops, NAMESPACE), op_name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _register_one(s: OpSchema) -> None:
    op_name = snake_case(s.name)
    if not _already_defined(op_name):  # a re-import of this module finds the ops already defined
        _LIB.define(op_name + _schema_string(s))
        cpu, cuda, fake = _make_kernels(s)
        qualname = f"{NAMESPACE}::{op_name}"
        torch.library.register_kernel(qualname, "cpu", cpu, lib=_LIB)
        torch.library.register_kernel(qualname, "cuda", cuda, lib=_LIB)
        torch.library.register_fake(qualname, fake, lib=_LIB)
        if registry.has_gradient(s.name):
            setup_context, backward = _make_autograd(s)
            torch.library.register_autograd(qualname, backward, setup_context=setup_context, lib=_LIB)
    _REGISTERED[s.name] = op_name
    if (0, 0) in s.inplace and len(s.outputs) == 1:
        inplace_name = op_name + "_"
        if not _already_defined(inplace_name):
            _LIB.define(inplace_name + _schema_string(s, inplace=True))
            cpu, cuda, fake = _make_inplace_kernels(s)
            qualname = f"{NAMESPACE}::{inplace_name}"
            torch.library.register_kernel(qualname, "cpu", cpu, lib=_LIB)
            torch.library.register_kernel(qualname, "cuda", cuda, lib=_LIB)
            torch.library.register_fake(qualname, fake, lib=_LIB)
        _INPLACE[s.name] = inplace_name


def register_all() -> list[str]:
    """Define a torch op for every registry schema that has none yet; returns the registry names added.

    Called once when this module is imported; calling it again only picks up operators registered since.
    """
    added = []
    with _LOCK:
        for s in registry.all_schemas():
            if s.name not in _REGISTERED:
                _register_one(s)
                added.append(s.name)
    return added


def registered_ops() -> dict[str, str]:
    """{registry name: qualified torch op name} for every op the bridge defined (in-place variants included
    under ``<name>_``)."""
    out = {name: f"{NAMESPACE}::{op}" for name, op in _REGISTERED.items()}
    out.update({f"{name}_": f"{NAMESPACE}::{op}" for name, op in _INPLACE.items()})
    return dict(sorted(out.items()))


def torch_op(name: str, *, inplace: bool = False) -> torch._ops.OpOverload:
    """The ``torch.ops.pairloss`` OpOverload of registry operator ``name`` (its in-place variant with
    ``inplace=True``); an operator registered after import is bridged on first use.

    Raises:
        ValueError: ``name`` is not a registry operator, or has no in-place variant.

    Examples:
        >>> print(torch_op("Negative", inplace=True))
        pairloss.negative_.default
    """
    if name not in _REGISTERED:
        registry.schema(name)  # unknown names raise, listing the known ones
        register_all()
    if inplace:
        if name not in _INPLACE:
            msg = f"{name} has no in-place variant: its schema does not allow input 0 to be written by output 0"
            raise ValueError(msg)
        return getattr(getattr(torch.ops, NAMESPACE), _INPLACE[name]).default
    return getattr(getattr(torch.ops, NAMESPACE), _REGISTERED[name]).default


# --------------------------------------------------------------------------------------------------------
# Gradient scaling (not a registry op): identity forward, scale * grad backward
# --------------------------------------------------------------------------------------------------------
@torch.library.custom_op(f"{NAMESPACE}::scale_gradient", mutates_args=())
def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass (an exact copy); the backward multiplies the gradient by ``scale``.

    ``negate_gradient(x, scale)`` composes it with the ``NegateGradient`` op. A custom op rather than an
    ``autograd.Function`` so that ``torch.compile`` sees an opaque, correctly differentiated node.
    """
    return x.clone()


@scale_gradient.register_fake
def _(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)


def _scale_gradient_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.scale = inputs[1]


def _scale_gradient_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    return grad * ctx.scale, None


scale_gradient.register_autograd(_scale_gradient_backward, setup_context=_scale_gradient_setup)

register_all()
