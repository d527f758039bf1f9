"""examples/recommender.py runs and learns: the loss falls and liked items end up scored higher."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "recommender.py"


def test_recommender_example_learns(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("recommender_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(steps=120, log_every=40)
    assert result["losses"][-1] < 0.6 * result["losses"][0]
    assert result["accuracy"] > 0.8 > result["accuracies"][0]
    printed = capsys.readouterr().out
    assert "final held-out pair accuracy" in printed and printed.count("loss") == len(result["losses"])
