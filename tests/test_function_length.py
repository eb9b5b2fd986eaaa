"""No function of the package, the agents, the topics or the tests is over 60 lines (its ``def`` to its last line)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60


def long_functions(path: Path) -> list[str]:
    """``name (N lines)`` of each function in ``path`` over :data:`LIMIT` lines."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > LIMIT
    ]


def test_no_function_is_over_the_limit():
    found = {
        str(path.relative_to(ROOT)): hits
        for folder in ("stream_ctr", "agents", "topics", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (hits := long_functions(path))
    }
    assert not found, f"functions over {LIMIT} lines: {found}"


def test_the_check_counts_a_long_function(tmp_path):
    path = tmp_path / "long.py"
    path.write_text("def f():\n" + "    x = 1\n" * LIMIT)
    assert long_functions(path) == [f"f ({LIMIT + 1} lines)"]
