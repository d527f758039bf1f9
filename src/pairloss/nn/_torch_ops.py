r"""The one generic bridge from the operator registry to ``torch.library`` custom ops.

Every schema in :mod:`pairloss.registry` becomes the custom op ``pairloss::<snake_case_name>``
(``PairWiseLoss`` → ``torch.ops.pairloss.pairwise_loss``), built from the schema alone:

* **schema string**: each declared input is a ``Tensor`` (``Tensor? name=None`` when optional), each
  argument a keyword-only typed scalar carrying the schema default (``*, float margin=1.0``), and the
  op returns as many tensors as the schema declares outputs;
* **``.tensor_args`` overload** for an op with ``float`` arguments: the same op with every float
  argument a positional 0-d ``Tensor`` (``pairloss::margin_ranking_criterion.tensor_args(Tensor x1,
  Tensor x2, Tensor y, Tensor margin)``). Under ``torch.compile(dynamic=True)`` a margin that changes
  between calls is a symbolic float; a ``float`` schema argument would have to be specialised (one
  recompilation per value, and ``fullgraph=True`` fails at the recompile limit), a tensor enters the
  graph as data. :mod:`pairloss.nn.functional` picks it for a symbolic or tensor margin;
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
* **autograd** (a kernel at the ``Autograd`` key that applies an ``autograd.Function``):

  - *backward* runs the gradient operators that :func:`pairloss.registry.get_gradient_defs` returns,
    each as its own custom op, so the backward is itself differentiable (double backward, Hessians)
    wherever the gradient operators have gradient makers of their own. In the gradient defs, ``I(k)``
    blobs are the saved forward inputs, ``O(k)`` the saved forward outputs, ``GO(k)`` the incoming
    output gradients, and ``GI(k)`` the gradient of forward input ``k``; an input with no ``GI``
    (labels, lengths, float arguments) gets ``None``;
  - *forward mode* (``jvp``, for ``torch.func.jvp``/``jacfwd`` and ``torch.autograd.forward_ad``) is
    the double-vjp identity :math:`J t = \partial_u \langle J^\top u, t\rangle`: the vjp
    :math:`J^\top u` is the op's gradient operators, linear in the output gradient :math:`u`, so the
    tangent of output ``k`` is the gradient, with respect to their ``GO(k)`` input, of those gradient
    operators with incoming gradient ``t`` -- i.e. the ``GI`` of that input in *their* gradient defs,
    run at :math:`u = 0`. Only the registry's gradient makers are used: no per-op rule, and an op
    whose gradient operators have no gradient maker says so instead of returning zeros;
  - an op without a gradient maker still gets the kernel, whose backward and jvp raise naming the op
    (torch's fallback would warn and return silently wrong zeros);
  - *fused gradient*: an op with :class:`pairloss.registry.FusedGradient` kernels (the session losses)
    also gets ``pairloss::<name>_fused_forward`` (its inputs -> ``(Y, saved)``) and
    ``pairloss::<name>_fused_backward``. Plain first-order autograd on the CPU runs the fused forward, which
    computes the gradient in the same pass over the pairs and keeps it (float64, O(N)); the backward
    only scales it by the output gradient. The registry's gradient operators remain the definition:
    where the backward is recorded (``create_graph=True``), under torch.func transforms and in forward mode,
    the generic function above runs;
  - *eager path*: :func:`session_loss_eager` runs the same fused kernels from one ``autograd.Function``
    without the custom op's dispatch, for :mod:`pairloss.nn.functional`'s calls on plain CPU tensors that
    nothing else can see (:func:`eager_applies`: no compiler, torch.func transform, forward-mode AD, torch
    function or dispatch mode, tensor subclass); at mini-batch sizes the dispatch cost more than the pairs.
    Its values and gradients are the custom op's to the bit (its reductions sum in float64 on the host,
    also for bfloat16, where the custom op's path leaves the sum to torch);

* **vmap** (``register_vmap``): one generic rule for every op and overload. The registry declares no
  batching semantics, so it runs the op once per batch entry (``select`` along each input's batch
  dimension) and stacks the outputs along dimension 0; an empty batch takes its output shapes from the
  schema's shape function. It composes with autograd and forward mode (``jacrev``, ``jacfwd``,
  ``hessian`` are vmaps over vjps and jvps);
* **in-place variants**: a schema that allows input 0 to be written by output 0 (``allow_inplace``)
  also gets ``pairloss::<name>_`` with ``Tensor(a!)`` first argument and no return (``negative_``).
  It runs the out-of-place kernel and copies into the input, and has no autograd formula (a mutating op
  cannot have one): :func:`pairloss.nn.functional.negative` with ``inplace=True`` writes through
  ``Tensor.copy_`` instead, which autograd, vmap and the compilers all understand.

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
    >>> print(torch_op("MarginRankingCriterion", tensor_args=True)._schema)
    pairloss::margin_ranking_criterion.tensor_args(Tensor x1, Tensor x2, Tensor y, Tensor margin) -> Tensor
    >>> torch.ops.pairloss.negative(torch.tensor([1.0, -2.0]))
    tensor([-1.,  2.])
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch._functorch.autograd_function import enable_single_level_autograd_function

from pairloss import registry
from pairloss.registry import OperatorDef, OpSchema

__all__ = [
    "NAMESPACE",
    "TENSOR_ARGS",
    "call_op",
    "eager_applies",
    "host_sum",
    "inplace_op_name",
    "register_all",
    "registered_ops",
    "scale_gradient",
    "session_loss_eager",
    "snake_case",
    "torch_op",
    "torch_op_name",
]

NAMESPACE = "pairloss"
#: Overload name of the variant whose float arguments are 0-d tensors.
TENSOR_ARGS = "tensor_args"

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


def _float_args(s: OpSchema) -> list[registry.Arg]:
    return [a for a in s.args if a.type is float]


def _format_default(arg: registry.Arg) -> str:
    value = arg.default
    if arg.type is bool:
        return "True" if value else "False"
    if arg.type is float:
        return repr(float(value))
    if arg.type is str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(int(value))


def _schema_string(s: OpSchema, *, inplace: bool = False, tensor_args: bool = False) -> str:
    if len(s.inputs) != s.max_inputs or len(s.outputs) != s.max_outputs:
        msg = f"{s.name}: every input and output must be declared to build a torch schema"
        raise ValueError(msg)
    params = []
    for inp, name in zip(s.inputs, _input_names(s), strict=True):
        optional = inp.optional or inp.index >= s.min_inputs
        if inplace and inp.index == 0:
            params.append(f"Tensor(a!) {name}")
        elif tensor_args:
            # positional tensors follow, so nothing here has a default: the bridge passes every input
            params.append(f"Tensor? {name}" if optional else f"Tensor {name}")
        elif optional:
            params.append(f"Tensor? {name}=None")
        else:
            params.append(f"Tensor {name}")
    scalars = [a for a in s.args if not (tensor_args and a.type is float)]
    if tensor_args:
        # positional, not keyword-only: torch.library.register_vmap refuses keyword-only tensors
        params += [f"Tensor {a.name}" for a in _float_args(s)]
    if scalars:
        params.append("*")
        for a in scalars:
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


def _shape_args(s: OpSchema, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a shape function: a tensor float argument (only a fake or a device value while
    tracing) is replaced by the schema default, which a shape function may read but must not depend on."""
    plain = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
    resolved = s.resolve_args(plain)
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            resolved[k] = s.get_arg(k).default if not s.get_arg(k).required else 0.0
    return resolved


# --------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------
def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view (bfloat16, which NumPy lacks, is upcast to float32: the one copy)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.numpy()


_NUMPY_TWINS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _from_host(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A kernel's output (C-contiguous and writeable, or it is copied) as a CPU tensor of ``dtype``, rounded
    once. NumPy casts where it has the dtype: torch's cast of a large tensor opens an OpenMP parallel region,
    whose workers then spin on the cores (about a millisecond) while the next kernel's threads want them."""
    twin = _NUMPY_TWINS.get(dtype)
    if twin is None:  # bfloat16, or a dtype this table leaves to torch
        out = torch.from_numpy(np.asarray(values, order="C"))
        return out if out.dtype == dtype else out.to(dtype)
    return torch.from_numpy(np.asarray(values, dtype=twin, order="C"))


def _scaled_from_host(values: np.ndarray, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """``_from_host(values * scale, dtype)``, the product taken in float64 and rounded once, in one pass:
    NumPy writes the rounded product straight into the output (1e6 float32: 0.27 against 1.0 ms for the
    float64 product and then its cast)."""
    twin = _NUMPY_TWINS.get(dtype)
    if twin is None:
        return _from_host(np.multiply(values, scale, dtype=np.float64), dtype)
    out = np.empty(values.shape, twin)
    np.multiply(values, scale, out=out, dtype=np.float64, casting="same_kind")
    return torch.from_numpy(out)


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
    return _from_host(arr, spec[1])


def _cpu_outputs(s: OpSchema, kernel: Callable[..., Any], tensors: Sequence[torch.Tensor], args: dict[str, Any],
                 specs: Sequence[tuple[tuple[Any, ...], torch.dtype]]) -> list[torch.Tensor]:
    """A NumPy kernel run on zero-copy views of ``tensors``; its outputs as tensors of ``specs``."""
    arrays = [_to_numpy(t) for t in tensors]
    result = kernel(*arrays, **args)
    results = list(result) if isinstance(result, tuple | list) else [result]
    return [_to_tensor(r, spec, arrays, s, k) for k, (r, spec) in enumerate(zip(results, specs, strict=True))]


def _run_cpu(s: OpSchema, inputs: Sequence[torch.Tensor | None], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    given = _trim(inputs, s)
    args = s.resolve_args(kwargs)
    # the kernel is looked up per call: a kernel re-registered later (a faster rewrite) takes effect
    return _cpu_outputs(s, registry.kernel(s.name, "cpu"), given, args, _output_specs(s, given, args))


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


def _split_call(s: OpSchema, tensor_args: bool, args: Sequence[Any], kwargs: dict[str, Any]
                ) -> tuple[list[torch.Tensor | None], dict[str, Any]]:
    """(the op's inputs, its arguments by name) from one call of either overload."""
    n = len(s.inputs)
    inputs = list(args[:n])
    named = dict(kwargs)
    if tensor_args:
        named.update({a.name: v for a, v in zip(_float_args(s), args[n:], strict=True)})
    return inputs, named


def _concrete_args(s: OpSchema, named: dict[str, Any]) -> dict[str, Any]:
    """Tensor float arguments as Python floats (the kernels take Python scalars); the registry then
    checks them like any other argument (finite, right type)."""
    out = dict(named)
    for a in _float_args(s):
        v = out.get(a.name)
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                msg = (f"{s.name}: argument {a.name!r} must be a number or a one-element tensor; "
                       f"got shape {tuple(v.shape)}")
                raise ValueError(msg)
            out[a.name] = v.item()
    return out


def _make_kernels(s: OpSchema, tensor_args: bool) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    def cpu(*args: Any, **kwargs: Any) -> Any:
        inputs, named = _split_call(s, tensor_args, args, kwargs)
        return _pack(s, _run_cpu(s, inputs, _concrete_args(s, named)))

    def cuda(*args: Any, **kwargs: Any) -> Any:
        inputs, named = _split_call(s, tensor_args, args, kwargs)
        return _pack(s, _run_cuda(s, inputs, _concrete_args(s, named)))

    def fake(*args: Any, **kwargs: Any) -> Any:
        inputs, named = _split_call(s, tensor_args, args, kwargs)
        given = _trim(inputs, s)
        specs = _output_specs(s, given, _shape_args(s, named))
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
# Calling an op by registry name (what the gradient defs name)
# --------------------------------------------------------------------------------------------------------
def call_op(name: str, inputs: Sequence[torch.Tensor | None], args: dict[str, Any] | None = None
            ) -> list[torch.Tensor]:
    """Run registry operator ``name`` through its torch op; returns its outputs as a list.

    ``inputs`` may stop before the optional ones. A float argument given as a tensor selects the
    ``tensor_args`` overload (the other float arguments then become 0-d float64 tensors too).
    """
    s = registry.schema(name)
    args = dict(args or {})
    tensors = [*inputs, *([None] * (len(s.inputs) - len(inputs)))]
    if any(isinstance(v, torch.Tensor) for v in args.values()):
        device = next((t.device for t in tensors if t is not None), None)
        floats = []
        for a in _float_args(s):
            v = args.pop(a.name, a.default)
            floats.append(v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64,
                                                                            device=device))
        out = torch_op(name, tensor_args=True)(*tensors, *floats, **args)
    else:
        out = torch_op(name)(*tensors, **s.resolve_args(args))
    return list(out) if isinstance(out, tuple | list) else [out]


# --------------------------------------------------------------------------------------------------------
# Autograd: backward runs the gradient operators, forward mode the gradient operators' gradients
# --------------------------------------------------------------------------------------------------------
def _in_blob(k: int) -> str:
    return f"in{k}"


def _out_blob(k: int) -> str:
    return f"out{k}"


@lru_cache(maxsize=512)
def _cached_gradient_defs(name: str, n_given: int, args: tuple[tuple[str, Any], ...]) -> tuple[OperatorDef, ...]:
    return _gradient_defs_uncached(name, n_given, dict(args))


def _gradient_defs_uncached(name: str, n_given: int, args: dict[str, Any]) -> tuple[OperatorDef, ...]:
    s = registry.schema(name)
    op = OperatorDef(name, tuple(_in_blob(k) for k in range(n_given)),
                     tuple(_out_blob(k) for k in range(len(s.outputs))), dict(args))
    return tuple(registry.get_gradient_defs(op))


def _gradient_defs(name: str, n_given: int, args: dict[str, Any]) -> tuple[OperatorDef, ...]:
    """The gradient defs of ``name`` with blobs ``in<k>``/``out<k>``; cached unless an argument is a
    tensor (tensors hash by identity: caching them would only leak)."""
    if any(isinstance(v, torch.Tensor) for v in args.values()):
        return _gradient_defs_uncached(name, n_given, args)
    return _cached_gradient_defs(name, n_given, tuple(args.items()))


def _run_defs(defs: Sequence[OperatorDef], ws: dict[str, torch.Tensor]) -> None:
    """Run gradient defs in order on workspace ``ws`` (blob name -> tensor)."""
    written: set[str] = set()
    for d in defs:
        results = call_op(d.type, [ws[b] for b in d.inputs], d.args)
        for blob, value in zip(d.outputs, results, strict=True):
            # two gradient ops writing one blob add up, as in Caffe2's gradient accumulation
            ws[blob] = ws[blob] + value if blob in written else value
            written.add(blob)


def _no_gradient(name: str, what: str) -> RuntimeError:
    return RuntimeError(f"{what} through pairloss operator {name} is not available: {name} has no gradient "
                        f"maker in the registry (register one with pairloss.registry.register_gradient)")


def _forward_ad_active() -> bool:
    # torch.autograd.forward_ad and torch.func.jvp both enter a dual level; dual tensors do not
    # require grad, so autograd's requires_grad test alone would skip the jvp and give zero tangents
    return fwAD._current_level >= 0


@dataclass
class _Meta:
    """The dispatch keyset and keyword-only arguments, passed through autograd.Function.apply."""

    keyset: Any
    kwargs: dict[str, Any]


@dataclass
class _Saved:
    n_args: int  # positional arguments of the call (autograd wants one gradient per argument)
    given: int  # inputs given (trailing optional ones dropped)
    args: dict[str, Any]  # every argument by name; tensor float arguments are saved tensors (None here)
    tensor_arg_names: tuple[str, ...]
    defs: tuple[OperatorDef, ...]
    backward_blobs: tuple[str, ...]
    forward_blobs: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...] = ()


def _make_function(s: OpSchema, overload: torch._ops.OpOverload, tensor_args: bool) -> type[torch.autograd.Function]:
    """The autograd.Function of one overload of one registry op (applied by the Autograd kernel)."""
    n_outputs = len(s.outputs)

    def forward(*args: Any) -> Any:
        return _redispatch_below_autograd(overload, args[-1], args[:-1])

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        meta = inputs[-1]
        call_inputs, named = _split_call(s, tensor_args, inputs[:-1], meta.kwargs)
        given = _trim(call_inputs, s)
        tensor_named = {k: v for k, v in named.items() if isinstance(v, torch.Tensor)}
        args = {**s.resolve_args({k: v for k, v in named.items() if k not in tensor_named}), **tensor_named}
        outputs = list(output) if n_outputs > 1 else [output]
        values = {**{_in_blob(k): t for k, t in enumerate(given)},
                  **{_out_blob(k): t for k, t in enumerate(outputs)}}
        # looked up per call: a gradient maker registered (or removed) after the op was bridged counts
        defs = _gradient_defs(s.name, len(given), args) if registry.has_gradient(s.name) else ()
        # save only the blobs the gradient ops read (Negative's gradient reads none of them)
        used = {b for d in defs for b in d.inputs}
        backward_blobs = tuple(b for b in values if b in used)
        forward_blobs = tuple(values) if _forward_ad_active() else ()
        names = tuple(tensor_named)
        ctx.save_for_backward(*(values[b] for b in backward_blobs), *tensor_named.values())
        if forward_blobs:
            ctx.save_for_forward(*(values[b] for b in forward_blobs), *tensor_named.values())
        ctx.pairloss = _Saved(len(inputs) - 1, len(given), {k: None if k in tensor_named else v
                                                              for k, v in args.items()},
                              names, defs, backward_blobs, forward_blobs, tuple(tuple(t.shape) for t in given))

    def _restore(saved: _Saved, tensors: Sequence[torch.Tensor], blobs: Sequence[str]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        ws = dict(zip(blobs, tensors[: len(blobs)], strict=True))
        args = dict(saved.args)
        args.update(zip(saved.tensor_arg_names, tensors[len(blobs):], strict=True))
        return ws, args

    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        saved: _Saved = ctx.pairloss
        if not registry.has_gradient(s.name):
            raise _no_gradient(s.name, "Backward")
        ws, args = _restore(saved, ctx.saved_tensors, saved.backward_blobs)
        defs = saved.defs if not saved.tensor_arg_names else _gradient_defs(s.name, saved.given, args)
        ws.update({registry.grad_name(_out_blob(k)): g for k, g in enumerate(grads)})
        _run_defs(defs, ws)
        grads_in = [ws.get(registry.grad_name(_in_blob(k))) for k in range(saved.given)]
        for k in sorted(s.unimplemented_gradients):
            if k < saved.given and ctx.needs_input_grad[k]:
                # A derivative the registry declares not implemented (order three or more) comes back as NaN:
                # autograd drops it when the caller does not need it (torch's hvp asks for every input of a
                # node), and where it is needed it can never pass for a number, as a zero would.
                like = grads[0]
                grads_in[k] = torch.full(_input_shape(saved, k, ws), float("nan"), dtype=like.dtype,
                                         device=like.device)
        return (*grads_in, *([None] * (saved.n_args - saved.given)), None)

    def jvp(ctx: Any, *tangents: torch.Tensor | None) -> Any:
        saved: _Saved = ctx.pairloss
        if not registry.has_gradient(s.name):
            raise _no_gradient(s.name, "Forward-mode AD")
        missing = [k for k in sorted(s.unimplemented_gradients)
                   if k < len(tangents) and tangents[k] is not None and bool(tangents[k].ne(0).any())]
        if missing:
            names = ", ".join(s.inputs[k].name for k in missing)
            msg = (f"forward-mode AD through pairloss operator {s.name} with a tangent on {names} needs a derivative "
                   f"that is not implemented (order three or more)")
            raise NotImplementedError(msg)
        _refuse_forward_over_forward(s.name)
        values, args = _restore(saved, ctx.saved_tensors, saved.forward_blobs)
        defs = saved.defs if not saved.tensor_arg_names else _gradient_defs(s.name, saved.given, args)
        out_tangents = _double_vjp(s.name, defs, values, list(tangents[: saved.given]), n_outputs)
        out = [t if t is not None else torch.zeros_like(values[_out_blob(k)]) for k, t in enumerate(out_tangents)]
        return out[0] if n_outputs == 1 else tuple(out)

    name = f"PairlossFunction_{snake_case(s.name)}{'_tensor_args' if tensor_args else ''}"
    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward), "jvp": staticmethod(jvp),
    })


# --------------------------------------------------------------------------------------------------------
# Fused gradient: the forward keeps what the backward needs (registry.FusedGradient), one pass over the data
# --------------------------------------------------------------------------------------------------------
def _define_fused_ops(s: OpSchema, op_name: str) -> tuple[torch._ops.OpOverload, torch._ops.OpOverload]:
    """``pairloss::<name>_fused_forward`` (the op's inputs and arguments -> (Y, saved)) and
    ``pairloss::<name>_fused_backward(saved, Y_grad, <inputs>) -> X_grad``, CPU kernels and fake kernels."""
    forward_name, backward_name = f"{op_name}_fused_forward", f"{op_name}_fused_backward"
    inputs = _schema_string(s).split(" -> ")[0]  # "(Tensor x, ..., *, float margin=1.)"
    tensors = inputs[1:-1].split(", *")[0]
    if not _already_defined(forward_name):
        _LIB.define(f"{forward_name}{inputs} -> (Tensor, Tensor)")
        _LIB.define(f"{backward_name}(Tensor saved, Tensor y_grad, {tensors}) -> Tensor")

        def forward_cpu(*inputs: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            given = _trim(inputs, s)
            args = s.resolve_args(kwargs)
            specs = [_output_specs(s, given, args)[0], (tuple(given[0].shape), torch.float64)]
            y, saved = _cpu_outputs(s, _output_and_saved(_fused_kernels(s)), given, args, specs)
            return y, saved

        def forward_fake(*inputs: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            given = _trim(inputs, s)
            shape, dtype = _output_specs(s, given, _shape_args(s, kwargs))[0]
            return given[0].new_empty(shape, dtype=dtype), given[0].new_empty(given[0].shape, dtype=torch.float64)

        def backward_cpu(saved: torch.Tensor, y_grad: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
            given = _trim(inputs, s)
            spec = (tuple(given[0].shape), given[0].dtype)
            return _cpu_outputs(s, _fused_kernels(s).backward, [saved, y_grad, *given], {}, [spec])[0]

        def backward_fake(saved: torch.Tensor, y_grad: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
            return torch.empty_like(inputs[0], memory_format=torch.contiguous_format)  # type: ignore[arg-type]

        kernels = ((forward_name, forward_cpu, forward_fake), (backward_name, backward_cpu, backward_fake))
        for name, cpu, fake in kernels:
            torch.library.register_kernel(f"{NAMESPACE}::{name}", "cpu", cpu, lib=_LIB)
            torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIB)
    ns = getattr(torch.ops, NAMESPACE)
    return getattr(ns, forward_name).default, getattr(ns, backward_name).default


def _output_and_saved(fused: registry.FusedGradient) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The fused forward kernel with the custom op's two outputs: an average over Y is the caller's."""

    def forward(*arrays: np.ndarray, **args: Any) -> tuple[np.ndarray, np.ndarray]:
        result = fused.forward(*arrays, **args)
        return result.output, result.saved

    return forward


def _fused_kernels(s: OpSchema) -> registry.FusedGradient:
    """The op's fused kernels, looked up per call like its other kernels."""
    fused = registry.fused_gradient(s.name)
    if fused is None:
        msg = f"{s.name} no longer has fused gradient kernels in the registry"
        raise RuntimeError(msg)
    return fused


def _registry_input_gradients(s: OpSchema, inputs: Sequence[torch.Tensor | None], outputs: Sequence[torch.Tensor],
                              grads: Sequence[torch.Tensor], kwargs: dict[str, Any]) -> list[torch.Tensor | None]:
    """The gradient of every input from the registry's gradient operators (differentiable: custom ops)."""
    given = _trim(inputs, s)
    args = s.resolve_args(kwargs)
    ws = {**{_in_blob(k): t for k, t in enumerate(given)}, **{_out_blob(k): t for k, t in enumerate(outputs)},
          **{registry.grad_name(_out_blob(k)): g for k, g in enumerate(grads)}}
    _run_defs(_gradient_defs(s.name, len(given), args), ws)
    return [ws.get(registry.grad_name(_in_blob(k))) if k < len(given) else None for k in range(len(inputs))]


def _make_fused_function(s: OpSchema, op_name: str) -> type[torch.autograd.Function] | None:
    """The autograd.Function of an op with registry.FusedGradient kernels, or None for the others.

    The forward runs the fused kernel and keeps its float64 ``saved`` array (O(N)); a first-order backward
    turns it into X_grad in one pass. Where autograd records the backward (``create_graph=True``: double
    backward, Hessians) the registry's gradient operators run instead, so higher orders are unchanged.
    """
    if registry.fused_gradient(s.name) is None or s.unimplemented_gradients or not registry.has_gradient(s.name):
        return None
    fused_forward, fused_backward = _define_fused_ops(s, op_name)

    def forward(ctx: Any, *args: Any) -> torch.Tensor:
        meta: _Meta = args[-1]
        inputs = args[:-1]
        y, saved = fused_forward(*inputs, **meta.kwargs)
        ctx.save_for_backward(saved, y, *inputs)
        ctx.kwargs = meta.kwargs
        return y

    def backward(ctx: Any, y_grad: torch.Tensor) -> Any:
        saved, y, *inputs = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = _registry_input_gradients(s, inputs, [y], [y_grad], ctx.kwargs)
        else:
            grads = [fused_backward(saved, y_grad, *inputs) if ctx.needs_input_grad[0] else None,
                     *([None] * (len(inputs) - 1))]
        return (*grads, None)

    name = f"PairlossFusedFunction_{op_name}"
    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                   "backward": staticmethod(backward)})


def _fused_applies(args: Sequence[Any]) -> bool:
    """The fused path serves plain first-order autograd on the CPU; transforms and forward mode take the
    generic function, which implements them."""
    x = args[0]
    return (isinstance(x, torch.Tensor) and x.device.type == "cpu" and not _forward_ad_active()
            and not torch._C._are_functorch_transforms_active())


# --------------------------------------------------------------------------------------------------------
# Eager fast path: the fused kernels without the custom-op dispatch, for plain CPU tensors
# --------------------------------------------------------------------------------------------------------
# A training step on a mini-batch of a few dozen sessions spends more time in the custom op's layers
# (dispatch, the dynamo-disabled kernel wrappers, two autograd Functions and the fake-shape checks: about
# 0.5 ms of a 1 ms step at 64 sessions of 10 items) than in the pairs. Where nothing but plain eager
# autograd can see the call, session_loss_eager runs the same registry kernels directly.
def eager_applies(name: str, *tensors: torch.Tensor | None) -> bool:
    """Whether :func:`session_loss_eager` may serve a call of op ``name`` on these tensors: an op with fused
    gradient kernels, plain CPU tensors, and no compiler, tracer, torch.func transform, forward-mode AD,
    torch function mode or dispatch mode to see the call."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return (_fused_applies(tensors)
            and all(t is None or (type(t) is torch.Tensor and t.is_cpu) for t in tensors)
            and torch._C._len_torch_function_stack() == 0 and torch._C._len_torch_dispatch_stack() == 0
            and _has_eager_kernels(name))


@cache
def _has_eager_kernels(name: str) -> bool:
    """Op ``name`` has fused gradient kernels and every gradient implemented (what an op registers does not
    change afterwards; a call's checks are a tenth of a 2-item call's time on these VMs, so they are kept)."""
    return (registry.fused_gradient(name) is not None and registry.has_gradient(name)
            and not registry.schema(name).unimplemented_gradients)


@dataclass
class _EagerCall:
    """What the eager function needs besides its tensors (passed through autograd.Function.apply)."""

    schema: OpSchema
    args: dict[str, Any]
    keep: slice | None
    total_scale: Callable[[np.ndarray | None], float] | None


def host_sum(values: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * values.sum()`` of a CPU tensor, summed by NumPy in float64, in ``values``' dtype: a torch
    reduction over many values opens an OpenMP parallel region whose spinning workers stall on a loaded
    machine (measured in pairloss.nn.functional's _HostSum, its differentiable form)."""
    total = _to_numpy(values).sum(dtype=np.float64) * scale
    twin = _NUMPY_TWINS.get(values.dtype)
    if twin is np.float32 or twin is np.float64:  # rounded as torch.tensor rounds it, in a third of its time
        return torch.from_numpy(np.array(total, dtype=twin))
    return torch.tensor(total, dtype=values.dtype)  # float16: torch's own rounding of a float64 to it


def _kept(values: torch.Tensor, keep: slice | None) -> torch.Tensor:
    return values if keep is None else values[keep]


def _run_plain_kernel(call: _EagerCall, inputs: Sequence[torch.Tensor | None]) -> torch.Tensor:
    given = _trim(inputs, call.schema)
    y = registry.kernel(call.schema.name, "cpu")(*[_to_numpy(t) for t in given], **call.args)
    return _from_host(y, given[0].dtype)


class _EagerFusedLoss(torch.autograd.Function):
    """The fused forward (Y and the unit gradient in one pass) and its one-pass backward, reduced by
    ``total_scale``; where the backward is recorded (``create_graph=True``) the registry's gradient
    operators run, as in the custom op's fused function."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor | None,
                call: _EagerCall) -> torch.Tensor:  # type: ignore[override]
        given = _trim([scores, labels, lengths], call.schema)
        arrays = [_to_numpy(t) for t in given]
        fused = registry.fused_gradient(call.schema.name).forward(*arrays, **call.args)  # type: ignore[union-attr]
        per_session = _from_host(fused.output, scores.dtype)
        ctx.unit, ctx.call, ctx.dtype, ctx.shape = fused.saved, call, scores.dtype, scores.shape
        ctx.save_for_backward(scores, labels, lengths, per_session)
        if call.total_scale is None:
            return per_session
        ctx.scale = call.total_scale(fused.counted)
        return host_sum(_kept(per_session, call.keep), ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        call: _EagerCall = ctx.call
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if call.total_scale is not None and call.keep is None and not torch.is_grad_enabled():
            # every session's Y_grad is the same c, so X_grad = c * unit (linear in Y_grad): one product
            # (NumPy: no torch parallel region), with c rounded to the dtype as the per-session path rounds it.
            # The saved tensors are not read (the unit gradient holds all it needs), as torch's own ops whose
            # backward needs no input
            c = grad.item() if ctx.scale == 1.0 else (grad * ctx.scale).item()  # * 1.0 is exact in every dtype
            x_grad = _scaled_from_host(ctx.unit, c, ctx.dtype)
            if x_grad.shape != ctx.shape:
                x_grad = x_grad.reshape(ctx.shape)
            return x_grad, None, None, None
        scores, labels, lengths, per_session = ctx.saved_tensors
        if call.total_scale is None:
            y_grad = grad
        else:  # the scalar's gradient spread over the kept sessions
            y_grad = torch.zeros_like(per_session)
            y_grad[slice(None) if call.keep is None else call.keep] = grad * ctx.scale
        if torch.is_grad_enabled():
            grads = _registry_input_gradients(call.schema, [scores, labels, lengths], [per_session], [y_grad],
                                              call.args)
            return grads[0], None, None, None
        given = _trim([scores, labels, lengths], call.schema)
        x_grad = registry.fused_gradient(call.schema.name).backward(  # type: ignore[union-attr]
            ctx.unit, _to_numpy(y_grad), *[_to_numpy(t) for t in given])
        return _from_host(x_grad, scores.dtype), None, None, None


def session_loss_eager(name: str, scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor | None,
                       args: dict[str, Any], *, keep: slice | None = None,
                       total_scale: Callable[[np.ndarray | None], float] | None = None) -> torch.Tensor:
    """Session op ``name`` (one with :class:`pairloss.registry.FusedGradient` kernels) on plain CPU tensors
    (:func:`eager_applies`), differentiable in ``scores``, without the custom op's dispatch.

    ``total_scale`` None: the per-session outputs (``[keep]`` of them); else the scalar ``total_scale(counted)
    * sum(outputs[keep])``, summed in float64, where ``counted`` is the fused kernel's
    :attr:`pairloss.registry.FusedForward.counted` (None where only the plain forward ran). ``total_scale``
    is called after the kernel has validated the inputs. Values and gradients are those of the custom op: the
    same kernels run.
    """
    s = registry.schema(name)
    call = _EagerCall(s, s.resolve_args(args), keep, total_scale)
    if torch.is_grad_enabled() and scores.requires_grad:
        out = _EagerFusedLoss.apply(scores, labels, lengths, call)
    else:
        out = _run_plain_kernel(call, [scores, labels, lengths])
        if total_scale is not None:
            return host_sum(_kept(out, keep), total_scale(None))
    return out if total_scale is not None else _kept(out, keep)


def _input_shape(saved: _Saved, k: int, ws: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The shape of forward input ``k``: from the saved blobs, else that of the matching input gradient."""
    blob = _in_blob(k)
    if blob in ws:
        return tuple(ws[blob].shape)
    return tuple(saved.input_shapes[k])


def _double_vjp(name: str, defs: Sequence[OperatorDef], values: dict[str, torch.Tensor],
                tangents: list[torch.Tensor | None], n_outputs: int) -> list[torch.Tensor | None]:
    r"""Output tangents :math:`J t` of op ``name`` from its gradient defs (blobs ``in<k>``, ``out<k>``).

    Each gradient def ``d`` computes part of :math:`J^\top u` from the output gradients :math:`u`
    (blobs ``out<k>_grad``), linearly. Its own gradient defs, run with incoming gradient :math:`t_k` on
    the output that is ``GI(k)`` of the forward op, give as ``GI`` of each ``out<k>_grad`` input the
    derivative of :math:`\langle J^\top u, t\rangle` in :math:`u`, which is :math:`J t`, whatever
    :math:`u`; :math:`u = 0` is used.
    """
    go = {registry.grad_name(_out_blob(k)): k for k in range(n_outputs)}
    gi = {registry.grad_name(_in_blob(k)): k for k in range(len(tangents))}
    out: list[torch.Tensor | None] = [None] * n_outputs
    for d in defs:
        written = [(j, gi[b]) for j, b in enumerate(d.outputs) if b in gi and tangents[gi[b]] is not None]
        reads_go = [(j, go[b]) for j, b in enumerate(d.inputs) if b in go]
        if not written or not reads_go:
            continue  # no tangent flows through this gradient op
        if not registry.has_gradient(d.type):
            msg = (f"forward-mode AD through pairloss operator {name} needs the gradient of its gradient "
                   f"operator {d.type}, which has no gradient maker in the registry")
            raise RuntimeError(msg)
        ws: dict[str, torch.Tensor] = {}
        for j, blob in enumerate(d.inputs):
            ws[_in_blob(j)] = torch.zeros_like(values[_out_blob(go[blob])]) if blob in go else values[blob]
        dd = _gradient_defs(d.type, len(d.inputs), dict(d.args))
        own: list[torch.Tensor] = []

        def _own_output(j: int, d: OperatorDef = d, ws: dict[str, torch.Tensor] = ws,
                        own: list[torch.Tensor] = own) -> torch.Tensor:
            # the gradient op's own outputs (at u = 0), computed once, only if something needs them
            if not own:
                own.extend(call_op(d.type, [ws[_in_blob(i)] for i in range(len(d.inputs))], d.args))
            return own[j]

        if {_out_blob(j) for j in range(len(d.outputs))} & {b for e in dd for b in e.inputs}:
            ws.update({_out_blob(j): _own_output(j) for j in range(len(d.outputs))})
        for j, blob in enumerate(d.outputs):
            k = gi.get(blob)
            t = tangents[k] if k is not None else None
            if t is None:
                # no tangent on that input, or an output that is not a gradient of the op at all (a
                # scratch blob): its incoming gradient in <J^T u, t> is zero
                t = torch.zeros_like(values[_in_blob(k)] if k is not None else _own_output(j))
            ws[registry.grad_name(_out_blob(j))] = t
        _run_defs(dd, ws)
        for j, k in reads_go:
            contribution = ws.get(registry.grad_name(_in_blob(j)))
            if contribution is not None:
                out[k] = contribution if out[k] is None else out[k] + contribution
    return out


def _redispatch_below_autograd(overload: torch._ops.OpOverload, meta: _Meta, args: Sequence[Any]) -> Any:
    """The op's kernel below autograd (the body of every function's ``forward``)."""
    if torch._C._are_functorch_transforms_active():
        # autograd.Function runs forward with gradients off, but below this level's autograd sit the
        # lower transform levels (grad of grad, jvp of grad), whose autograd must record; functorch's own
        # generated functions turn both modes back on the same way
        with torch.enable_grad(), fwAD._set_fwd_grad_enabled(True), torch._C._AutoDispatchBelowAutograd():
            return overload.redispatch(meta.keyset & torch._C._after_autograd_keyset, *args, **meta.kwargs)
    with torch._C._AutoDispatchBelowAutograd():
        return overload.redispatch(meta.keyset & torch._C._after_autograd_keyset, *args, **meta.kwargs)


def _apply(function: type[torch.autograd.Function], *args: Any) -> Any:
    """``function.apply`` at the current autograd level.

    ``autograd.Function.apply`` under a torch.func transform goes to functorch's
    ``custom_function_call``, which must be dispatched from the transform's front key; inside an op's
    Autograd kernel that key is already consumed (torch's own ``register_autograd`` fails there). This
    kernel *is* the op's autograd at the transform's level, as a built-in op's derivative formula is, so
    it applies the function with the C++ machinery directly, on the level's wrapped tensors.
    """
    apply = super(torch.autograd.Function, function).apply  # type: ignore[misc]
    if not torch._C._are_functorch_transforms_active():
        return apply(*args)
    with enable_single_level_autograd_function():
        return apply(*args)


def _refuse_forward_over_forward(name: str) -> None:
    """torch runs an autograd.Function's jvp with forward mode off, so a jvp nested in another torch.func
    jvp (jacfwd of jacfwd) would lose the outer tangent and give zeros; raise instead."""
    if not torch._C._are_functorch_transforms_active():
        return
    levels = torch._C._functorch.get_interpreter_stack() or []
    if sum(1 for i in levels if i.key() == torch._C._functorch.TransformType.Jvp) > 1:
        msg = (f"forward mode over forward mode (e.g. jacfwd(jacfwd(f))) through pairloss operator {name} is not "
               f"supported: torch evaluates a custom jvp with forward mode off. Use jacfwd(jacrev(f)) "
               f"(torch.func.hessian) or jacrev(jacrev(f)) instead")
        raise NotImplementedError(msg)


def _autograd_kernel(overload: torch._ops.OpOverload, function: type[torch.autograd.Function],
                     fused: type[torch.autograd.Function] | None = None) -> Callable[..., Any]:
    def kernel(keyset: Any, *args: Any, **kwargs: Any) -> Any:
        if (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)) or _forward_ad_active():
            if fused is not None and _fused_applies(args):
                return fused.apply(*args, _Meta(keyset, kwargs))
            return _apply(function, *args, _Meta(keyset, kwargs))
        with torch._C._AutoDispatchBelowAutograd():
            return overload.redispatch(keyset & torch._C._after_autograd_keyset, *args, **kwargs)

    return kernel


# --------------------------------------------------------------------------------------------------------
# vmap: one generic rule, a loop over the batch
# --------------------------------------------------------------------------------------------------------
def _make_vmap_rule(s: OpSchema, overload: torch._ops.OpOverload, tensor_args: bool) -> Callable[..., Any]:
    n_outputs = len(s.outputs)

    def rule(info: Any, in_dims: tuple[int | None, ...], *args: Any, **kwargs: Any) -> Any:
        batch = info.batch_size
        if batch == 0:
            # no entry to run: the output shapes come from the shape function of one (empty) entry
            entry = [a if d is None else a.new_empty(a.shape[:d] + a.shape[d + 1:])
                     for a, d in zip(args, in_dims, strict=True)]
            inputs, named = _split_call(s, tensor_args, entry, kwargs)
            given = _trim(inputs, s)
            specs = _output_specs(s, given, _shape_args(s, named))
            outs = [given[0].new_empty((0, *shape), dtype=dtype) for shape, dtype in specs]
        else:
            per_entry = []
            for b in range(batch):
                sliced = [a.select(d, b) if d is not None else a for a, d in zip(args, in_dims, strict=True)]
                result = overload(*sliced, **kwargs)
                per_entry.append(list(result) if n_outputs > 1 else [result])
            outs = [torch.stack([r[k] for r in per_entry]) for k in range(n_outputs)]
        if n_outputs == 1:
            return outs[0], 0
        return tuple(outs), tuple(0 for _ in outs)

    return rule


# --------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------
def _already_defined(op_name: str, overload: str = "default") -> bool:
    try:
        packet = getattr(getattr(torch.ops, NAMESPACE), op_name)
        getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return False
    return True


def _register_overload(s: OpSchema, op_name: str, *, tensor_args: bool) -> None:
    overload_name = TENSOR_ARGS if tensor_args else "default"
    if _already_defined(op_name, overload_name):  # a re-import of this module finds the ops already defined
        return
    suffix = f".{TENSOR_ARGS}" if tensor_args else ""
    _LIB.define(op_name + suffix + _schema_string(s, tensor_args=tensor_args))
    qualname = f"{NAMESPACE}::{op_name}{suffix}"
    cpu, cuda, fake = _make_kernels(s, tensor_args)
    torch.library.register_kernel(qualname, "cpu", cpu, lib=_LIB)
    torch.library.register_kernel(qualname, "cuda", cuda, lib=_LIB)
    torch.library.register_fake(qualname, fake, lib=_LIB)
    overload = getattr(getattr(getattr(torch.ops, NAMESPACE), op_name), overload_name)
    function = _make_function(s, overload, tensor_args)
    fused = None if tensor_args else _make_fused_function(s, op_name)
    _LIB.impl(op_name + suffix, _autograd_kernel(overload, function, fused), "Autograd", with_keyset=True)
    torch.library.register_vmap(qualname, _make_vmap_rule(s, overload, tensor_args), lib=_LIB)


def _register_one(s: OpSchema) -> None:
    op_name = snake_case(s.name)
    _register_overload(s, op_name, tensor_args=False)
    if _float_args(s):
        _register_overload(s, op_name, tensor_args=True)
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


def torch_op(name: str, *, inplace: bool = False, tensor_args: bool = False) -> torch._ops.OpOverload:
    """The ``torch.ops.pairloss`` OpOverload of registry operator ``name``: its in-place variant with
    ``inplace=True``, its ``tensor_args`` overload (float arguments as 0-d tensors) with
    ``tensor_args=True``; an operator registered after import is bridged on first use.

    Raises:
        ValueError: ``name`` is not a registry operator, or has no such variant.

    Examples:
        >>> print(torch_op("Negative", inplace=True))
        pairloss.negative_.default
    """
    if name not in _REGISTERED:
        registry.schema(name)  # unknown names raise, listing the known ones
        register_all()
    packet = getattr(getattr(torch.ops, NAMESPACE), _REGISTERED[name])
    if inplace:
        if name not in _INPLACE:
            msg = f"{name} has no in-place variant: its schema does not allow input 0 to be written by output 0"
            raise ValueError(msg)
        return getattr(getattr(torch.ops, NAMESPACE), _INPLACE[name]).default
    if tensor_args:
        if not _float_args(registry.schema(name)):
            msg = f"{name} has no {TENSOR_ARGS} overload: it has no float argument"
            raise ValueError(msg)
        return getattr(packet, TENSOR_ARGS)
    return packet.default


# --------------------------------------------------------------------------------------------------------
# Gradient scaling (not a registry op): identity forward, scale * grad backward
# --------------------------------------------------------------------------------------------------------
def _define_scale_gradient() -> torch._ops.OpOverload:
    name = "scale_gradient"
    packet_name = f"{NAMESPACE}::{name}"
    for overload_name, schema in (("default", "(Tensor x, float scale) -> Tensor"),
                                  (TENSOR_ARGS, "(Tensor x, Tensor scale) -> Tensor")):
        if _already_defined(name, overload_name):
            continue
        suffix = "" if overload_name == "default" else f".{overload_name}"
        _LIB.define(name + suffix + schema)
        qualname = packet_name + suffix

        def copy(x: torch.Tensor, scale: Any) -> torch.Tensor:
            return x.clone()

        torch.library.register_kernel(qualname, ("cpu", "cuda"), copy, lib=_LIB)
        torch.library.register_fake(qualname, lambda x, scale: torch.empty_like(x), lib=_LIB)
        overload = getattr(getattr(torch.ops, NAMESPACE).scale_gradient, overload_name)
        function = _scale_gradient_function(overload)
        _LIB.impl(name + suffix, _autograd_kernel(overload, function), "Autograd", with_keyset=True)
        torch.library.register_vmap(qualname, _scale_gradient_vmap(overload), lib=_LIB)
    return getattr(torch.ops, NAMESPACE).scale_gradient.default


def _scale_gradient_function(overload: torch._ops.OpOverload) -> type[torch.autograd.Function]:
    def forward(x: torch.Tensor, scale: Any, meta: _Meta) -> torch.Tensor:
        return _redispatch_below_autograd(overload, meta, (x, scale))

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.scale = inputs[1]

    def scaled(t: torch.Tensor, scale: Any) -> torch.Tensor:
        return t * (scale.to(t.dtype) if isinstance(scale, torch.Tensor) else scale)

    # the tangent is scaled like the gradient: the Jacobian the layer declares is scale * I, so jacfwd
    # and jacrev agree
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return scaled(grad, ctx.scale), None, None

    def jvp(ctx: Any, tangent: torch.Tensor, *_: Any) -> torch.Tensor:
        return scaled(tangent, ctx.scale)

    return type("PairlossFunction_scale_gradient", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward), "jvp": staticmethod(jvp)})


def _scale_gradient_vmap(overload: torch._ops.OpOverload) -> Callable[..., Any]:
    def rule(info: Any, in_dims: tuple[int | None, ...], x: torch.Tensor, scale: Any) -> Any:
        if in_dims[1] is not None:  # a batch of scales: the forward ignores them, the backward needs each
            outs = [overload(x if in_dims[0] is None else x.select(in_dims[0], b), scale.select(in_dims[1], b))
                    for b in range(info.batch_size)]
            return torch.stack(outs), 0
        return overload(x, scale), in_dims[0]  # elementwise: the batch dimension stays where it is

    return rule


#: Identity in the forward pass (an exact copy); the backward multiplies the gradient by ``scale``, and so
#: does forward mode. ``negate_gradient(x, scale)`` composes it with the ``NegateGradient`` op. A custom op
#: rather than an ``autograd.Function`` so that ``torch.compile`` sees an opaque, correctly differentiated node.
scale_gradient = _define_scale_gradient()

register_all()
