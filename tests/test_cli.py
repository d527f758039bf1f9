"""The command line, driven through Typer's CliRunner as a user would type it."""

from __future__ import annotations

from typer.testing import CliRunner

from pairloss import registry
from pairloss.cli import app

runner = CliRunner()


def test_ops_lists_every_operator_with_its_columns() -> None:
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0, result.output
    for column in ("operator", "devices", "gradient op", "in-place", "ONNX"):
        assert column in result.output
    for name in registry.operators():
        assert name in result.output
    row = next(line for line in result.output.splitlines() if "│ Negative " in line)
    assert "cpu" in row and "0->0" in row and "Neg" in row


def test_ops_name_prints_the_full_schema() -> None:
    result = runner.invoke(app, ["ops", "PairWiseLoss"])
    assert result.exit_code == 0, result.output
    assert "lengths (optional)" in result.output and "Gradient: PairWiseLossGradient" in result.output


def test_ops_unknown_name_is_a_clear_error() -> None:
    result = runner.invoke(app, ["ops", "Nope"])
    assert result.exit_code != 0
    assert "unknown operator 'Nope'" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "pairloss 0.1.0" in result.output
