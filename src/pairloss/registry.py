r"""The operator registry, in Caffe2's terms.

The op modules (:mod:`pairloss.ops`) register themselves when imported, and importing any part of
``pairloss`` imports them (``pairloss/__init__.py``), so the registry is full whichever way it is reached,
without importing the layer above it.

An operator is declared once, by an :class:`OpSchema` (inputs, outputs, arguments with defaults and docs,
in-place rules, shape inference, ONNX mapping, doc). Kernels are registered per device
(:func:`register_cpu_operator`, :func:`register_cuda_operator`), and a gradient maker
(:func:`register_gradient`) says which gradient operators back the op, in the form of
:class:`OperatorDef` specs over named blobs, exactly as Caffe2's ``GradientMakerBase`` did.

:func:`run` is Caffe2's ``RunOperatorOnce``; :class:`Net` is a minimal net that can append the gradient
operators of its forward ops (``AddGradientOperators``) and run them.

Examples:
    >>> import numpy as np
    >>> from pairloss import registry
    >>> registry.schema("Negative").allows_inplace(0, 0)
    True
    >>> registry.run("Negative", np.array([1.0, -2.0]))
    [array([-1.,  2.])]
    >>> registry.get_gradient_defs("NegateGradient")
    [OperatorDef(type='Negative', inputs=('Y_grad',), outputs=('X_grad',), args={})]
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "GI",
    "GO",
    "Arg",
    "FusedForward",
    "FusedGradient",
    "I",
    "Input",
    "Net",
    "O",
    "OpSchema",
    "OperatorDef",
    "Output",
    "all_schemas",
    "devices",
    "fused_gradient",
    "get_gradient_defs",
    "gradient_op_names",
    "kernel",
    "op_inplace_pairs",
    "operator_schema",
    "operators",
    "reference",
    "register_cpu_operator",
    "register_cuda_operator",
    "register_fused_gradient",
    "register_gradient",
    "run",
    "schema",
]

DEVICES = ("cpu", "cuda")
_NO_DEFAULT: Any = inspect.Parameter.empty


# --------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Input:
    """One declared input of an operator."""

    index: int
    name: str
    doc: str
    optional: bool = False


@dataclass(frozen=True)
class Output:
    """One declared output of an operator."""

    index: int
    name: str
    doc: str


#: The values each declared argument type takes (coerced to that type); other types pass as given.
_ACCEPTED: dict[type, tuple[type, ...]] = {float: (int, float, np.integer, np.floating), int: (int, np.integer),
                                          bool: (bool, np.bool_)}


@dataclass(frozen=True)
class Arg:
    """One declared argument (Caffe2's ``.Arg``), with its type, default and doc."""

    name: str
    type: type
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT

    def coerce(self, op_type: str, value: Any) -> Any:
        """Convert ``value`` to the declared type, or raise naming the op and the argument."""
        accepted = _ACCEPTED.get(self.type)
        if accepted is None:
            return value
        is_bool = isinstance(value, bool | np.bool_)
        if not isinstance(value, accepted) or (is_bool and self.type is not bool):
            msg = f"{op_type}: argument {self.name!r} must be {self.type.__name__}; got {value!r}"
            raise TypeError(msg)
        converted = self.type(value)
        if self.type is float and not math.isfinite(converted):
            msg = f"{op_type}: argument {self.name!r} must be finite; got {value!r}"
            raise ValueError(msg)
        return converted


ShapeFunction = Callable[[Sequence[tuple[tuple[int, ...], np.dtype]], Mapping[str, Any]], list]


class OpSchema:
    """Declarative description of an operator, built fluently like Caffe2's ``OPERATOR_SCHEMA``.

    Every default lives here and only here: the NumPy functions, the torch bridge and the docs read it.
    """

    def __init__(self, name: str, *, defined_at: str) -> None:
        self.name = name
        self.defined_at = defined_at
        self.min_inputs = self.max_inputs = 1
        self.min_outputs = self.max_outputs = 1
        self._inputs: dict[int, Input] = {}
        self._outputs: dict[int, Output] = {}
        self._args: dict[str, Arg] = {}
        self.inplace: frozenset[tuple[int, int]] = frozenset()
        self.shape_function: ShapeFunction | None = None
        self.identical_type_and_shape_input: int | None = None
        self.onnx_schema: str | None = None
        self.onnx_export: Callable[..., Any] | str | None = None
        self.doc = ""
        self.is_gradient_op = False
        self.unimplemented_gradients: frozenset[int] = frozenset()

    # ---- builder ------------------------------------------------------------------------------------
    def num_inputs(self, low: int, high: int | None = None) -> OpSchema:
        self.min_inputs, self.max_inputs = low, low if high is None else high
        return self

    def num_outputs(self, low: int, high: int | None = None) -> OpSchema:
        self.min_outputs, self.max_outputs = low, low if high is None else high
        return self

    def input(self, index: int, name: str, doc: str, *, optional: bool = False) -> OpSchema:
        self._inputs[index] = Input(index, name, doc, optional)
        return self

    def output(self, index: int, name: str, doc: str) -> OpSchema:
        self._outputs[index] = Output(index, name, doc)
        return self

    def arg(self, name: str, type_: type, *, default: Any = _NO_DEFAULT, doc: str) -> OpSchema:
        if not doc:
            msg = f"{self.name}: argument {name!r} needs a doc"
            raise ValueError(msg)
        self._args[name] = Arg(name, type_, default, doc)
        return self

    def allow_inplace(self, pairs: Iterable[tuple[int, int]]) -> OpSchema:
        self.inplace = frozenset(pairs)
        return self

    def identical_type_and_shape(self, input_index: int = 0) -> OpSchema:
        """Output 0 has the dtype and shape of input ``input_index`` (Caffe2's IdenticalTypeAndShape)."""
        self.identical_type_and_shape_input = input_index
        self.shape_function = lambda specs, _args: [specs[input_index]]
        return self

    def tensor_inference_function(self, fn: ShapeFunction) -> OpSchema:
        self.shape_function = fn
        return self

    def inherit_onnx_schema(self, onnx_op: str) -> OpSchema:
        """The op is exported 1:1 as the standard ONNX operator ``onnx_op``."""
        self.onnx_schema = onnx_op
        return self

    def onnx_decomposition(self, builder: Callable[..., Any] | str) -> OpSchema:
        """The op is exported as standard ONNX operators built by ``builder(op, *inputs, **args)``.

        ``op`` is an onnxscript opset, the inputs come in schema order (``None`` for an absent optional
        one) and the args are resolved. A ``"module:function"`` string is imported only at export time
        (:mod:`pairloss.onnx`), so declaring a decomposition imports neither torch nor onnxscript.
        """
        self.onnx_export = builder
        return self

    def set_doc(self, doc: str | None) -> OpSchema:
        self.doc = inspect.cleandoc(doc or "")
        return self

    def gradient_not_implemented(self, *inputs: int) -> OpSchema:
        """Inputs whose gradient is real but not provided by the gradient maker (say, third derivatives).

        A gradient maker that leaves an input out says its gradient is zero (labels, piecewise-constant
        ops); one declared here says instead that it is not available, and a front end that is asked for
        it must raise rather than return zeros.
        """
        self.unimplemented_gradients = frozenset(inputs)
        return self

    def gradient_op(self) -> OpSchema:
        """Mark this schema as a gradient operator: it backs another op's gradient. It may register a
        gradient of its own (second derivatives: double backward, Hessian-vector products)."""
        self.is_gradient_op = True
        return self

    # ---- queries ------------------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Input, ...]:
        return tuple(self._inputs[i] for i in sorted(self._inputs))

    @property
    def outputs(self) -> tuple[Output, ...]:
        return tuple(self._outputs[i] for i in sorted(self._outputs))

    @property
    def args(self) -> tuple[Arg, ...]:
        return tuple(self._args.values())

    def get_arg(self, name: str) -> Arg:
        try:
            return self._args[name]
        except KeyError:
            known = ", ".join(self._args) or "none"
            msg = f"{self.name} has no argument {name!r}; its arguments: {known}"
            raise ValueError(msg) from None

    def allows_inplace(self, input_index: int, output_index: int) -> bool:
        return (input_index, output_index) in self.inplace

    def resolve_args(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check names, coerce types and fill defaults; unknown or missing arguments raise."""
        unknown = sorted(set(given) - set(self._args))
        if unknown:
            known = ", ".join(self._args) or "none"
            msg = f"{self.name} got unknown argument(s) {unknown}; its arguments: {known}"
            raise ValueError(msg)
        resolved: dict[str, Any] = {}
        for arg in self._args.values():
            if arg.name in given:
                resolved[arg.name] = arg.coerce(self.name, given[arg.name])
            elif arg.required:
                msg = f"{self.name} needs argument {arg.name!r} ({arg.doc})"
                raise ValueError(msg)
            else:
                resolved[arg.name] = arg.default
        return resolved

    def verify_counts(self, n_inputs: int, n_outputs: int | None = None) -> None:
        if not self.min_inputs <= n_inputs <= self.max_inputs:
            msg = f"{self.name} takes {self._range(self.min_inputs, self.max_inputs)} inputs; got {n_inputs}"
            raise ValueError(msg)
        if n_outputs is not None and not self.min_outputs <= n_outputs <= self.max_outputs:
            want = self._range(self.min_outputs, self.max_outputs)
            msg = f"{self.name} has {want} outputs; got {n_outputs}"
            raise ValueError(msg)

    def verify_blob_names(self, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        """Caffe2's schema verification: an output may share a name with an input only where allowed."""
        self.verify_counts(len(inputs), len(outputs))
        for o, out_name in enumerate(outputs):
            for i, in_name in enumerate(inputs):
                if out_name == in_name and not self.allows_inplace(i, o):
                    msg = (f"{self.name} does not allow input {i} ({in_name!r}) to be written in place "
                           f"by output {o}; allowed in-place pairs: {sorted(self.inplace) or 'none'}")
                    raise ValueError(msg)

    def infer_shapes(self, input_specs: Sequence[tuple[tuple[int, ...], np.dtype]],
                     args: Mapping[str, Any] | None = None) -> list | None:
        """Output (shape, dtype) pairs, or None where the op declares no shape inference (as Caffe2)."""
        if self.shape_function is None:
            return None
        return self.shape_function(list(input_specs), self.resolve_args(args or {}))

    @staticmethod
    def _range(low: int, high: int) -> str:
        return str(low) if low == high else f"{low} to {high}"

    def __repr__(self) -> str:
        return f"OpSchema({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def describe(self) -> str:
        """A full human-readable schema doc (what ``pairloss ops NAME`` prints)."""
        lines = [self.name, "=" * len(self.name), self.doc, "", "Inputs:"]
        lines += [f"  {i.index} {i.name}{' (optional)' if i.optional else ''}: {i.doc}" for i in self.inputs]
        lines += ["Outputs:"] + [f"  {o.index} {o.name}: {o.doc}" for o in self.outputs]
        if self._args:
            lines.append("Arguments:")
            for a in self.args:
                default = "required" if a.required else f"default {a.default!r}"
                lines.append(f"  {a.name} ({a.type.__name__}, {default}): {a.doc}")
        lines.append(f"In place: {sorted(self.inplace) or 'no'}")
        shape = (f"same as input {self.identical_type_and_shape_input}"
                 if self.identical_type_and_shape_input is not None
                 else "declared" if self.shape_function else "none")
        lines.append(f"Shape inference: {shape}")
        lines.append(f"ONNX: {onnx_mapping(self.name)}")
        lines.append(f"Devices: {', '.join(devices(self.name)) or 'none'}")
        if self.is_gradient_op:
            second = ", ".join(gradient_op_names(self.name)) or "none"
            lines.append(f"Gradient: (this is a gradient operator; its own gradient: {second})")
        else:
            lines.append(f"Gradient: {', '.join(gradient_op_names(self.name)) or 'none'}")
        lines.append(f"Defined at: {self.defined_at}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Gradient definitions: blob-name helpers and operator specs
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorDef:
    """One operator instance in a net: its type, input and output blob names and its arguments."""

    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))


@dataclass(frozen=True)
class _BlobRef:
    kind: str  # "I", "O", "GI", "GO"
    index: int


def I(index: int) -> _BlobRef:  # noqa: E743 - Caffe2's spelling
    """The forward op's input blob ``index``."""
    return _BlobRef("I", index)


def O(index: int) -> _BlobRef:  # noqa: E743 - Caffe2's spelling
    """The forward op's output blob ``index``."""
    return _BlobRef("O", index)


def GI(index: int) -> _BlobRef:
    """The gradient blob of the forward op's input ``index`` (``<name>_grad``)."""
    return _BlobRef("GI", index)


def GO(index: int) -> _BlobRef:
    """The gradient blob of the forward op's output ``index`` (``<name>_grad``)."""
    return _BlobRef("GO", index)


def grad_name(blob: str) -> str:
    return f"{blob}_grad"


def _resolve_ref(ref: _BlobRef | str, op: OperatorDef) -> str:
    if isinstance(ref, str):
        return ref
    names = op.inputs if ref.kind in ("I", "GI") else op.outputs
    if ref.index >= len(names):
        msg = f"gradient maker of {op.type} refers to {ref.kind}({ref.index}) but the op has {len(names)}"
        raise ValueError(msg)
    name = names[ref.index]
    return grad_name(name) if ref.kind in ("GI", "GO") else name


def gradient_def(op: OperatorDef, type_: str, inputs: Sequence[_BlobRef | str],
                 outputs: Sequence[_BlobRef | str], *, copy_args: bool = True) -> OperatorDef:
    """Caffe2's ``SingleGradientDef``: resolve I/O/GI/GO against ``op``; the forward args are copied."""
    return OperatorDef(type_, tuple(_resolve_ref(r, op) for r in inputs),
                       tuple(_resolve_ref(r, op) for r in outputs), dict(op.args) if copy_args else {})


GradientMaker = Callable[[OperatorDef], list[OperatorDef]]


# --------------------------------------------------------------------------------------------------------
# The registry tables
# --------------------------------------------------------------------------------------------------------
_SCHEMAS: dict[str, OpSchema] = {}
_KERNELS: dict[tuple[str, str], Callable[..., Any]] = {}
_REFERENCES: dict[str, Callable[..., Any]] = {}
_GRADIENTS: dict[str, GradientMaker] = {}
_FUSED: dict[str, FusedGradient] = {}


class FusedForward(NamedTuple):
    """What the forward kernel of a :class:`FusedGradient` returns."""

    output: np.ndarray
    """Y, the op's output."""
    saved: np.ndarray
    """A float64 array of X's shape from the same pass, from which the backward makes X_grad."""
    counted: np.ndarray | None = None
    """Which entries of Y an average over Y counts (bool, Y's shape), when the op defines it (a session loss:
    the sessions with a label-discordant pair, which its kernel counts anyway); None: every entry."""


@dataclass(frozen=True)
class FusedGradient:
    """CPU kernels that let an autograd front end keep the gradient from the forward pass.

    For an op with one output whose only differentiable input is X (input 0), ``forward(*inputs, **args)``
    returns a :class:`FusedForward`: the op's output and a float64 array of X's shape, computed in the same
    pass, and ``backward(saved, Y_grad, *inputs)`` returns X_grad for any Y_grad from it, without a second
    pass over the data. The gradient operators from the gradient maker stay the definition (and what
    double backward differentiates); these kernels must agree with them to rounding.
    """

    forward: Callable[..., FusedForward]
    backward: Callable[..., np.ndarray]


def _caller_location(depth: int = 2) -> str:
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def operator_schema(name: str) -> OpSchema:
    """Create and register the schema ``name`` (Caffe2's ``OPERATOR_SCHEMA``); a duplicate name raises."""
    where = _caller_location()
    if name in _SCHEMAS:
        msg = (f"Trying to register schema with name {name} from {where}, "
               f"but it is already registered from {_SCHEMAS[name].defined_at}")
        raise ValueError(msg)
    _SCHEMAS[name] = OpSchema(name, defined_at=where)
    return _SCHEMAS[name]


def _schema_of(op: OpSchema | str) -> OpSchema:
    return schema(op) if isinstance(op, str) else op


def register_cpu_operator(op: OpSchema | str, kernel_fn: Callable[..., Any], *,
                          reference: Callable[..., Any] | None = None) -> None:
    """Register the CPU kernel of ``op`` (NumPy arrays in and out) and, optionally, its float64 reference."""
    s = _schema_of(op)
    _KERNELS[(s.name, "cpu")] = kernel_fn
    if reference is not None:
        _REFERENCES[s.name] = reference


def register_cuda_operator(op: OpSchema | str, kernel_fn: Callable[..., Any] | None) -> None:
    """Register the CUDA kernel of ``op`` (torch CUDA tensors in and out). ``None`` registers nothing,
    so an op module can pass its kernel unconditionally and stay importable without Triton."""
    if kernel_fn is not None:
        _KERNELS[(_schema_of(op).name, "cuda")] = kernel_fn


def register_gradient(op: OpSchema | str, maker: GradientMaker) -> None:
    """Register the gradient maker of ``op``: a function from the forward OperatorDef to gradient ops."""
    _GRADIENTS[_schema_of(op).name] = maker


def register_fused_gradient(op: OpSchema | str, *, forward: Callable[..., FusedForward],
                            backward: Callable[..., np.ndarray]) -> None:
    """Register the :class:`FusedGradient` kernels of ``op`` (it must have a gradient maker too)."""
    s = _schema_of(op)
    if len(s.outputs) != 1:
        msg = f"{s.name}: a fused gradient needs an op with one output; it declares {len(s.outputs)}"
        raise ValueError(msg)
    _FUSED[s.name] = FusedGradient(forward, backward)


def fused_gradient(name: str) -> FusedGradient | None:
    """The :class:`FusedGradient` kernels of ``name``, or None when it has none."""
    schema(name)
    return _FUSED.get(name)


def schema(name: str) -> OpSchema:
    """The schema of operator ``name``; an unknown name raises a ValueError listing the known ones."""
    try:
        return _SCHEMAS[name]
    except KeyError:
        msg = f"unknown operator {name!r}; registered operators: {', '.join(sorted(_SCHEMAS))}"
        raise ValueError(msg) from None


def operators(*, include_gradients: bool = True) -> list[str]:
    """Names of all registered operators, sorted."""
    return sorted(n for n, s in _SCHEMAS.items() if include_gradients or not s.is_gradient_op)


def all_schemas(*, include_gradients: bool = True) -> list[OpSchema]:
    return [_SCHEMAS[n] for n in operators(include_gradients=include_gradients)]


def devices(name: str) -> tuple[str, ...]:
    """The devices that have a kernel for ``name`` in this process ('cuda' only where Triton is present)."""
    schema(name)
    return tuple(d for d in DEVICES if (name, d) in _KERNELS)


def kernel(name: str, device: str = "cpu") -> Callable[..., Any]:
    if device not in DEVICES:
        msg = f"device must be one of {DEVICES}; got {device!r}"
        raise ValueError(msg)
    schema(name)
    try:
        return _KERNELS[(name, device)]
    except KeyError:
        msg = f"{name} has no {device} kernel; it has: {', '.join(devices(name)) or 'none'}"
        raise ValueError(msg) from None


def reference(name: str) -> Callable[..., Any]:
    """The slow float64 reference implementation registered with the op's CPU kernel."""
    schema(name)
    try:
        return _REFERENCES[name]
    except KeyError:
        msg = f"{name} has no registered reference implementation"
        raise ValueError(msg) from None


def has_gradient(name: str) -> bool:
    schema(name)
    return name in _GRADIENTS


def get_gradient_defs(op: OperatorDef | str, *, inputs: Sequence[str] | None = None,
                      outputs: Sequence[str] | None = None, **args: Any) -> list[OperatorDef]:
    """The gradient operators that back ``op``, as Caffe2's gradient maker emits them.

    ``op`` is an :class:`OperatorDef`, or an operator name; with a name the blobs default to the names
    in the schema (every declared input, so optional inputs count as given).
    """
    if isinstance(op, str):
        s = schema(op)
        op = OperatorDef(op, tuple(inputs or (i.name for i in s.inputs)),
                         tuple(outputs or (o.name for o in s.outputs)), dict(args))
    s = schema(op.type)
    s.verify_counts(len(op.inputs), len(op.outputs))
    try:
        maker = _GRADIENTS[op.type]
    except KeyError:
        msg = f"{op.type} has no gradient registered"
        raise ValueError(msg) from None
    return maker(op)


def gradient_op_names(name: str) -> tuple[str, ...]:
    """The operator types the gradient of ``name`` uses (for listings)."""
    if not has_gradient(name):
        return ()
    return tuple(dict.fromkeys(d.type for d in get_gradient_defs(name)))


def onnx_mapping(name: str) -> str:
    s = schema(name)
    if s.onnx_schema:
        return s.onnx_schema
    if s.onnx_export is not None:
        return "decomposition"
    return "none"


# --------------------------------------------------------------------------------------------------------
# Running operators
# --------------------------------------------------------------------------------------------------------
def _as_input(value: Any, op_type: str, index: int, s: OpSchema) -> Any:
    if value is None:
        return None
    if type(value).__module__.startswith("torch"):
        return value
    if isinstance(value, np.ndarray):
        return value
    name = s._inputs[index].name if index in s._inputs else str(index)
    try:
        return np.asarray(value)
    except Exception as exc:
        msg = f"{op_type}: input {index} ({name}) must be array-like; got {type(value).__name__}"
        raise TypeError(msg) from exc


def run(op_type: str, *inputs: npt.ArrayLike | None, device: str = "cpu",
        outputs: Sequence[np.ndarray] | None = None, **args: Any) -> list[np.ndarray]:
    """Run one operator once, like Caffe2's ``RunOperatorOnce``; returns the list of its outputs.

    Args:
        op_type: A registered operator name, e.g. ``"PairWiseLoss"``.
        *inputs: The input arrays in schema order. A trailing ``None`` stands for an absent optional input.
        device: ``"cpu"`` (NumPy kernels) or ``"cuda"`` (the op's CUDA kernel; inputs are moved there).
        outputs: Optional preallocated output arrays. Passing an input array here runs the op in place,
            which the schema must allow (``allow_inplace``).
        **args: Operator arguments; unknown names raise, missing ones take the schema default.

    Raises:
        ValueError: unknown operator or argument, wrong number of inputs, or an in-place use the
            schema does not allow.
    """
    s = schema(op_type)
    given = list(inputs)
    while given and given[-1] is None:
        given.pop()
    s.verify_counts(len(given))
    resolved = s.resolve_args(args)
    arrays = [_as_input(v, op_type, i, s) for i, v in enumerate(given)]
    if outputs is not None:
        s.verify_counts(len(given), len(outputs))
        for o, out in enumerate(outputs):
            for i, inp in enumerate(arrays):
                if out is inp and not s.allows_inplace(i, o):
                    msg = f"{op_type} does not allow input {i} to be written in place by output {o}"
                    raise ValueError(msg)
    fn = kernel(op_type, device)
    if device == "cuda":
        import torch  # only the CUDA path needs torch

        moved = [None if a is None else torch.as_tensor(a).cuda() for a in arrays]
        results = fn(*moved, **resolved)
        results = [r.cpu().numpy() for r in (results if isinstance(results, tuple | list) else [results])]
    else:
        results = fn(*arrays, **resolved)
        results = list(results) if isinstance(results, tuple | list) else [results]
    if outputs is None:
        return results
    for out, result in zip(outputs, results, strict=True):
        if out.shape != result.shape:
            msg = f"{op_type}: output array has shape {out.shape}, the op produces {result.shape}"
            raise ValueError(msg)
        np.copyto(out, result, casting="same_kind")
    return list(outputs)


def op_inplace_pairs(op: OperatorDef) -> list[tuple[int, int]]:
    """(input, output) index pairs that ``op`` writes in place (the same blob name on both sides)."""
    return [(i, o) for i, name in enumerate(op.inputs) for o, out in enumerate(op.outputs) if name == out]


class Net:
    """A minimal Caffe2-style net: operator specs over named blobs, run against a workspace dict.

    Ops are added by name (``net.Negative(["X"], ["Y"])`` or :meth:`add_op`).
    :meth:`add_gradient_operators` appends the gradient ops given by each op's gradient maker,
    in reverse order, seeding each loss blob's gradient with ones (Caffe2's ConstantFill 1.0).
    Where several ops produce the gradient of one blob, the contributions are summed (Caffe2 renames
    them and adds a Sum op; the result is the same).

    Examples:
        >>> import numpy as np
        >>> net = Net()
        >>> _ = net.NegateGradient(["X"], ["Y"])
        >>> grad_map = net.add_gradient_operators(["Y"])
        >>> ws = net.run({"X": np.array([1.0, 2.0])})
        >>> ws["Y"], ws[grad_map["X"]]
        (array([1., 2.]), array([-1., -1.]))
    """

    def __init__(self, name: str = "net") -> None:
        self.name = name
        self.ops: list[OperatorDef] = []
        self._gradient_seeds: list[str] = []
        self._first_gradient_op: int | None = None
        # gradient op index -> gradient blobs it writes as a new version (see add_gradient_operators)
        self._new_versions: dict[int, set[str]] = {}

    def add_op(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> OperatorDef:
        s = schema(op_type)
        s.verify_blob_names(list(inputs), list(outputs))
        s.resolve_args(args)  # fail now, not at run time
        op = OperatorDef(op_type, tuple(inputs), tuple(outputs), dict(args))
        self.ops.append(op)
        return op

    def __getattr__(self, op_type: str) -> Callable[..., OperatorDef]:
        if op_type.startswith("_") or op_type not in operators():
            raise AttributeError(op_type)
        return lambda inputs, outputs, **args: self.add_op(op_type, inputs, outputs, **args)

    def add_gradient_operators(self, losses: Sequence[str]) -> dict[str, str]:
        """Append the backward pass for ``losses``; returns {blob: gradient blob} for every blob reached."""
        produced = {b for op in self.ops for b in op.outputs}
        for loss in losses:
            if loss not in produced:
                msg = f"{loss!r} is not produced by any op of net {self.name!r}"
                raise ValueError(msg)
        self._gradient_seeds = list(losses)
        have_grad = {grad_name(b) for b in losses}
        grad_map = {b: grad_name(b) for b in losses}
        self._first_gradient_op = len(self.ops)
        for op in reversed(self.ops[: self._first_gradient_op]):
            if not any(grad_name(o) in have_grad for o in op.outputs) or not has_gradient(op.type):
                continue
            # An op that writes an input in place (Caffe2's SSA) ends that blob's version: the gradient of
            # the version before it is new, not a contribution to the gradient of the version it wrote.
            rewritten = {grad_name(op.inputs[i]) for i, o in op_inplace_pairs(op)}
            started: set[str] = set()
            for gop in get_gradient_defs(op):
                missing = [b for b in gop.inputs if b.endswith("_grad") and b not in have_grad]
                if missing:  # an output of this op does not reach the loss: its gradient is zero
                    continue
                fresh = {b for b in gop.outputs if b in rewritten and b not in started}
                if fresh:
                    self._new_versions[len(self.ops)] = fresh
                    started |= fresh
                self.ops.append(gop)
                have_grad.update(gop.outputs)
            for name in op.inputs:
                if grad_name(name) in have_grad:
                    grad_map[name] = grad_name(name)
        return grad_map

    def run(self, feeds: Mapping[str, npt.ArrayLike], *, device: str = "cpu") -> dict[str, np.ndarray]:
        """Run every op in order on a copy of ``feeds``; returns the workspace (all blobs)."""
        ws: dict[str, Any] = {k: np.asarray(v) for k, v in feeds.items()}
        written_in_backward: set[str] = set()
        for index, op in enumerate(self.ops):
            if index == self._first_gradient_op:
                for loss in self._gradient_seeds:
                    ws[grad_name(loss)] = np.ones_like(ws[loss])
            missing = [b for b in op.inputs if b not in ws]
            if missing:
                msg = f"net {self.name!r}: op {index} ({op.type}) needs blobs {missing} that nothing produced"
                raise ValueError(msg)
            results = run(op.type, *(ws[b] for b in op.inputs), device=device, **op.args)
            backward = self._first_gradient_op is not None and index >= self._first_gradient_op
            fresh = self._new_versions.get(index, set())
            for name, value in zip(op.outputs, results, strict=True):
                if backward and name in written_in_backward and name not in fresh:
                    ws[name] = ws[name] + value  # a second path reaches this blob: gradients add
                else:
                    ws[name] = value
                if backward:
                    written_in_backward.add(name)
        return ws
