"""The package layers of docs/ARCHITECTURE.md, enforced: no module imports from a layer above its own.

Every import statement counts, those inside functions too; a layer may import itself and anything below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. `stream_ctr` itself is its package __init__ (re-exports for users), at the top.
LAYERS: list[set[str]] = [
    {"contracts", "process", "topics"},
    {"data", "models", "quality"},
    {"learning"},
    {"config"},
    {"trainer", "broker"},
    {"experiments"},
    {"serving", "monitoring"},
    {"agents"},
    {"service", "bench", "evaluate", "cli", ""},
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def source_files() -> dict[str, Path]:
    """Dotted module name -> file, for stream_ctr and the two folders installed inside it."""
    roots = {
        "stream_ctr": ROOT / "stream_ctr",
        "stream_ctr.agents": ROOT / "agents",
        "stream_ctr.topics": ROOT / "topics",
    }
    files = {}
    for prefix, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


def part_of(module: str) -> str:
    """The layer key of a dotted stream_ctr module: its first component below ``stream_ctr``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported(module: str, path: Path) -> set[str]:
    """The stream_ctr modules that ``module`` imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from stream_ctr import x`
    return {name for name in found if name.startswith("stream_ctr.") and part_of(name) in LAYER}


FILES = source_files()


def test_every_package_has_a_layer():
    assert {part_of(name) for name in FILES} <= set(LAYER)


@pytest.mark.parametrize("module", sorted(FILES))
def test_no_module_imports_upward(module):
    mine = LAYER[part_of(module)]
    upward = sorted(name for name in imported(module, FILES[module]) if LAYER[part_of(name)] > mine)
    assert not upward, f"{module} (layer {mine}) imports from a higher layer: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from stream_ctr.agents.app import build_app\n")
    assert "stream_ctr.agents.app" in imported("stream_ctr.learning.bad", path)
