"""The shape of the code (issue 10): short functions in ltr, imports pointing one way, no string imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pairloss"
LTR_AND_CLI = [*sorted((SRC / "ltr").glob("*.py")), SRC / "cli.py", SRC / "__main__.py"]
MAX_FUNCTION_LINES = 60
KNOWN_CYCLES: set[tuple[str, str]] = set()


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    lines = fn.end_lineno - fn.lineno + 1  # type: ignore[operator]
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return lines


def test_no_function_in_ltr_is_longer_than_60_lines() -> None:
    too_long = [f"{path.name}:{fn.lineno} {fn.name} ({_code_lines(fn)} lines)"
                for path in sorted((SRC / "ltr").glob("*.py")) for fn in _functions(path)
                if _code_lines(fn) > MAX_FUNCTION_LINES]
    assert not too_long, too_long


def test_no_import_cycle_in_pairloss() -> None:
    graph = grimp.build_graph("pairloss")  # imports inside functions included
    for importer, imported in KNOWN_CYCLES:
        graph.remove_import(importer=importer, imported=imported)
    cycles = sorted((module, imported) for module in graph.modules
                    for imported in graph.find_modules_directly_imported_by(module)
                    if graph.find_shortest_chain(importer=imported, imported=module) is not None)
    assert not cycles, cycles


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=SRC.parents[1], timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("path", LTR_AND_CLI, ids=lambda p: p.name)
def test_no_string_imports_and_no_private_names_across_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            assert name not in ("importlib.import_module", "__import__", "import_module"), f"{path.name}:{node.lineno}"
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            # `pairloss bench` must call pairloss._bench.run_benchmarks (owned by the benchmarks layer).
            if node.module == "pairloss._bench":
                continue
            assert not any(part.startswith("_") and part != "__future__" for part in node.module.split(".")), (
                f"{path.name}:{node.lineno} imports from the private module {node.module}")
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            assert not private, f"{path.name}:{node.lineno} imports private names {private} from {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not any(p.startswith("_") for p in alias.name.split(".")), f"{path.name}:{node.lineno}"
