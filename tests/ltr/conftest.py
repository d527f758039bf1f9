"""Shared fixtures of the learning-to-rank tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# The sample data lives beside the repository (../shared from the repo root), never inside it, so the
# tests that read it skip rather than fail on a checkout without it.
SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def lightgbm_rank_dir() -> Path:
    """Directory of LightGBM's lambdarank example data (rank.train/.query, rank.test/.query)."""
    path = SHARED_DATA / "lightgbm_rank"
    needed = ["rank.train", "rank.train.query", "rank.test", "rank.test.query"]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        pytest.skip(f"sample data not available: {path} lacks {', '.join(missing)}")
    return path


@pytest.fixture(scope="session")
def mq2007_agg_dir() -> Path:
    """Directory of LETOR 4.0 MQ2007-agg's partitions S1.txt .. S5.txt."""
    path = SHARED_DATA / "letor_mq2007_agg"
    missing = [f"S{i}.txt" for i in range(1, 6) if not (path / f"S{i}.txt").is_file()]
    if missing:
        pytest.skip(f"sample data not available: {path} lacks {', '.join(missing)}")
    return path
