"""Tests and benchmarks use fststyle's public API, and tests share helpers through conftest.py only."""

from __future__ import annotations

import ast
from pathlib import Path


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from module import name`` in ``path``, and (module, "") per ``import module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def test_no_test_or_benchmark_imports_private_names_or_test_modules(repo: Path) -> None:
    sources = sorted((repo / "tests").glob("*.py")) + sorted((repo / "bench").glob("*.py"))
    private = [f"{p.name}: {module}.{name}" for p in sources for module, name in imports(p)
               if module.split(".")[0] == "fststyle" and (name.startswith("_") or "._" in module)]
    test_modules = [f"{p.name}: {module}" for p in sources for module, _ in imports(p)
                    if module.split(".")[0] in ("tests", "conftest") or module.split(".")[-1].startswith("test_")]
    assert not private, f"private fststyle names (make them public or test through the public API): {private}"
    assert not test_modules, f"tests importing test modules (share through tests/conftest.py fixtures): {test_modules}"
