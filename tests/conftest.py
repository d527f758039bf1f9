"""Shared fixtures: hypothesis profiles, the device fixture (CUDA skips cleanly), the sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# "ci" is derandomised so a red CI run reproduces; "dev" explores more examples locally.
settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)], ids=["cpu", "cuda"])
def device(request: pytest.FixtureRequest) -> str:
    """Every device; the cuda case skips (not fails) where no CUDA device or Triton is present."""
    if request.param == "cuda":
        from pairloss._backends import cuda_available

        if not cuda_available():
            pytest.skip("no CUDA device")
    return request.param


@pytest.fixture(scope="session")
def lightgbm_rank_dir() -> Path:
    """../shared/data/lightgbm_rank, beside the checkout (CI has it); skipped where absent."""
    path = SHARED_DATA / "lightgbm_rank"
    if not (path / "rank.train").exists():
        pytest.skip(f"sample data not found at {path} (it lives in ../shared beside the checkout)")
    return path
