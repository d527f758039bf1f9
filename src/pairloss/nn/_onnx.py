r"""ONNX translations of the pairloss torch ops, built from the operator registry, and their registration
with ``torch.onnx.export``.

Every registry operator whose schema declares an ONNX mapping gets a translation function:

* ``.inherit_onnx_schema("Neg")``: one standard node (``Negative`` → ``Neg``, ``NegateGradient`` →
  ``Identity``);
* ``.onnx_decomposition(builder)``: a graph built by ``builder(op, *inputs, **args)``, where ``op`` is an
  onnxscript opset; a ``"module:function"`` string (the registry's way, e.g. ``"pairloss.onnx:..."``) is
  imported only when a translation is built, so no module here imports the builders' module.

:func:`translation_table` is the exporter's ``custom_translation_table``; :func:`install_exporter_hook`
(called by ``import pairloss.nn``) puts the same translations into the exporter's own registry when
onnxscript's torchlib loads, so a plain ``torch.onnx.export(model, ...)`` works. Public entry points are in
:mod:`pairloss.onnx`; this module sits below it so that the torch front end can install the hook.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch

from pairloss import registry
from pairloss.nn import _torch_ops
from pairloss.registry import OpSchema

__all__ = ["install_exporter_hook", "onnx_builder", "register_with_exporter", "translation_table"]

Builder = Callable[..., Any]


# --------------------------------------------------------------------------------------------------------
# From the registry to the exporter's translation table
# --------------------------------------------------------------------------------------------------------
def _import_builder(ref: str, op_name: str) -> Builder:
    module_name, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        msg = f"{op_name}: its ONNX decomposition {ref!r} (\"module:function\") cannot be imported: {exc}"
        raise ImportError(msg) from exc


def onnx_builder(op: OpSchema | str) -> Builder | None:
    """The ONNX builder ``builder(opset, *inputs, **args)`` the schema of ``op`` declares, or None.

    ``inherit_onnx_schema("Neg")`` gives a builder of the one standard node (the schema's args become
    its attributes, absent trailing inputs are dropped); ``onnx_decomposition`` gives its builder.

    Examples:
        >>> onnx_builder("PairWiseLoss").__name__
        'pairwise_loss_decomposition'
        >>> onnx_builder("PairWiseLossGradient") is None
        True
    """
    s = registry.schema(op) if isinstance(op, str) else op
    if s.onnx_schema:
        onnx_op = s.onnx_schema

        def standard(opset: Any, *inputs: Any, **args: Any) -> Any:
            given = list(inputs)
            while given and given[-1] is None:
                given.pop()
            return getattr(opset, onnx_op)(*given, **args)

        standard.__name__ = f"onnx_{onnx_op}"
        return standard
    if s.onnx_export is None:
        return None
    return _import_builder(s.onnx_export, s.name) if isinstance(s.onnx_export, str) else s.onnx_export


def _translation(s: OpSchema, overload: torch._ops.OpOverload, builder: Builder, opset: Any) -> Callable[..., Any]:
    """An onnxscript (trace-only) function with the torch op's signature that calls ``builder``.

    The exporter binds the FX node's arguments by the torch schema's names and reads the parameter
    annotations: annotated Python types (the schema's args) become ONNX attributes, the rest inputs.
    """
    params, annotations, input_names, attr_names = [], {}, [], []
    arg_names = {a.name for a in s.args}
    for a in overload._schema.arguments:
        if a.kwarg_only:
            arg = s.get_arg(a.name)
            default = inspect.Parameter.empty if arg.required else arg.default
            params.append(inspect.Parameter(a.name, inspect.Parameter.KEYWORD_ONLY, default=default))
            annotations[a.name] = arg.type
            attr_names.append(a.name)
        elif a.name in arg_names:  # a float argument of a tensor_args overload: a graph input
            params.append(inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD))
            attr_names.append(a.name)
        else:
            # the schema's own default (None for an optional input of the default overload; the
            # tensor_args overload has none, as positional tensors follow)
            optional = isinstance(a.type, torch.OptionalType) and a.has_default_value()
            params.append(inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            default=None if optional else inspect.Parameter.empty))
            input_names.append(a.name)
    signature = inspect.Signature(params)

    def translate(*args, **kwargs):  # unannotated: the signature and annotations are set below
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return builder(opset, *(bound.arguments[n] for n in input_names),
                       **{n: bound.arguments[n] for n in attr_names})

    translate.__signature__ = signature  # type: ignore[attr-defined]
    translate.__annotations__ = annotations
    translate.__name__ = translate.__qualname__ = overload._schema.name.split("::")[-1]
    translate.__doc__ = f"ONNX translation of pairloss operator {s.name} ({registry.onnx_mapping(s.name)})."
    return translate


def _identity(opset: Any, *, tensor_scale: bool = False) -> Callable[..., Any]:
    if tensor_scale:
        def scale_gradient(x, scale):  # both unannotated: inputs (the scale is unused: identity forward)
            return opset.Identity(x)
    else:
        def scale_gradient(x, scale: float):  # x unannotated: an input; scale: float: an attribute
            return opset.Identity(x)

    return scale_gradient


def translation_table(*, opset: Any = None) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``, built from the registry.

    Every registry operator whose schema declares an ONNX mapping (``inherit_onnx_schema`` or
    ``onnx_decomposition``) maps its ``torch.ops.pairloss.<op>.default`` (and its ``tensor_args``
    overload, whose float arguments are graph inputs) to a function that builds that mapping; operators
    without one (the gradient operators) are left out. The bridge's ``pairloss::scale_gradient`` (the
    scale of ``negate_gradient(x, scale)``, identity forward) maps to ``Identity``.

    Args:
        opset: The onnxscript opset the builders use; default ``onnxscript.opset18`` (the exporter's
            own; nodes take the model's opset version).
    """
    import onnxscript

    opset = onnxscript.opset18 if opset is None else opset
    _torch_ops.register_all()
    table: dict[Any, Callable[..., Any]] = {}
    for s in registry.all_schemas():
        builder = onnx_builder(s)
        if builder is not None:
            overloads = [_torch_ops.torch_op(s.name)]
            if any(a.type is float for a in s.args):
                overloads.append(_torch_ops.torch_op(s.name, tensor_args=True))
            for overload in overloads:
                table[overload] = _translation(s, overload, builder, opset)
    packet = getattr(torch.ops, _torch_ops.NAMESPACE).scale_gradient
    table[packet.default] = _identity(opset)
    table[getattr(packet, _torch_ops.TENSOR_ARGS)] = _identity(opset, tensor_scale=True)
    return table


# --------------------------------------------------------------------------------------------------------
# Plain torch.onnx.export: the translations in the exporter's own registry
# --------------------------------------------------------------------------------------------------------
# torch.onnx.export builds its registry from onnxscript's torchlib registry, right after importing
# this module (onnxscript.function_libs.torch_lib.ops registers the aten translations on import)
_TORCHLIB_OPS = "onnxscript.function_libs.torch_lib.ops"
_REGISTERED_WITH_EXPORTER: set[str] = set()


def register_with_exporter() -> list[str]:
    """Put the registry's ONNX translations (:func:`translation_table`) into the exporter's own registry
    (onnxscript's torchlib registry, which ``torch.onnx.export`` reads), so a plain
    ``torch.onnx.export(model, ...)`` of a model holding pairloss modules needs no custom table.

    ``import pairloss.nn`` arranges for this to run when the exporter loads (see
    :func:`install_exporter_hook`); calling it again registers only operators added since. Returns the
    qualified names registered.
    """
    import onnxscript
    from onnxscript.function_libs.torch_lib import registration

    added = []
    for overload, fn in translation_table().items():
        name = overload.name()
        if name in _REGISTERED_WITH_EXPORTER:
            continue
        traced = _torchlib_translation_class()(onnxscript.values.Opset("pkg.pairloss", 1), fn)
        registration.default_registry.register(traced, name)
        _REGISTERED_WITH_EXPORTER.add(name)
        added.append(name)
    return added


@functools.lru_cache(maxsize=1)
def _torchlib_translation_class() -> type:
    from onnxscript.values import TracedOnnxFunction

    class TorchlibTranslation(TracedOnnxFunction):
        """A trace-only translation as the exporter lists torchlib's: it reads ``function_ir.domain``,
        which ``TracedOnnxFunction`` would compute by parsing the function's source (these functions are
        built from the schema, with a synthesised signature, so there is no source to parse)."""

        @property
        def function_ir(self) -> Any:
            import types

            return types.SimpleNamespace(domain=self.opset.domain, name=self.name)

    return TorchlibTranslation


class _AfterImportFinder:
    """A ``sys.meta_path`` finder that runs ``callback`` once module ``name`` has been executed.

    A post-import hook: importing onnxscript costs about a second, so ``import pairloss.nn`` must not
    do it, yet the translations have to be in onnxscript's registry before the exporter reads it.
    """

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback, self._finding = name, callback, False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name or self._finding:
            return None
        self._finding = True  # the other finders find the real spec
        try:
            import importlib.util

            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _CallbackLoader(spec.loader, self)
        return spec

    def done(self) -> None:
        import sys

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            self.callback()
        except Exception as exc:  # a failed registration must not break the user's import of onnxscript
            warnings.warn(f"pairloss: registering the ONNX translations of its operators failed ({exc}); "
                          f"use pairloss.onnx.export", RuntimeWarning, stacklevel=2)


class _CallbackLoader:
    def __init__(self, loader: Any, finder: _AfterImportFinder) -> None:
        self._loader, self._finder = loader, finder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._finder.done()


def install_exporter_hook() -> None:
    """Register the translations with the exporter now if onnxscript's torchlib is loaded, else as soon
    as it is (:func:`register_with_exporter`). Called by ``import pairloss.nn``; idempotent."""
    import sys

    if _TORCHLIB_OPS in sys.modules:
        register_with_exporter()
        return
    if not any(isinstance(f, _AfterImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImportFinder(_TORCHLIB_OPS, register_with_exporter))
