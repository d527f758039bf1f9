"""Argument validation shared by :mod:`pairloss.nn.functional` and :mod:`pairloss.nn.modules`: every
message names the argument and says what was expected, before any kernel runs."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Reduction",
    "Scalar",
    "check_float",
    "check_real_labels",
    "check_reduction",
    "check_same_device",
    "check_scalar",
    "check_tensor",
    "host_view",
    "is_integer",
    "scalar_tensor",
    "value_checks_possible",
]

Reduction = Literal["none", "mean", "sum", "elementwise_mean"]
#: A margin or scale: a Python number, or a one-element tensor.
Scalar = float | Tensor
_REDUCTIONS = ("none", "mean", "sum", "elementwise_mean")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DEVICES = ("cpu", "cuda", "meta")


def check_reduction(reduction: object, *, warn: bool = True) -> str:
    """The reduction, with torch's deprecated alias ``"elementwise_mean"`` read as ``"mean"``."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        # torch's own wording (torch.nn._reduction.get_enum), so code matching it keeps working
        msg = f"{reduction} is not a valid value for reduction; expected one of 'none', 'mean', 'sum'"
        raise ValueError(msg)
    if reduction == "elementwise_mean":
        # torch warns on every call, as here; a warning would break a compiled graph, so none while tracing
        if warn and not torch.compiler.is_compiling():
            warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                          UserWarning, stacklevel=3)
        return "mean"
    return reduction


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        msg = f"{name} must be a torch.Tensor; got {type(value).__name__}"
        raise TypeError(msg)
    if value.layout != torch.strided or value.is_nested:
        layout = "nested" if value.is_nested else str(value.layout)
        msg = f"{name} must be a dense (strided) tensor; got a {layout} tensor (convert with {name}.to_dense())"
        raise TypeError(msg)
    if not value.is_cpu and value.device.type not in _DEVICES:  # is_cpu: a fifth of device.type's cost
        msg = f"{name} is on device {value.device}; pairloss operators run on cpu and cuda"
        raise ValueError(msg)
    return value


def check_float(name: str, value: object) -> Tensor:
    t = check_tensor(name, value)
    if t.dtype not in _FLOAT_DTYPES:
        msg = (f"{name} must be a float16, bfloat16, float32 or float64 tensor; got dtype={t.dtype} "
               f"(cast with {name}.float())")
        raise TypeError(msg)
    return t


def check_real_labels(name: str, value: object) -> Tensor:
    t = check_tensor(name, value)
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or is_integer(t.dtype)):
        msg = f"{name} must be an integer or floating-point tensor; got dtype={t.dtype}"
        raise TypeError(msg)
    if t.requires_grad and torch.is_grad_enabled():
        # a gradient for labels would be silently missing: say so instead
        msg = (f"{name} requires grad, but pairloss computes no gradient with respect to {name}; "
               f"pass {name}.detach()")
        raise ValueError(msg)
    return t


def is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def check_scalar(name: str, value: object) -> Scalar:
    """A finite real number, or a one-element real tensor without gradient (a margin or scale computed
    on the device, or one that changes between calls of a compiled function)."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dim() > 1 or value.is_complex() or value.dtype == torch.bool:
            msg = f"{name} must be a real number or a one-element real tensor; got shape {tuple(value.shape)}, " \
                  f"dtype={value.dtype}"
            raise ValueError(msg)
        if value.requires_grad and torch.is_grad_enabled():
            msg = (f"{name} requires grad, but pairloss computes no gradient with respect to {name}; "
                   f"pass {name}.detach()")
            raise ValueError(msg)
        return value.reshape(())
    if torch.compiler.is_dynamo_compiling():
        # a float input of a compiled function is symbolic here: its value is checked by the kernel
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a real number; got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"{name} must be finite; got {value!r}"
        raise ValueError(msg)
    return float(value)


def scalar_tensor(value: Scalar) -> Tensor | None:
    """``value`` as a 0-d float64 tensor for a ``tensor_args`` overload, or None for a plain float.

    Under dynamo every float takes the tensor path: a float input of the compiled function is a symbolic
    value, and a ``float`` op argument would specialise (recompile) on it. ``zeros + value`` is the form
    dynamo keeps symbolic (``torch.tensor(value)`` and ``torch.full`` specialise); it is exact.
    """
    if isinstance(value, Tensor):
        return value.to(torch.float64)
    if torch.compiler.is_dynamo_compiling():
        return torch.zeros((), dtype=torch.float64) + value
    return None


def check_same_device(**tensors: Tensor | None) -> None:
    if all(t is None or t.is_cpu for t in tensors.values()):
        return
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n}: {d}" for n, d in devices.items())
        msg = f"all tensors must be on one device; got {listing}"
        raise ValueError(msg)


def host_view(t: Tensor) -> np.ndarray | None:
    """A zero-copy NumPy view of a plain CPU tensor, for checks on its values; else None.

    Checks run in NumPy where they can: a torch elementwise op over many items opens an OpenMP parallel
    region, and on a loaded machine its spinning workers wait for descheduled peers (a comparison of 1e5
    lengths measured 32 ms there, against 0.3 ms with passive waiting). NumPy's checks use one thread.
    """
    if not value_checks_possible(t) or torch._C._functorch.is_functorch_wrapped_tensor(t):
        return None  # traced or transformed: the values are not here
    if not t.is_cpu or t.dtype == torch.bfloat16 or t.layout != torch.strided or t.is_conj() or t.is_neg():
        return None
    try:
        return (t.detach() if t.requires_grad else t).numpy()
    except (RuntimeError, TypeError):  # subclasses and fake tensors have no storage to share
        return None


def value_checks_possible(t: Tensor) -> bool:
    """Whether a tensor's values can be read here to raise a ValueError: not while a compiler traces
    (then an async assert checks them at run time) and not for vmap's batched tensors (a batched
    condition has no single truth value; the op then sees the labels as given)."""
    return not torch.compiler.is_compiling() and not torch._C._functorch.is_batchedtensor(t)
