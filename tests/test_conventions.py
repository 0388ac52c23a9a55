"""Tests and benchmarks use fststyle's public API, tests share helpers through conftest.py only, and fststyle's
modules import one another one way."""

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


def test_fststyle_modules_import_one_way(repo: Path) -> None:
    """No import cycle among fststyle's modules, deferred imports inside functions included: a cycle means two
    modules that cannot be read, tested or moved apart (cli/arguments.py and cli/config.py were one)."""
    package = repo / "fststyle"
    modules = {".".join(p.relative_to(repo).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph = {name: {target for module, imported in imports(path)
                    for target in (module, f"{module}.{imported}") if target in modules and target != name}
             for name, path in modules.items()}
    cycles, finished = [], set()

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in finished:
                visit(target, [*trail, target])
        finished.add(name)

    for name in sorted(graph):
        if name not in finished:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles}"


#: fststyle's folders (and top-level modules) in the order of docs/design.md §Architecture: each imports only
#: its own row and the rows above it
LAYERS = [{"errors", "devices", "memory", "color", "artefacts"}, {"io"}, {"nets"}, {"losses"},
          {"model_header", "style_model", "bundled"}, {"stylize"}, {"optimize"}, {"compare"}, {"serve"}, {"training"}, {"cli"}]


def test_fststyle_folders_import_only_the_rows_above_them(repo: Path) -> None:
    rank = {name: row for row, names in enumerate(LAYERS) for name in names}
    package = repo / "fststyle"
    upward = []
    for path in package.rglob("*.py"):
        own = path.relative_to(package).parts[0].removesuffix(".py")
        if own in ("__init__", "__main__"):
            continue
        assert own in rank, f"{own} is in no row of LAYERS; add it there and to the table of docs/design.md §Architecture"
        for module, name in imports(path):
            parts = (f"{module}.{name}" if module == "fststyle" else module).split(".")
            if parts[0] == "fststyle" and len(parts) > 1 and rank.get(parts[1], -1) > rank[own]:
                upward.append(f"{path.relative_to(repo)} imports {'.'.join(parts)}")
    assert not upward, f"imports from a lower row of docs/design.md §Architecture: {upward}"
