"""No function over 80 lines in the product's code (shipyard/, services/, deploy.py): past that a
function does more than one thing, and a reader cannot hold it. Tests and benchmarks included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 80


def long_functions(paths: list[Path], limit: int = LIMIT) -> list[str]:
    """``file:line name (N lines)`` of each function longer than ``limit`` (decorators excluded)."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_80_lines():
    paths = sorted([*REPO.glob("shipyard/**/*.py"), *REPO.glob("services/**/*.py"), REPO / "deploy.py"])
    assert paths
    found = long_functions(paths)
    assert not found, "split these into functions that each do one thing:\n" + "\n".join(found)


def test_the_shape_check_counts_a_long_function(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def long():\n" + "    pass\n" * 80 + "\n\ndef short():\n    pass\n")
    assert long_functions([sample]) == [f"{sample}:1 long (81 lines)"]
    assert long_functions([sample], limit=81) == []
