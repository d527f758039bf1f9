"""The GPU check script's CPU half: every Triton kernel through Triton's interpreter, checked against torch.

On a CUDA machine `python benchmarks/gpu_check.py` runs the cuda-marked tests and the GPU benchmarks; here
the same code paths run on tiny inputs, so the script cannot rot between GPU runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton is not installed (pip install pairloss[gpu])")
def test_gpu_check_cpu_half_passes_under_the_interpreter() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    for kernel in ("Negative", "MarginRankingCriterion", "PairWiseLoss", "PairWiseHingeLoss", "LambdaRankLoss"):
        assert any(line.startswith(kernel) for line in lines), (kernel, done.stdout)
    assert "gpu_check: ok" in lines[-1]
