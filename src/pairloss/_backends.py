"""The one place that probes optional imports (Triton, CUDA), so op modules only test flags."""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

__all__ = ["HAS_TRITON", "cuda_available", "tl", "triton"]

triton: Any = None
tl: Any = None
HAS_TRITON = False
if importlib.util.find_spec("triton") is not None:
    try:
        import triton
        import triton.language as tl

        HAS_TRITON = True
    except Exception:  # a broken Triton install must not break the CPU library
        HAS_TRITON = False


@cache
def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
